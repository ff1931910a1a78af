#!/usr/bin/env python3
"""Daily digest: one summary of the last `digest.hours_window` hours, sent now, whatever the hour.

The supervisor runs it once per local date at `supervisor.digest_hour_local`; an operator may run it by
hand (`python3 digest.py --config PATH`, or `--print` to see the text without sending it). It reads
the tail of logs/metrics.csv, the approvals (through their index), state/STATE.md and state/JOURNAL.md.
The text goes to the Telegram digest thread (else the log thread); with Telegram off it is printed on
standard output instead. The one thing it writes: the moment Telegram accepted the digest, the local date
in state/.mako/digest_sent, so the supervisor does not send another that day.

Exit codes: 0 sent (or printed), 1 the send failed or the digest could not be built, 2 bad usage,
78 bad config.
"""

import logging
import sys
import traceback

from mako.cli import Parser, load_or_report, stdout_closed
from mako.digest import build_digest, send_digest
from mako.errors import EXIT_CONFIG, EXIT_FAIL, EXIT_OK
from mako.logs import setup_logging
from mako.redact import Redactor

log = logging.getLogger("mako.digest")


def main(argv=None):
    parser = Parser("Send one digest of the last hours of ticks now, whatever the hour.")
    parser.add_argument("--print", "--dry-run", dest="print_only", action="store_true",
                        help="print the digest on standard output instead of sending it")
    args = parser.parse_args(argv)
    setup_logging()
    cfg = load_or_report(args.config, "digest")
    if cfg is None:
        return EXIT_CONFIG
    redactor = Redactor(cfg.secrets())
    try:
        text = redactor.text(build_digest(cfg))
        if args.print_only or not cfg.telegram.enabled:
            if not args.print_only:
                log.info("telegram is off: digest printed, not sent")
            try:
                print(text, flush=True)
            except BrokenPipeError:
                return stdout_closed()
            return EXIT_OK
        if not send_digest(cfg, text):
            return EXIT_FAIL
        log.info("digest sent (%d chars)", len(text))
        return EXIT_OK
    except Exception as e:
        log.error("digest failed: %s", redactor.text(f"{type(e).__name__}: {e}"))
        sys.stderr.write(redactor.text(traceback.format_exc()))
        return EXIT_FAIL


if __name__ == "__main__":
    sys.exit(main())
