#!/usr/bin/env python3
"""The agent at a glance: last tick, next runs, INBOX, approvals, providers, spend, digest, scribe, disk.

Run by the operator at any time (`python3 status.py --config PATH [--json]`); it reads only small files and
the tails of large ones (mako/status.py) and writes nothing, so it is safe beside a running supervisor.
Every line is printed even when its value is unknown. `--json` prints the same figures as one JSON object.

Exit codes: 0 healthy, 1 degraded (the primary provider failing, the last 3 ticks failed, or no tick for 3
tick intervals while not paused), 2 bad usage, 78 bad config.
"""

import json
import sys

from mako.cli import Parser, load_or_report
from mako.errors import EXIT_CONFIG, EXIT_FAIL, EXIT_OK
from mako.status import collect
from mako.status_screen import render


def main(argv=None):
    parser = Parser("Show whether mako-zero is healthy, what ran last and what is due next.")
    parser.add_argument("--json", action="store_true", help="print the figures as one JSON object")
    args = parser.parse_args(argv)
    cfg = load_or_report(args.config, "status")
    if cfg is None:
        return EXIT_CONFIG
    info = collect(cfg)
    if args.json:
        # ensure_ascii: every control or invisible character arrives escaped, whatever the terminal.
        sys.stdout.write(json.dumps(info, ensure_ascii=True, indent=1, sort_keys=True) + "\n")
    else:
        sys.stdout.write(render(info))
    sys.stdout.flush()
    return EXIT_OK if info["healthy"] else EXIT_FAIL


if __name__ == "__main__":
    sys.exit(main())
