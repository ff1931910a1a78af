"""The approval queue for gated actions (§13).

A gated action is never run here: it gets an id `q<N>` and one JSON line in `pending/pending_actions.jsonl`
for the operator to act on, and a ping to the approvals thread. N comes from a sequence persisted in
`state/.mako/queue_seq` and bumped (fsync'd) before the line is appended, so an id is never handed out
twice — not after a crash between the two steps, not after the operator deletes the queue file.

Small spends (at or under the approval threshold) are not queued but written to `state/.mako/spend.jsonl`,
and refused once they would take the month over the budget ceiling.
"""

import hashlib
import json
import logging
import os
import re
import sqlite3
import time
from contextlib import contextmanager
from pathlib import Path

from .counter import read_number
from .fileio import (FileLock, NotRegularFile, append, atomic_write, make_room, open_regular,
                     split_records, tail_lines)
from .logs import iso
from .text import one_line

log = logging.getLogger(__name__)

QUEUE_FILE = "pending_actions.jsonl"
LOCK_WAIT_S = 10.0
FIELD_MAX = 200
# The fields an operator needs to triage each gated type at a glance.
KEY_FIELDS = {
    "email_send": ("to", "subject"),
    "cf_api": ("method", "path"),
    "http_post": ("url",),
    "http_put": ("url",),
    "http_delete": ("url",),
    "spend": ("amount_pence", "reason"),
}
# For anything queued only because it asked for approval, the field that says what it would do.
FALLBACK_FIELDS = ("cmd", "url", "path", "text")
ID_RE = re.compile(r"q([0-9]{1,12})", re.ASCII)
GATED_TYPES = ("email_send", "cf_api", "http_post", "http_put", "http_delete")


def action_sha256(action):
    """Hex sha256 of the canonical JSON of an action, as the queue line records it."""
    canon = json.dumps(action, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(canon.encode("utf-8", "surrogatepass")).hexdigest()


# JSON escapes the C0 controls itself; these three it leaves raw, and str.splitlines() splits on them.
RAW_BREAKS = {"\x85": "\\u0085", "\u2028": "\\u2028", "\u2029": "\\u2029"}


def jsonl_line(obj):
    """One JSON Lines record, UTF-8 like the hashed form, but with no character that any reader splits on."""
    line = json.dumps(obj, ensure_ascii=False, separators=(",", ":"))
    for raw, escaped in RAW_BREAKS.items():
        line = line.replace(raw, escaped)
    return line


def read_jsonl(path):
    """The objects in a JSON Lines file; a torn or garbled line (a crash mid-append) is skipped."""
    out = []
    try:
        with open_regular(path) as f:
            data = f.read()
    except (FileNotFoundError, IsADirectoryError, NotRegularFile):
        return out
    for line in split_records(data):
        line = line.strip()
        if not line:
            continue
        try:
            value = json.loads(line)
        except ValueError:
            continue
        if isinstance(value, dict):
            out.append(value)
    return out


def read_queue(path):
    """Every well-formed entry of a pending_actions.jsonl, oldest first."""
    return read_jsonl(path)


def valid_pence(value):
    """A spend amount is a non-negative int; a bool is not an amount."""
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def is_gated(action, threshold_pence):
    """Whether an action must wait for the operator instead of running now (§13)."""
    if not isinstance(action, dict):
        return False
    # Anything but absent/false/null asks for approval: a model writing "true" or 1 means it too.
    if action.get("needs_approval") not in (None, False):
        return True
    kind = action.get("type")
    if kind in GATED_TYPES:
        return True

    def over(amount):
        return valid_pence(amount) and amount > threshold_pence

    if kind == "spend" and over(action.get("amount_pence")):
        return True
    spend = action.get("spend")
    return isinstance(spend, dict) and over(spend.get("amount_pence"))


def spend_problem(spend, prefix=""):
    """What is wrong with a `spend` object ({amount_pence, reason}), or None when it is well-formed."""
    if not isinstance(spend, dict):
        return f"{prefix or 'spend '}must be an object {{amount_pence, reason}}"
    if not valid_pence(spend.get("amount_pence")):
        return f"{prefix}amount_pence must be a non-negative integer (pence)"
    reason = spend.get("reason")
    if not isinstance(reason, str) or not reason.strip():
        return f"{prefix}reason must be a non-empty string"
    return None


def cut(value, limit=FIELD_MAX, see=None):
    """A field on one line, as it would run: nothing hidden, and a cut says how much and where to see it."""
    text = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)
    return one_line(text, limit, see or f"pending/{QUEUE_FILE}")


def append_record(path, line):
    """Append one JSON line, keeping the file valid JSON Lines.

    Appends are one write() each, so a torn last line means a write that never completed (a full disk, a
    power cut): that fragment is cut off and kept beside the queue for the record, not left as a line.
    """
    # Never through a link or into a FIFO: the repair must cut nothing but the wrapper's own file.
    make_room(path)
    try:
        fd = os.open(path, os.O_RDWR | os.O_NOFOLLOW | os.O_NONBLOCK)
    except FileNotFoundError:
        fd = None
    if fd is not None:
        with os.fdopen(fd, "r+b") as f:
            f.seek(0, os.SEEK_END)
            size = f.tell()
            if size > 0:
                f.seek(-1, os.SEEK_END)
                if f.read(1) != b"\n":
                    f.seek(max(0, size - 65536))
                    tail = f.read()
                    cut = size - len(tail) + tail.rfind(b"\n") + 1 if b"\n" in tail else max(0, size - len(tail))
                    f.seek(cut)
                    fragment = f.read()
                    append(Path(path).with_name(f"{Path(path).name}.torn"), fragment + b"\n")
                    f.truncate(cut)
                    os.fsync(f.fileno())
    append(path, line + "\n")


@contextmanager
def waiting_lock(path, wait_s=LOCK_WAIT_S):
    """Hold an flock on `path`, waiting for another holder rather than failing at once."""
    lock = FileLock(path)
    give_up = time.monotonic() + wait_s
    while not lock.acquire():
        if time.monotonic() > give_up:
            raise TimeoutError(f"lock {path.name} held by another process for over {wait_s:.0f}s")
        time.sleep(0.02)
    try:
        yield
    finally:
        lock.release()


class ApprovalQueue:
    """Queues gated actions for the operator: one id each, one queue line, one post."""

    def __init__(self, cfg, redactor, telegram):
        self.cfg = cfg
        self.redactor = redactor
        self.telegram = telegram
        private = cfg.paths.private
        self.queue_path = cfg.paths.pending / QUEUE_FILE
        self.seq_path = private / "queue_seq"
        self.lock_path = private / "queue.lock"

    # -- queue ------------------------------------------------------------------------------------------

    def _next_number(self):
        """Bump and persist the sequence; call with the queue lock held."""
        current = read_number(self.seq_path) or 0
        # A lost or stale sequence file must never hand out an id the queue already shows. Ids are appended
        # in increasing order under this lock, so the newest lines hold the highest: read only the tail.
        seen = 0
        for line in tail_lines(self.queue_path, 200):
            try:
                entry = json.loads(line)
            except ValueError:
                continue
            m = ID_RE.fullmatch(entry.get("id", "")) if isinstance(entry, dict) and isinstance(
                entry.get("id"), str) else None
            if m:
                seen = max(seen, int(m.group(1)))
        number = max(current, seen) + 1
        atomic_write(self.seq_path, f"{number}\n")
        return number

    def enqueue(self, action, tick_n):
        """Record a gated action for approval; return its id ("q<N>") after posting the ping."""
        return self.enqueue_once(action, tick_n)[0]

    def enqueue_once(self, action, tick_n):
        """Queue a gated action unless the same action is already open: (id, newly queued?).

        A duplicate is neither queued nor posted again: the operator already has it in front of them.
        """
        if not isinstance(action, dict):
            raise TypeError("a queued action must be an object")
        # Imported here: the index reads the queue this module writes.
        from .approval_index import Index
        stored = self.redactor.obj(action)
        kind = stored.get("type") if isinstance(stored.get("type"), str) else "?"
        sha = action_sha256(stored)
        with waiting_lock(self.lock_path):
            try:
                with Index(self.cfg) as index:
                    waiting = index.open_with_sha(sha)
            except (sqlite3.Error, OSError) as e:  # a broken index must not stop the queue: queue it again
                log.warning("approvals index unreadable, not checking for a duplicate: %s", e)
                waiting = None
            if waiting:
                log.info("%s is already waiting as %s; not queued again", kind, waiting)
                return waiting, False
            qid = f"q{self._next_number()}"
            entry = {
                "id": qid,
                "queued_at": iso(),
                "tick": tick_n,
                "type": kind,
                "action": stored,
                "sha256": sha,
            }
            append_record(self.queue_path, jsonl_line(entry))
        log.info("queued %s (%s) for approval", qid, kind)
        self._post(qid, kind, stored, sha)
        return qid, True

    def _post(self, qid, kind, action, sha):
        lines = [f"⏸ {qid} queued · {kind}"]
        fields = KEY_FIELDS.get(kind)
        if fields is None:
            fields = next(((f,) for f in FALLBACK_FIELDS if f in action), ())
        see = f"approve.py show {qid}"
        for name in fields:
            if name in action:
                lines.append(f"{name}: {cut(action[name], see=see)}")
        spend = action.get("spend")
        if isinstance(spend, dict) and "amount_pence" in spend:
            lines.append(f"spend: {cut(spend.get('amount_pence'), see=see)}p · {cut(spend.get('reason', ''), see=see)}")
        tg = self.cfg.telegram
        lines.append(f"sha256 {sha[:8]} · decide: approve.py yes {qid} | approve.py no {qid}")
        markup = None
        if tg.inbound_on:
            lines.append(f"or reply: approve {qid} / reject {qid}")
            markup = {"inline_keyboard": [[{"text": "Approve", "callback_data": f"a:{qid}:{sha[:8]}"},
                                           {"text": "Reject", "callback_data": f"r:{qid}:{sha[:8]}"}]]}
        lines.append(f"see: {see}")
        thread = tg.first_thread("approvals", "requests", "log")
        try:
            text = self.redactor.text("\n".join(lines))
            if markup:
                self.telegram.send(text, thread=thread or "log", reply_markup=markup)
            else:
                self.telegram.send(text, thread=thread or "log")
        except Exception as e:  # the queue line is the record; a lost ping must not undo it
            log.warning("approval ping for %s failed: %s", qid, self.redactor.text(e))
