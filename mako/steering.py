"""Steering from the chat (§20): an allowed person's message becomes an entry in `state/INBOX.md`.

Each entry is a header line the wrapper writes — `[telegram · <name> · <YYYY-MM-DD HH:MM> UTC · thread
<name or id>]`, then `(reply to: "…")` when it answers a post — and the text with every line quoted as
`> `, and every hidden character shown as an escape (mako/text.py). So no line of what was typed can pass
for a header or for one of the wrapper's `## ` block labels, whatever line breaks (any Unicode one) or
invisible characters it holds: the model can tell the operator's words from the wrapper's frame.

The append must never lose a line to a tick claiming the INBOX at the same moment (§7): the entry is one
write() on an O_APPEND descriptor, made under an flock on that very file after checking the file is still
the one named INBOX.md. The tick takes the same lock before it archives or drops a claim, so the entry
lands either in the file the tick is about to read, or — if the tick's rename came first — in a fresh
INBOX.md, never in a claim the tick has already finished with.

The ids of `ask_chris` posts are remembered here too, so an answer to one says so in its header.
"""

import fcntl
import json
import os
import stat
import time
from datetime import datetime, timezone

from .fileio import FILE_MODE, atomic_write, displace, ensure_dir, fsync_dir, read_text
from .text import LINE_BREAK_RE, short, visible

REPLY_QUOTE_MAX = 200
NAME_MAX = 64
QUESTIONS_FILE = "ask_chris_posts.json"
QUESTIONS_KEEP = 200


def one_line(text, limit):
    """Every run of whitespace and line breaks made one space, cut to `limit` with the marker, and what is
    still hidden (controls, zero-width and direction characters) shown as escapes."""
    return visible(short(text, limit))


def quote_body(text):
    """The typed text with each line (split at any Unicode line break) quoted as `> `, hidden characters
    shown as escapes."""
    lines = LINE_BREAK_RE.split(str(text))
    return "\n".join(("> " + visible(line, keep="\t")).rstrip() if line.strip() else ">" for line in lines)


def thread_label(tg, topic):
    """`requests` for a configured thread's id, the bare id for another topic, `general` for none."""
    if not topic:
        return "general"
    for name in ("log", "requests", "approvals", "digest"):
        if tg.thread_id(name) == topic:
            return name
    return str(topic)


def entry_text(tg, msg, name, topic, question=False):
    """The INBOX entry for one message (without the blank line that separates it from what was there)."""
    when = msg.get("date")
    stamp = datetime.fromtimestamp(when if isinstance(when, int) else time.time(), timezone.utc)
    name = one_line(name, NAME_MAX).replace("[", "(").replace("]", ")")
    lines = [f"[telegram · {name} · {stamp:%Y-%m-%d %H:%M} UTC · thread {thread_label(tg, topic)}]"]
    replied = quoted_reply(msg)
    if replied is not None:
        label = "answer to ask_chris question" if question else "reply to"
        lines.append(f'({label}: "{one_line(replied, REPLY_QUOTE_MAX)}")')
    lines.append(quote_body(msg.get("text", "")))
    return "\n".join(lines) + "\n"


def quoted_reply(msg):
    """The text of the message this one replies to, or None (a topic's creation message is no reply)."""
    ref = msg.get("reply_to_message")
    if not isinstance(ref, dict) or ref.get("forum_topic_created") is not None:
        return None
    if ref.get("message_id") == msg.get("message_thread_id") and msg.get("is_topic_message"):
        return None  # a message typed in a topic points at the topic's first message (protocols §3.6)
    text = ref.get("text") if isinstance(ref.get("text"), str) else ref.get("caption")
    return text if isinstance(text, str) else "(a message without text)"


def replied_to_id(msg):
    ref = msg.get("reply_to_message")
    return ref.get("message_id") if isinstance(ref, dict) else None


# -- the append ---------------------------------------------------------------------------------------------

def inbox_path(paths):
    return paths.state / "INBOX.md"


def _open_inbox(path):
    """An O_APPEND descriptor on the regular file at `path`, creating it; whatever else stands there (a
    planted folder, link or FIFO) is moved aside first."""
    for _ in range(5):
        try:
            fd = os.open(path, os.O_RDWR | os.O_APPEND | os.O_CREAT | os.O_NOFOLLOW | os.O_NONBLOCK, FILE_MODE)
        except OSError:
            if displace(path) is None:
                raise
            continue
        if stat.S_ISREG(os.fstat(fd).st_mode):
            return fd
        os.close(fd)
        displace(path)
    raise OSError(f"{path} keeps being replaced by something that is not a file")


def append_entry(paths, text):
    """Append one entry to INBOX.md, safe against a tick claiming it at the same moment (see the module)."""
    path = inbox_path(paths)
    ensure_dir(path.parent)
    for _ in range(100):
        fd = _open_inbox(path)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            st = os.fstat(fd)
            try:
                current = os.lstat(path)
            except FileNotFoundError:
                current = None
            if current is None or (current.st_ino, current.st_dev) != (st.st_ino, st.st_dev):
                continue  # claimed between our open and our lock: write to the fresh INBOX.md instead
            sep = b""
            if st.st_size:
                # Keep a blank line between entries without adding one after text that already ends in one.
                tail = os.pread(fd, 2, max(0, st.st_size - 2))
                sep = b"" if tail.endswith(b"\n\n") else (b"\n" if tail.endswith(b"\n") else b"\n\n")
            data = sep + text.encode("utf-8", "backslashreplace")
            written = 0
            while written < len(data):
                written += os.write(fd, data[written:])
            os.fsync(fd)
            if not st.st_size:
                fsync_dir(path.parent)
            return
        finally:
            os.close(fd)  # closing drops the flock
    raise OSError(f"{path}: could not append (the file kept being claimed)")


def entry_landed(paths, text, since):
    """Whether an entry was already appended (after a kill between the append and its record).

    The entry can only be in INBOX.md, in an open claim, or in an archive written since `since`.
    """
    needle = text.encode("utf-8", "backslashreplace")
    candidates = [inbox_path(paths)]
    for folder, prefix in ((paths.private / "inbox", ""), (paths.archive, "inbox-")):
        try:
            with os.scandir(folder) as it:
                for entry in it:
                    if entry.name.startswith(prefix) and entry.is_file(follow_symlinks=False):
                        if entry.stat(follow_symlinks=False).st_mtime >= since - 2:
                            candidates.append(entry.path)
        except OSError:
            continue
    for path in candidates:
        try:
            with open(path, "rb") as f:
                if needle in f.read():
                    return True
        except OSError:
            continue
    return False


# -- ask_chris posts --------------------------------------------------------------------------------------

def questions_path(paths):
    return paths.private / QUESTIONS_FILE


def asked_ids(paths):
    try:
        ids = json.loads(read_text(questions_path(paths), "[]"))
    except ValueError:
        return []
    return [i for i in ids if isinstance(i, int) and not isinstance(i, bool)] if isinstance(ids, list) else []


def record_question(paths, message_id):
    """Remember the message id of an ask_chris post (the newest few hundred are kept)."""
    if not isinstance(message_id, int):
        return
    ids = asked_ids(paths)
    ids.append(message_id)
    atomic_write(questions_path(paths), json.dumps(ids[-QUESTIONS_KEEP:]) + "\n")
