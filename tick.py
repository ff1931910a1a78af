#!/usr/bin/env python3
"""mako-zero worker tick: one LLM call, validated, applied, recorded.

Run by supervisor.py every `supervisor.tick_interval_s` seconds (end to start), or by hand. Reads the state
files, the operator's INBOX and the notes the model asked for; writes STATE/NEXT/PERSONA and the files the
reply names (allowlisted), runs the safe actions, queues the gated ones, and records the tick in
LAST_RESULTS.md, JOURNAL.md, logs/metrics.csv, logs/ticks/NNNNNNNN.json and a Telegram post.

`--check` only checks the config (mako/check.py) and runs nothing.

Exit codes: 0 ok, 1 failed tick (recorded), 2 bad usage, 75 another tick is running, 78 bad config.
"""

import sys

from mako.check import run_check
from mako.cli import Parser, load_or_report, stdout_closed
from mako.errors import EXIT_CONFIG, EXIT_FAIL
from mako.logs import setup_logging
from mako.request import dry_run
from mako.worker import Tick


def main(argv=None):
    parser = Parser(description="Run one mako-zero worker tick.")
    parser.add_argument("--mode", choices=("normal", "compact"),
                        help="force a mode (default: compact when state/compact_pending.flag exists)")
    parser.add_argument("--dry-run", action="store_true",
                        help="print the request this tick would send, with token estimates; change nothing")
    parser.add_argument("--check", action="store_true",
                        help="check the config: print errors (exit 78) and warnings (exit 0), run nothing")
    args = parser.parse_args(argv)
    if args.check:
        return run_check(args.config)
    setup_logging()
    cfg = load_or_report(args.config, "tick")
    if cfg is None:
        return EXIT_CONFIG
    try:
        return dry_run(cfg, args.mode) if args.dry_run else Tick(cfg, args.mode).run()
    except BrokenPipeError:
        return stdout_closed()
    except OSError as e:
        # Before the tick could record itself (the root is a file, read-only, not ours): say so in one line.
        where = f" ({e.filename})" if e.filename and str(e.filename) != str(cfg.paths.root) else ""
        print(f"tick: cannot use the root {cfg.paths.root}: {e.strerror or e}{where}", file=sys.stderr, flush=True)
        return EXIT_FAIL


if __name__ == "__main__":
    sys.exit(main())
