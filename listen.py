#!/usr/bin/env python3
"""mako-zero's ear on the chat: takes the operator's Telegram messages and button presses (§20).

Run by supervisor.py in every idle gap as `listen.py --until <epoch>` when `telegram.inbound` is on; by
hand, `--once` takes what is waiting and exits, and with neither option it runs until Ctrl-C or SIGTERM.
It long-polls getUpdates in `telegram.chat_id` and acts only on what an allowed user
(`telegram.inbound.allowed_user_ids`) sent: commands (approve/reject/done, pause/resume, status, help) are
answered in the thread they came from, a press on an approvals post's button decides that item, and any
other text is appended to `state/INBOX.md` for the next tick. Everything else is ignored and counted.
It keeps its place in `state/.mako/telegram_offset`, so nothing is taken twice or lost across restarts.

Exit codes: 0 ok (also after SIGTERM), 1 Telegram refused the token or inbound is off, 2 bad usage,
75 another listen.py is running, 78 bad config.
"""

import sys

from mako.cli import Parser, load_or_report
from mako.errors import EXIT_BUSY, EXIT_CONFIG, EXIT_FAIL
from mako.fileio import FileLock
from mako.inbound import off_reason
from mako.listener import LOCK_FILE, Listener, install_stop
from mako.logs import setup_logging
from mako.paths import ensure_layout


def main(argv=None):
    parser = Parser(description="Take the operator's Telegram messages and button presses (long polling).")
    when = parser.add_mutually_exclusive_group()
    when.add_argument("--until", type=float, metavar="EPOCH",
                      help="poll until this Unix time (the supervisor passes the next job's due time)")
    when.add_argument("--once", action="store_true", help="take what is waiting now and exit")
    args = parser.parse_args(argv)
    setup_logging()
    cfg = load_or_report(args.config, "listen")
    if cfg is None:
        return EXIT_CONFIG
    reason = off_reason(cfg)
    if reason:
        print(f"listen: Telegram inbound is off: {reason}", file=sys.stderr, flush=True)
        return EXIT_FAIL
    stop = install_stop()
    ensure_layout(cfg)
    # One listener at a time: two would both be handed the same unconfirmed updates.
    with FileLock(cfg.paths.private / LOCK_FILE) as lock:
        if not lock.acquire():
            print("listen: another listen.py is running (the supervisor runs one in every idle gap)",
                  file=sys.stderr, flush=True)
            return EXIT_BUSY
        return Listener(cfg, stop).run(until=args.until, once=args.once)


if __name__ == "__main__":
    sys.exit(main())
