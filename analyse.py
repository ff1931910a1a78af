#!/usr/bin/env python3
"""Soak report: a text summary of logs/metrics.csv, printed on standard output.

Run by hand after a soak (`python3 analyse.py --config PATH [--metrics PATH]`); it reads the metrics file
(default `<logs>/metrics.csv`, or any copy such as a renamed-aside `.old.csv`) and writes nothing.

It reports the span and the tick rate against `supervisor.tick_interval_s`, outcomes and parse failures,
modes, providers and models, the distributions of wall time, input tokens and output characters (mean,
p50, p95, p99, max — nearest-rank percentiles, see mako/stats.py — each with a text histogram), action
totals, drift and compaction flags, the approvals (open now and the oldest one's age, decided within the span,
from their index, never the whole queue), the last failures with their reason (the last line of each
one's logs/error-N.log, read from its end), and provider health (mako/health.py).

Exit codes: 0 report printed (also for a file with no rows: it says "no rows"); 1 no metrics file, or it
could not be read; 2 bad usage; 78 bad config.
"""

import sys
import time
from pathlib import Path

from mako import decisions
from mako.cli import Parser, load_or_report, stdout_closed
from mako.errors import EXIT_CONFIG, EXIT_FAIL, EXIT_OK
from mako.health import analyse_lines
from mako.logs import failure_reason
from mako.soak import report
from mako.stats import read_table


def approvals_lines(cfg, table):
    """Open approvals now (and the oldest one's age), and the decisions made within the metrics' span."""
    count, age, decided = decisions.figures(cfg, min(table.ts).timestamp(), max(table.ts).timestamp(),
                                            write=False, now=time.time())
    oldest = f", the oldest waiting {decisions.age_text(age)}" if age is not None else ""
    return ["", "Approvals", f"  open now: {count:,}{oldest}", f"  decided within the span: {decided:,}"]


def main(argv=None):
    parser = Parser("Print a soak report of metrics.csv (span, rate, outcomes, distributions, failures).")
    parser.add_argument("--metrics", metavar="PATH", default=None,
                        help="metrics file to read (default: metrics.csv in the configured logs folder)")
    args = parser.parse_args(argv)
    cfg = load_or_report(args.config, "analyse")
    if cfg is None:
        return EXIT_CONFIG
    path = Path(args.metrics) if args.metrics else cfg.paths.logs / "metrics.csv"
    try:
        table = read_table(path)
    except FileNotFoundError:
        print(f"analyse: no metrics file at {path}", file=sys.stderr, flush=True)
        return EXIT_FAIL
    except OSError as e:
        print(f"analyse: cannot read {path}: {e.strerror or e}", file=sys.stderr, flush=True)
        return EXIT_FAIL
    if not len(table):
        skipped = f" ({table.skipped} unreadable rows skipped)" if table.skipped else ""
        print(f"analyse: no rows in {path}{skipped}", flush=True)
        return EXIT_OK
    try:
        # A failed tick's reason is in its error-N.log, beside the metrics file it was counted in.
        sys.stdout.write(report(table, path, cfg.supervisor.tick_interval_s,
                                reason=lambda n: failure_reason(path.parent, n),
                                extra=analyse_lines(cfg, table) + approvals_lines(cfg, table)))
        sys.stdout.flush()
    except BrokenPipeError:
        return stdout_closed()
    return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
