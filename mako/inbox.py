"""The operator's INBOX (§7): claimed by rename at tick start, archived only after a tick succeeds.

The operator may write `state/INBOX.md` at any moment. A tick renames it into `state/.mako/inbox/`, so a
message written after that lands in a fresh INBOX.md for the next tick. Claims of a failed tick stay and
are shown again (oldest first) until a tick succeeds. Archiving is `link` then `unlink`: if a crash falls
between the two, the claim's link count (2) tells the next tick it is already archived. Only what the
model was shown is archived: the part of a long INBOX that the context cap cut stays for the next tick.
"""

import fcntl
import os
import re
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

from .fileio import NotRegularFile, atomic_write, ensure_dir, fsync_dir, numbered_names, open_regular

MAX_INBOX_BYTES = 256 * 1024
SEPARATOR = "\n\n---\n\n"  # between claims in the text the model sees
MARKER_RE = re.compile(r"^\.(claim-.+\.md)\.(\d+)\.shown$")


@dataclass
class Claim:
    path: Path
    data: bytes  # what was read and shown to the model

    @property
    def text(self):
        return self.data.decode("utf-8", "replace")


@dataclass
class Inbox:
    claims: list = field(default_factory=list)

    @property
    def present(self):
        return any(c.text.strip() for c in self.claims)

    @property
    def text(self):
        return SEPARATOR.join(c.text.strip("\n") for c in self.claims if c.text.strip())

    def keep_shown(self, message):
        """Narrow the claims to what `message` shows of them; return the number of bytes held back.

        The context has a hard cap, so a long INBOX reaches the model cut to its head. Only what it saw may
        be archived (§7): a claim cut short keeps the rest in its file (archive() leaves the unseen part of a
        claim for the next tick), and a claim not shown at all stays as it is. Cuts fall after the last
        whole line shown, or inside a single line too long ever to be shown whole.
        """
        text = self.text
        if not text or text in message:
            return 0
        lo, hi = 0, len(text)  # the longest head of the text that the message holds
        while lo < hi:
            mid = (lo + hi + 1) // 2
            if text[:mid] in message:
                lo = mid
            else:
                hi = mid - 1
        kept, held, start = [], 0, 0
        for c in self.claims:
            part = c.text.strip("\n")
            if not part.strip():
                kept.append(c)  # nothing to show; archived with the rest, as before
                continue
            seen = lo - start
            start += len(part) + len(SEPARATOR)
            if seen >= len(part):
                kept.append(c)
                continue
            data = _shown_bytes(c.data, part[:max(seen, 0)])
            held += len(c.data) - len(data)
            if data.strip():
                kept.append(Claim(c.path, data))
        self.claims = kept
        return held


def _shown_bytes(data, seen):
    """The head of a claim's bytes that `seen` (a head of its text, leading newlines stripped) covers."""
    lead = len(data) - len(data.lstrip(b"\n"))
    lines = seen.count("\n")
    if lines:
        end = lead
        for _ in range(lines):
            end = data.index(b"\n", end) + 1
        return data[:end]
    if not seen or "\ufffd" in seen:
        return b""
    return data[:lead + len(seen.encode("utf-8", "surrogatepass"))]


def claims_dir(paths):
    return paths.private / "inbox"


def _existing_claims(paths, repair=True):
    """Open claims, oldest first. `repair` (only under the tick lock) finishes what a killed tick left."""
    folder = claims_dir(paths)
    try:
        names = sorted(os.listdir(folder))
    except FileNotFoundError:
        return []
    if repair:
        for name in names:
            m = MARKER_RE.match(name)
            if m:
                _finish_split(folder / m.group(1), folder / name, int(m.group(2)))
    out = []
    for name in names:
        if not (name.startswith("claim-") and name.endswith(".md")):
            continue
        path = folder / name
        try:
            st = os.lstat(path)
        except FileNotFoundError:
            continue
        if st.st_nlink > 1:
            # Archived (linked into archive/) by a tick that died before removing the claim.
            if repair:
                os.unlink(path)
            continue
        out.append(path)
    return out


@contextmanager
def _locked(path, shared=False):
    """An flock on the file at `path`: the chat listener appends under the same lock (mako/steering.py), so
    a read never sees half an entry and an entry never lands in a claim after the tick is done with it."""
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)  # NONBLOCK: a FIFO planted there must not hang the tick
    try:
        fcntl.flock(fd, fcntl.LOCK_SH if shared else fcntl.LOCK_EX)
        yield fd
    finally:
        os.close(fd)


def _read(path):
    with open_regular(path) as f:  # a FIFO planted as a claim or as INBOX.md must not hang the tick
        fcntl.flock(f.fileno(), fcntl.LOCK_SH)  # never half an entry the listener is writing
        return f.read(MAX_INBOX_BYTES)


def _drop_if_blank(path, data):
    """Remove a claim that holds only whitespace (an empty INBOX.md is not a message); True if removed."""
    if data.strip():
        return False
    with _locked(path):
        if os.path.getsize(path) != len(data):
            return False  # written to since it was read: a message after all
        os.unlink(path)
    return True


def peek(paths):
    """What a claim would show now, without moving anything (for --dry-run).

    Repairs are left to the next tick, which holds the tick lock: right after a tick was killed mid-archive
    this may still show a head that the tick will find already archived.
    """
    claims = [Claim(p, _read(p)) for p in _existing_claims(paths, repair=False)]
    inbox = paths.state / "INBOX.md"
    try:
        data = _read(inbox)
    except (FileNotFoundError, IsADirectoryError, NotRegularFile):
        data = b""
    if data.strip():
        claims.append(Claim(inbox, data))
    return Inbox(claims)


def claim(paths, tick_n):
    """Move INBOX.md (if it holds anything) into a claim file; return every open claim, oldest first."""
    folder = ensure_dir(claims_dir(paths))
    inbox = paths.state / "INBOX.md"
    try:
        st = os.lstat(inbox)
    except FileNotFoundError:
        st = None
    if st is not None and st.st_size > 0:
        target = folder / f"claim-{time.time_ns():020d}-{int(tick_n):08d}.md"
        os.rename(inbox, target)
        fsync_dir(folder)
        fsync_dir(paths.state)
    claims = []
    for path in _existing_claims(paths):
        data = _read(path)
        if _drop_if_blank(path, data):
            continue
        claims.append(Claim(path, data))
    return Inbox(claims)


def _link_into(archive_dir, src, when):
    """Hard-link `src` into archive/ under a fresh name (never overwriting); return the new path."""
    for target in numbered_names(archive_dir, f"inbox-{when:%Y%m%d-%H%M%S}"):
        try:
            os.link(src, target)
        except FileExistsError:
            continue
        fsync_dir(archive_dir)
        return target


def _finish_split(claim_path, marker, claim_ino):
    """Second half of archiving a claim's head: cut the head from the claim, then drop the marker.

    The marker holds the archived head and is named after the claim and its inode at the time. Linked into
    archive/ (2 links), it says the head is archived; the claim still having that inode says it was not yet
    cut. A marker with one link is from a tick killed before archiving: the claim is whole, shown again.
    """
    try:
        st = os.lstat(marker)
    except FileNotFoundError:
        return
    if st.st_nlink > 1:
        try:
            same = os.lstat(claim_path).st_ino == claim_ino
        except FileNotFoundError:
            same = False
        if same:
            current = claim_path.read_bytes()
            atomic_write(claim_path, current[st.st_size:])  # the unseen part waits for the next tick
    os.unlink(marker)
    fsync_dir(marker.parent)


def _archive_claim(archive_dir, c, when):
    with _locked(c.path) as fd:
        st = os.fstat(fd)
        current = c.path.read_bytes()
        if len(current) > len(c.data) and current.startswith(c.data):
            marker = c.path.with_name(f".{c.path.name}.{st.st_ino}.shown")
            atomic_write(marker, c.data)
            target = _link_into(archive_dir, marker, when)
            _finish_split(c.path, marker, st.st_ino)
        else:
            target = _link_into(archive_dir, c.path, when)
            os.unlink(c.path)
            fsync_dir(c.path.parent)
    return target


def archive(paths, inbox, now=None):
    """Archive every claim that was shown; keep anything written to a claim after it was read.

    A claim shown whole is linked into archive/ and unlinked (a kill between the two leaves 2 links, which
    the next claim() reads as archived). A claim shown in part (cut by the context cap, or written to after
    it was read) has its head written to a marker file first; linking the marker into archive/ is the
    moment the head counts as archived, and _finish_split() — now or after a kill — cuts it from the claim.
    """
    archived = []
    archive_dir = ensure_dir(paths.archive)
    when = datetime.fromtimestamp(now if now is not None else time.time())  # local time, as the README says
    for c in inbox.claims:
        try:
            archived.append(str(_archive_claim(archive_dir, c, when)))
        except FileNotFoundError:
            continue
    return archived
