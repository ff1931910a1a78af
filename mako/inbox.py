"""The operator's INBOX (§7): claimed by rename at tick start, archived only after a tick succeeds.

The operator may write `state/INBOX.md` at any moment. A tick renames it into `state/.mako/inbox/`, so a
message written after that lands in a fresh INBOX.md for the next tick. Claims of a failed tick stay and
are shown again (oldest first) until a tick succeeds. Archiving is `link` then `unlink`: if a crash falls
between the two, the claim's link count (2) tells the next tick it is already archived. Only what the
model was shown is archived: the part of a long INBOX that the context cap cut stays for the next tick.
"""

import os
import time
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

from .fileio import atomic_write, ensure_dir, fsync_dir

MAX_INBOX_BYTES = 256 * 1024
SEPARATOR = "\n\n---\n\n"  # between claims in the text the model sees


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


def _existing_claims(paths):
    folder = claims_dir(paths)
    try:
        names = sorted(n for n in os.listdir(folder) if n.startswith("claim-") and n.endswith(".md"))
    except FileNotFoundError:
        return []
    out = []
    for name in names:
        path = folder / name
        try:
            st = os.lstat(path)
        except FileNotFoundError:
            continue
        if st.st_nlink > 1:
            # Archived (linked into archive/) by a tick that died before removing the claim.
            os.unlink(path)
            continue
        out.append(path)
    return out


def _read(path):
    with open(path, "rb") as f:
        return f.read(MAX_INBOX_BYTES)


def peek(paths):
    """What a claim would show now, without moving anything (for --dry-run)."""
    claims = [Claim(p, _read(p)) for p in _existing_claims(paths)]
    inbox = paths.state / "INBOX.md"
    try:
        data = _read(inbox)
    except (FileNotFoundError, IsADirectoryError):
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
        if not data.strip() and os.path.getsize(path) == len(data):
            os.unlink(path)  # an empty INBOX.md is not a message
            continue
        claims.append(Claim(path, data))
    return Inbox(claims)


def _archive_name(archive, when, n):
    base = f"inbox-{when:%Y%m%d-%H%M%S}"
    return archive / (f"{base}.md" if n == 1 else f"{base}-{n}.md")


def archive(paths, inbox, now=None):
    """Archive every claim that was shown; keep anything written to a claim after it was read."""
    archived = []
    archive_dir = ensure_dir(paths.archive)
    when = datetime.fromtimestamp(now if now is not None else time.time())  # local time, as the README says
    for c in inbox.claims:
        try:
            current = c.path.read_bytes()
        except FileNotFoundError:
            continue
        grown = len(current) > len(c.data) and current.startswith(c.data)
        n = 1
        while True:
            target = _archive_name(archive_dir, when, n)
            try:
                if grown:
                    fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
                    with os.fdopen(fd, "wb") as f:
                        f.write(c.data)
                        f.flush()
                        os.fsync(f.fileno())
                else:
                    os.link(c.path, target)
                break
            except FileExistsError:
                n += 1
        fsync_dir(archive_dir)
        if grown:
            atomic_write(c.path, current[len(c.data):])  # the unseen part waits for the next tick
        else:
            os.unlink(c.path)
        fsync_dir(c.path.parent)
        archived.append(str(target))
    return archived
