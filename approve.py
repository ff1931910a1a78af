#!/usr/bin/env python3
"""Decide the actions the agent queued for approval (§19), from the terminal.

    approve.py [list] [--all]          open items (with --all, decided ones too)
    approve.py show qN                 the whole record, the tick that queued it, its decisions
    approve.py yes qN [--note TEXT]    run it now, through the tick's own action code [--again] [--over-budget]
    approve.py no qN [--reason TEXT]   reject it; nothing runs
    approve.py done qN [--note TEXT]   you did it by hand; nothing runs

Reads pending/pending_actions.jsonl; appends to pending/decisions.jsonl; posts each decision to the
approvals thread. The agent reads the outcome in the APPROVALS block of its next tick. `yes` holds the tick
lock while the action runs (it waits up to 60 s for a running tick).

Exit codes: 0 ok, 1 refused or failed (unknown, decided, malformed or changed item; the action failed),
2 bad usage, 75 the tick lock stayed busy, 78 bad config.
"""

import json
import sqlite3
import sys
import time

from mako.approval_index import Index
from mako.approvals import action_sha256
from mako.cli import Parser, load_or_report
from mako.decisions import age_text, decide, find, parse_id
from mako.errors import EXIT_CONFIG, EXIT_FAIL, EXIT_OK
from mako.logs import setup_logging
from mako.redact import MARK, Redactor
from mako.text import terminal_safe

COMMANDS = ("list", "show", "yes", "no", "done")
DECISION = {"yes": "approved", "no": "rejected", "done": "done"}


def list_items(cfg, show_all, out):
    now = time.time()
    with Index(cfg) as index:
        rows = index.listing(include_decided=show_all)
        missing = index.missing
    for name, n in missing.items():
        print(f"warning: pending/{name} is missing or not a regular file (the index had read {n} lines "
              "from it); restore it",
              file=sys.stderr)
    if not rows:
        print("no open items" + ("" if show_all else " (approve.py list --all shows decided ones)"), file=out)
        return
    ages = {}
    lines = []
    for qid, queued_ts, kind, summary, sha, state, ok, _ in rows:
        age = int(now - queued_ts) if queued_ts else None
        if age not in ages:
            ages[age] = age_text(age) if age is not None else "?"
        line = f"{qid:<7} {ages[age]:>6}  {kind:<12} {summary}  {sha[:8]}"
        if state == "started":
            line += "  [started, no result: check, then yes --again, or done]"
        elif show_all:
            line += f"  [{state}{'' if state != 'approved' or ok is None else '(ok)' if ok else '(failed)'}]"
        lines.append(line)
    text = "\n".join(lines)
    # The records were scrubbed (token patterns too) when queued: only a secret configured since can show.
    for secret in Redactor(cfg.secrets()).secrets:
        text = text.replace(secret, MARK)
    out.write(text + "\n")


def show_item(cfg, qid, out):
    record, decisions = find(cfg, qid)
    if record is None:
        print(f"{qid}: no such item in pending/pending_actions.jsonl", file=sys.stderr)
        return EXIT_FAIL
    redactor = Redactor(cfg.secrets())
    stored = str(record.get("sha256"))
    now = action_sha256(record["action"]) if isinstance(record.get("action"), dict) else "(no action object)"
    check = "matches the record" if now == stored else f"CHANGED: the record now hashes to {now[:8]}"
    head = f"{qid} · {record.get('type')} · queued {record.get('queued_at')} by tick #{record.get('tick')}"
    print(terminal_safe(head), file=out)
    print(terminal_safe(f"sha256 {stored[:8]} ({check})"), file=out)
    print(terminal_safe(redactor.text(json.dumps(record, ensure_ascii=False, indent=2))), file=out)
    if not decisions:
        print(f"decision: none yet (open) — approve.py yes|no|done {qid}", file=out)
    for d in decisions:
        result = d.get("result")
        if d.get("status") == "started":
            what = "started"
        elif isinstance(result, dict):
            what = f"{'ok' if result.get('ok') else 'failed'}: {result.get('summary')}"
        else:
            what = d.get("note") or ""
        line = f"decision: {d.get('at')} {d.get('decision')} by {d.get('by')} · {what}"
        print(terminal_safe(redactor.text(line)), file=out)
        if isinstance(result, dict) and result.get("output"):
            print(terminal_safe(redactor.text("  " + str(result["output"]).replace("\n", "\n  "))), file=out)
    return EXIT_OK


def main(argv=None):
    parser = Parser("List and decide the actions waiting for your approval.",
                    epilog="exit codes: 0 ok, 1 refused or failed, 2 bad usage, 75 the tick lock stayed busy, "
                           "78 bad config")
    parser.add_argument("command", nargs="?", default="list", choices=COMMANDS, help="default: list")
    parser.add_argument("qid", nargs="?", help="the item id, like q7")
    parser.add_argument("--all", action="store_true", help="list: decided items too")
    parser.add_argument("--note", help="yes, done: a note kept with the decision")
    parser.add_argument("--reason", help="no: why (the agent reads it)")
    parser.add_argument("--again", action="store_true",
                        help="yes: run an item whose earlier run was stopped or failed")
    parser.add_argument("--over-budget", action="store_true",
                        help="yes: record a spend even past tick.budget_ceiling_pence_month")
    args = parser.parse_args(argv)
    cmd = args.command
    if cmd != "list" and args.qid is None:
        parser.error(f"{cmd} takes an item id, like: approve.py {cmd} q7")
    if cmd == "list" and args.qid is not None:
        parser.error("list takes no item id")
    if args.all and cmd != "list":
        parser.error("--all goes with list")
    if args.reason is not None and cmd != "no":
        parser.error("--reason goes with no (yes and done take --note)")
    if args.note is not None and cmd not in ("yes", "done"):
        parser.error("--note goes with yes or done (no takes --reason)")
    if (args.again or args.over_budget) and cmd != "yes":
        parser.error("--again and --over-budget go with yes")
    setup_logging()
    cfg = load_or_report(args.config, "approve")
    if cfg is None:
        return EXIT_CONFIG
    try:
        if cmd == "list":
            list_items(cfg, args.all, sys.stdout)
            return EXIT_OK
        qid = parse_id(args.qid)
        if qid is None:
            print(f"{args.qid!r} is not an item id (ids look like q7)", file=sys.stderr)
            return EXIT_FAIL
        if cmd == "show":
            return show_item(cfg, qid, sys.stdout)
    except (OSError, sqlite3.Error) as e:
        print(f"approve: cannot read the approvals: {e.__class__.__name__}: {e}", file=sys.stderr)
        return EXIT_FAIL
    try:
        outcome = decide(cfg, qid, DECISION[cmd], "cli", args.reason if cmd == "no" else args.note,
                         again=args.again, over_budget=args.over_budget)
    except KeyboardInterrupt:
        print(f"interrupted: if {qid} had started it shows as started with no result; approve.py show {qid}",
              file=sys.stderr)
        return 130
    print(outcome.message, file=sys.stdout if outcome.ok else sys.stderr, flush=True)
    return outcome.code


if __name__ == "__main__":
    sys.exit(main())
