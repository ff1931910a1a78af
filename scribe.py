#!/usr/bin/env python3
"""mako-zero scribe: drafts one blog post from what the worker has done, or says why not.

Run by supervisor.py every `supervisor.scribe_interval_s` seconds, or by hand. Reads MISSION, PERSONA, the
last `scribe.recent_journal_lines` journal lines, notes/INDEX.md, the three most recently changed notes
and the list of drafts already written; asks the same providers as the worker; then either creates
state/outbox/blog/drafts/<YYYY-MM-DD>-<slug>.md (never overwriting) and pings the approvals thread, or
posts its reason for skipping to the log thread. It runs no actions and leaves the worker's state alone.
Each run is recorded in logs/scribe/NNNNNNNN.json (and logs/scribe/error-N.log when it fails).

Exit codes: 0 drafted or skipped, 1 failed run (recorded), 2 bad usage, 78 bad config.
"""

import logging
import sys

from mako import scribe
from mako.cli import Parser, load_or_report
from mako.errors import EXIT_CONFIG, EXIT_FAIL
from mako.logs import setup_logging
from mako.redact import Redactor


def main(argv=None):
    parser = Parser(description="Run the mako-zero scribe once: draft a blog post or skip with a reason.")
    args = parser.parse_args(argv)
    setup_logging()
    cfg = load_or_report(args.config, "scribe")
    if cfg is None:
        return EXIT_CONFIG
    try:
        return scribe.run(cfg)
    except Exception as e:  # noqa: BLE001 — a run that could not even number itself still exits cleanly
        logging.getLogger("mako.scribe").error("scribe failed before it could record itself: %s",
                                          Redactor(cfg.secrets()).text(f"{type(e).__name__}: {e}"))
        return EXIT_FAIL


if __name__ == "__main__":
    sys.exit(main())
