"""Decisions on queued actions (§19): approve (and run), reject, or mark done by hand.

Every decision is a line appended to `pending/decisions.jsonl`; the queue file is never rewritten. An
approval is bound to the record as queued: its sha256 is recomputed and must equal the stored one (and,
from a Telegram button, the hash the post showed). It runs through the tick's own `run_action`, holding
the tick lock so a tick and an approval never run actions at the same time. A "started" line goes down
before the action runs and the result line after it, so a kill mid-run leaves "started, result unknown",
which only `--again` runs a second time. Checks and appends happen under one lock, so two concurrent
approvals of one id run it once. Both `approve.py` and the Telegram listener call `decide`.
"""

import json
import logging
import sqlite3
import time
from contextlib import contextmanager
from dataclasses import dataclass

from .approval_index import (DECISIONS_FILE, FINAL, Index, complete_lines, open_regular, parse_time, qnum,
                             read_line_at)
from .approvals import LOCK_WAIT_S, QUEUE_FILE, ApprovalQueue, action_sha256, append_record, waiting_lock
from .fileio import FileLock, atomic_write, displace, read_text
from .ledger import SpendLedger
from .logs import iso, iso_at
from .redact import Redactor
from .text import short, truncate

log = logging.getLogger(__name__)

ICONS = {"approved": "✅", "rejected": "🚫", "done": "☑️"}
NOTE_MAX = 500
OUTPUT_MAX = 2000
OPEN_LISTED = 30
DECISIONS_LISTED = 30
RECENT_BYTES = 256 * 1024
SEEN_FILE = "approvals_seen.json"
RUN_GRACE_S = 30.0
RESULT_LOCK_WAIT_S = 60.0


class Busy(Exception):
    """The tick lock stayed held past the wait (approve.py exits 75)."""


@dataclass
class Outcome:
    ok: bool          # the decision was recorded (and, for an approval, the action succeeded)
    code: int         # approve.py's exit code: 0 ok, 1 refused or failed, 75 busy
    message: str      # one line for the operator: CLI output and the chat reply
    qid: str | None = None
    result: dict | None = None   # the executor's result for an approval


def parse_id(qid):
    """The canonical `q<N>` for a well-formed id, else None (`q`, `q-1`, `12`, `q1; rm -rf /`)."""
    n = qnum(qid)
    return f"q{n}" if n is not None else None


@contextmanager
def tick_lock(cfg, wait_s=60.0):
    """Hold the tick lock, waiting up to `wait_s` for a running tick (or approval) to let go; else Busy."""
    lock = FileLock(cfg.paths.private / "tick.lock")
    give_up = time.monotonic() + wait_s
    while not lock.acquire():
        if time.monotonic() >= give_up:
            raise Busy(f"the tick lock (state/.mako/tick.lock) stayed held for {wait_s:.0f}s: a tick or "
                       "another approval is running; try again")
        time.sleep(0.1)
    try:
        yield
    finally:
        lock.release()


# -- reading -----------------------------------------------------------------------------------------------

def _scan(path, qid):
    """The queue record for `qid` by reading the file: only when an edit moved the lines under the index."""
    needle = f'"{qid}"'.encode()
    try:
        lines, _ = complete_lines(path, 0)
    except FileNotFoundError:
        return None
    for _, raw in lines:
        if needle in raw:
            try:
                entry = json.loads(raw.decode("utf-8", "replace"))
            except ValueError:
                continue
            if isinstance(entry, dict) and entry.get("id") == qid:
                return entry
    return None


def _record(cfg, row):
    path = cfg.paths.pending / QUEUE_FILE
    entry = read_line_at(path, row["off"])
    if entry is None or entry.get("id") != row["qid"]:
        entry = _scan(path, row["qid"])
    return entry


def find(cfg, qid):
    """The queue record and its decision lines (oldest first); (None, []) for an unknown or malformed id."""
    qid = parse_id(qid)
    if qid is None:
        return None, []
    with Index(cfg) as index:
        row = index.item(qid)
        offsets = index.decision_offsets(qid)
    if row is None:
        return None, []
    path = cfg.paths.pending / DECISIONS_FILE
    lines = [line for line in (read_line_at(path, off) for off in offsets) if line and line.get("id") == qid]
    return _record(cfg, row), lines


def open_items(cfg):
    """Queue records still open, oldest first."""
    with Index(cfg) as index:
        rows = index.items()
    return [r for r in (_record(cfg, row) for row in rows) if r is not None]


def open_summary(cfg, write=True):
    """(open count, queued_at of the oldest open item)."""
    with Index(cfg, write) as index:
        return index.open_summary()


# -- deciding ----------------------------------------------------------------------------------------------

def _refusal(cfg, qid, decision, again, expect_sha8):
    """(problem or None, index row, record) for a decision about to be recorded; call under the lock."""
    with Index(cfg) as index:
        missing, row = index.missing, index.item(qid)
    if missing:
        name, lines = next(iter(missing.items()))
        fresh = ("reopens every decided item" if name == DECISIONS_FILE else "starts a new queue")
        return (f"pending/{name} is missing or not a regular file (the index had read {lines} lines from "
                f"it): restore it from a backup; nothing decided. (An empty file, made on purpose, {fresh}.)"), \
            row, None
    if row is None:
        return f"{qid}: no such item in pending/{QUEUE_FILE}", None, None
    state = row["state"]
    when = iso_at(row["decided_ts"]) \
        if row["decided_ts"] else "?"
    retry = decision == "approved" and again
    if state in FINAL and not (retry and state == "approved" and row["ok"] == 0):
        how = {1: " (ok)", 0: " (failed; approve.py yes " + qid + " --again runs it again)"}.get(row["ok"], "") \
            if state == "approved" else ""
        return f"{qid} was already {state}{how} at {when}; nothing done", row, None
    if state == "started" and decision == "approved" and not again:
        return (f"{qid} was started at {when} with no result recorded (stopped mid-run): it may have run. "
                f"Check, then approve.py yes {qid} --again, or approve.py done|no {qid}"), row, None
    if expect_sha8 is not None and not (expect_sha8 and row["sha"].startswith(str(expect_sha8).lower())):
        return (f"{qid}: the record's sha256 is {row['sha'][:8]}, not the {short(expect_sha8, 16)} that was "
                "shown; nothing done"), row, None
    record = _record(cfg, row)
    if record is None:
        return f"{qid}: the record can no longer be read from pending/{QUEUE_FILE}; nothing done", row, None
    if decision == "approved":
        action, stored = record.get("action"), record.get("sha256")
        now = action_sha256(action) if isinstance(action, dict) else "(not an object)"
        if now != stored or stored != row["sha"]:
            return (f"{qid}: the record changed since it was queued (sha256 {row['sha'][:8]} queued, "
                    f"{str(now)[:8]} now); nothing run. Reject it with approve.py no {qid}"), row, record
    return None, row, record


def _decisions_lock(cfg, wait_s=LOCK_WAIT_S):
    """The lock every decision is checked and appended under (a link or folder planted there moved aside)."""
    displace(cfg.paths.private / "decisions.lock")
    return waiting_lock(cfg.paths.private / "decisions.lock", wait_s)


def _append(cfg, line):
    path = cfg.paths.pending / DECISIONS_FILE
    if path.is_symlink() or (path.exists() and not path.is_file()):
        # Moving it aside would lose every decision it holds; writing through it could land anywhere.
        raise OSError(f"pending/{DECISIONS_FILE} is not a regular file")
    append_record(path, json.dumps(line, ensure_ascii=False, separators=(",", ":")))
    # Take the line into the index at once: if the file is later lost, the index knows it held decisions.
    try:
        Index(cfg).close()
    except sqlite3.Error as e:  # the line is written; the index catches up next time
        log.warning("approvals index not updated: %s", e)


def _post(cfg, telegram, redactor, text):
    if telegram is None:
        from .telegram import TelegramClient
        telegram = TelegramClient(cfg.telegram, redactor)
    thread = cfg.telegram.first_thread("approvals", "requests", "log")
    try:
        telegram.send(redactor.text(text), thread=thread or "log")
    except Exception as e:  # the decision line is the record; a lost post must not undo it
        log.warning("decision post failed: %s", redactor.text(e))


def decide(cfg, qid, decision, by, note="", *, expect_sha8=None, again=False, over_budget=False,
           lock_wait_s=60.0, telegram=None):
    """Record a decision (approved runs the action first); never raises for an operator's mistake."""
    redactor = Redactor(cfg.secrets())
    if decision not in FINAL:
        return Outcome(False, 1, f"unknown decision {short(repr(decision), 40)} (approved, rejected or done)")
    canon = parse_id(qid)
    if canon is None:
        return Outcome(False, 1, f"{short(repr(qid), 60)} is not an item id (ids look like q7)")
    note = short(redactor.text(note or ""), NOTE_MAX) if note else ""
    try:
        if decision == "approved":
            with tick_lock(cfg, lock_wait_s):
                return _approve(cfg, canon, by, note, expect_sha8, again, over_budget, redactor, telegram)
        with Index(cfg) as index:
            row = index.item(canon)
        if row and row["state"] == "started":
            # It may be running right now: wait for the run that holds the tick lock to record its result.
            with tick_lock(cfg, lock_wait_s):
                return _close(cfg, canon, decision, by, note, expect_sha8, redactor, telegram)
        return _close(cfg, canon, decision, by, note, expect_sha8, redactor, telegram)
    except Busy as e:
        return Outcome(False, 75, str(e), canon)
    except (OSError, TimeoutError, sqlite3.Error) as e:
        return Outcome(False, 1, redactor.text(f"{canon}: {e.__class__.__name__}: {e}; nothing decided"), canon)


def _close(cfg, qid, decision, by, note, expect_sha8, redactor, telegram):
    """Reject or mark done: a line and a post, nothing run."""
    with _decisions_lock(cfg):
        problem, row, record = _refusal(cfg, qid, decision, False, expect_sha8)
        if problem:
            return Outcome(False, 1, redactor.text(problem), qid)
        _append(cfg, {"id": qid, "sha256": row["sha"], "decision": decision, "by": by, "at": iso(),
                      "note": note, "result": None})
    blank = "(no reason given)" if decision == "rejected" else "(no note)"
    text = f"{ICONS[decision]} {qid} {decision}: {note or blank}"
    _post(cfg, telegram, redactor, text)
    return Outcome(True, 0, redactor.text(text), qid)


def _approve(cfg, qid, by, note, expect_sha8, again, over_budget, redactor, telegram):
    from .executors import EXECUTORS, configured_problem  # requests and smtplib only when something runs
    from .actions import HANDLERS, ActionContext, run_action
    from .paths import PathPolicy
    if telegram is None:
        from .telegram import TelegramClient
        telegram = TelegramClient(cfg.telegram, redactor)
    queue = ApprovalQueue(cfg, redactor, telegram)
    with _decisions_lock(cfg):
        problem, row, record = _refusal(cfg, qid, "approved", again, expect_sha8)
        if problem:
            return Outcome(False, 1, redactor.text(problem), qid)
        action = record["action"]
        kind = action.get("type") if isinstance(action.get("type"), str) else "?"
        problem = configured_problem(cfg, kind)
        if problem is None and kind not in HANDLERS and kind not in EXECUTORS and kind != "spend":
            problem = f"no executor for type {short(repr(kind), 40)}"
        if problem:
            return Outcome(False, 1, redactor.text(f"{qid} ({short(kind, 40)}): {problem}; do it by hand, then "
                                                   f"approve.py done {qid}"), qid)
        for spend in (action if kind == "spend" else None, action.get("spend")):
            if isinstance(spend, dict) and not over_budget:
                fits, message = SpendLedger(cfg, redactor).check_spend(spend.get("amount_pence"))
                if not fits:
                    return Outcome(False, 1, redactor.text(f"{qid}: {message}; approve.py yes {qid} --over-budget "
                                                           "records it anyway"), qid)
        _append(cfg, {"id": qid, "sha256": row["sha"], "decision": "approved", "by": by, "at": iso(),
                      "note": note, "result": None, "status": "started"})
    budget = max(cfg.tick.shell_timeout_s, cfg.tick.http_timeout_s) + RUN_GRACE_S
    ctx = ActionContext(cfg=cfg, policy=PathPolicy(cfg), redactor=redactor, telegram=telegram, queue=queue,
                        tick_n=record.get("tick") if isinstance(record.get("tick"), int) else 0,
                        deadline=time.time() + budget, approved=True, over_budget=over_budget,
                        executors=EXECUTORS)
    result = run_action(ctx, action)
    ok = bool(result.get("ok"))
    parts = [f"{key}: {result[key]}" for key in ("error", "stdout", "stderr", "body", "content") if result.get(key)]
    summary = short(result.get("summary") or "", 300)
    line = {"ok": ok, "status": result.get("status"), "summary": summary,
            "output": truncate(redactor.text("\n".join(parts)), OUTPUT_MAX)}
    text = f"✅ {qid} approved · {short(kind, 40)} · {'ok' if ok else 'failed'}: {summary}"
    try:
        with _decisions_lock(cfg, RESULT_LOCK_WAIT_S):
            _append(cfg, {"id": qid, "sha256": row["sha"], "decision": "approved", "by": by, "at": iso(),
                          "note": note, "result": line})
    except (OSError, TimeoutError, sqlite3.Error) as e:
        # It ran: say so, whatever the record; it stays "started" for the operator to close by hand.
        return Outcome(False, 1, redactor.text(f"{text} — but the result was not recorded ({e}); {qid} shows as "
                                               f"started: approve.py done {qid} once checked"), qid, line)
    _post(cfg, telegram, redactor, text)
    return Outcome(ok, 0 if ok else 1, redactor.text(text), qid, line)


# -- what the next tick, the digest and analyse see --------------------------------------------------------

def _recent_lines(path, start, end):
    """Decision lines between two offsets, at most RECENT_BYTES of the newest."""
    begin = max(start, end - RECENT_BYTES)
    try:
        with open_regular(path) as f:
            f.seek(begin)
            data = f.read(end - begin)
    except OSError:
        return []
    if begin > start and b"\n" in data:
        data = data.split(b"\n", 1)[1]
    out = []
    for raw in data.split(b"\n"):
        try:
            entry = json.loads(raw.decode("utf-8", "replace")) if raw.strip() else None
        except ValueError:
            continue
        if isinstance(entry, dict) and parse_id(entry.get("id")):
            out.append(entry)
    return out


def _describe(entry, kind):
    qid, decision = entry["id"], entry.get("decision")
    note = short(entry.get("note") or "", 200)
    if decision == "approved":
        result = entry.get("result")
        if entry.get("status") == "started" or not isinstance(result, dict):
            return (f"- {qid} {kind} · approved, started at {entry.get('at', '?')}, no result recorded: the run "
                    "was stopped and may or may not have happened")
        word = "ok" if result.get("ok") else "failed"
        return f"- {qid} {kind} · approved · {word}: {short(result.get('summary') or '', 300)}"
    if decision == "rejected":
        return f"- {qid} {kind} · rejected: {note or '(no reason given)'}"
    return f"- {qid} {kind} · done by the operator: {note or '(no note)'}"


def context_block(cfg, write=True):
    """(APPROVALS block text or "", marker): decisions since the last tick, still-open ids with their types.

    The marker (where the decisions file was read up to) is stored by `mark_seen` once the tick succeeded,
    so a failed tick's decisions are shown again.
    """
    try:
        return _context_block(cfg, write)
    except (sqlite3.Error, OSError) as e:  # the approvals must never cost the tick
        log.warning("approvals index unreadable: %s", e)
        return (f"⚠️ The approvals could not be read this tick ({e.__class__.__name__}: {short(str(e), 200)}); "
                "the operator can see them with approve.py list.", None)


def _context_block(cfg, write):
    path = cfg.paths.pending / DECISIONS_FILE
    seen, seen_path = {}, cfg.paths.private / SEEN_FILE
    if seen_path.is_file() and not seen_path.is_symlink():  # never a read that a planted FIFO could block
        try:
            seen = json.loads(read_text(seen_path) or "{}")
        except ValueError:
            pass
    with Index(cfg, write) as index:
        count, oldest = index.open_summary()
        listed = index.items(limit=OPEN_LISTED)
        started = index.items_in("started", 20)
        dec_id, dec_off = index.decisions_offset()
        missing = dict(index.missing)
        if isinstance(seen, dict) and seen.get("id") == dec_id and 0 <= int(seen.get("off", 0)) <= dec_off:
            entries = _recent_lines(path, int(seen.get("off", 0)), dec_off)
        else:  # first tick, or the file was replaced: what was decided after the last tick's time
            since = parse_time(seen.get("at")) if isinstance(seen, dict) else None
            entries = [e for e in _recent_lines(path, 0, dec_off)
                       if since is None or (parse_time(e.get("at")) or 0) >= since]
        last = {}
        for e in entries:
            last.pop(e["id"], None)
            last[e["id"]] = e
        kinds = {qid: (index.item(qid) or {}).get("type", "?") for qid in last}
    marker = {"id": dec_id, "off": dec_off, "at": iso()}
    lines = [f"⚠️ pending/{name} is missing or not a regular file (it held {n} lines); no decision can be made "
             "until it is restored."
             for name, n in missing.items()]
    shown = list(last.values())[-DECISIONS_LISTED:]
    if shown:
        lines.append("Decisions by the operator since the last tick:")
        if len(last) > len(shown):
            lines.append(f"({len(last) - len(shown)} earlier ones not listed)")
        lines += [_describe(e, kinds[e["id"]]) for e in shown]
    lines += [f"Started but no result recorded: {r['qid']} {r['type']} (it may have run; the operator decides)"
              for r in started if r["qid"] not in last]
    if count:
        ids = ", ".join(f"{r['qid']} {r['type']}" for r in listed)
        more = f", and {count - len(listed)} more" if count > len(listed) else ""
        lines.append(f"Waiting for the operator ({count} open, oldest queued {oldest}): {ids}{more}. "
                     "Do not ask for these again.")
    return "\n".join(lines), marker


def mark_seen(cfg, marker):
    """Remember that a tick showed the decisions up to `marker` (None: nothing was shown)."""
    if marker is not None:
        displace(cfg.paths.private / SEEN_FILE)
        # Lost in a power cut, the next tick shows these decisions again: no folder fsync for it.
        atomic_write(cfg.paths.private / SEEN_FILE, json.dumps(marker) + "\n", durable=False)


def figures(cfg, since_ts, until_ts=None, write=True, now=None):
    """(open count, oldest open item's age in seconds at `now` (default: until) or None, items decided in
    [since, until])."""
    with Index(cfg, write) as index:
        count, oldest = index.open_summary()
        decided = index.decided_between(since_ts, until_ts)
    queued = parse_time(oldest)
    now = now or until_ts or time.time()
    age = max(0.0, now - queued) if queued is not None else None
    return count, age, decided


def age_text(seconds):
    """3d4h, 5h12m, 7m, 40s."""
    s = int(seconds)
    if s >= 86400:
        return f"{s // 86400}d{s % 86400 // 3600}h"
    if s >= 3600:
        return f"{s // 3600}h{s % 3600 // 60:02d}m"
    return f"{s // 60}m" if s >= 60 else f"{s}s"
