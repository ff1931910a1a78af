"""Crash-safe file primitives: atomic whole-file writes, single-write appends, tail reads, flock locks.

Every file the wrapper creates is mode 0600 and every folder 0700 (logs and state may hold model output
that quotes private material).
"""

import errno
import fcntl
import logging
import os
import stat
import tempfile
import time
from pathlib import Path

FILE_MODE = 0o600
DIR_MODE = 0o700
DISPLACED = ".displaced-"

log = logging.getLogger(__name__)


def ensure_dir(path):
    path = Path(path)
    path.mkdir(mode=DIR_MODE, parents=True, exist_ok=True)
    return path


def _bytes(data):
    # backslashreplace: a lone surrogate from a model reply still leaves the file valid UTF-8.
    return data.encode("utf-8", "backslashreplace") if isinstance(data, str) else bytes(data)


def displace(path):
    """Move aside whatever stands at `path` if it is not a regular file (a planted symlink, a folder).

    The wrapper's own files must stay writable whatever a shell action did to them; returns the new
    name of what was moved, or None.
    """
    path = Path(path)
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return None
    if stat.S_ISREG(st.st_mode):
        return None
    return move_aside(path)


def move_aside(path):
    """Rename `path` (whatever it is) to a fresh `<name>.displaced-<ns>` beside it; return the new path."""
    path = Path(path)
    aside = path.with_name(f"{path.name}{DISPLACED}{time.time_ns()}")
    os.rename(path, aside)
    return aside


def make_room(path):
    """Before the wrapper writes one of its files: whatever else stands there is moved aside, and said so."""
    aside = displace(path)
    if aside:
        log.warning("%s was not a regular file; moved aside to %s", path, aside.name)


def atomic_write(path, data, mode=FILE_MODE, durable=True):
    """Replace `path` with `data` (str or bytes): temp file in the same folder, fsync, rename, fsync dir.

    The file is always fsynced before the rename, so a crash leaves the old or the new content, never a
    torn one. `durable=False` skips the folder fsync for records that may be lost in a power cut without
    harm (the payload, LAST_RESULTS): the rename is still atomic.
    """
    path = Path(path)
    ensure_dir(path.parent)
    make_room(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(_bytes(data))
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
    if durable:
        fsync_dir(path.parent)


def fsync_dir(path):
    try:
        fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def numbered_names(folder, base, ext=".md", limit=None):
    """`base.md`, `base-2.md`, `base-3.md`, ... in `folder`: the candidates, in order, for a file that must
    never overwrite one already there (the caller creates it exclusively and moves on when it exists)."""
    n = 1
    while limit is None or n <= limit:
        yield Path(folder) / (f"{base}{ext}" if n == 1 else f"{base}-{n}{ext}")
        n += 1


def write_all(fd, data):
    """Write every byte of `data` to `fd`: a short write (a signal, a nearly full disk) is finished, never
    left as a torn record."""
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]


def append(path, data, mode=FILE_MODE, sync=True):
    """Append `data` with one write() on an O_APPEND descriptor, so concurrent appends never interleave.

    O_NOFOLLOW: the wrapper's own history files are never written through a symlink someone planted.
    """
    path = Path(path)
    ensure_dir(path.parent)
    make_room(path)
    raw = _bytes(data)
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_NOFOLLOW | os.O_NONBLOCK, mode)
    try:
        write_all(fd, raw)
        if sync:
            os.fsync(fd)
    finally:
        os.close(fd)


class NotRegularFile(OSError):
    """A path that should hold a file holds something else (a folder, a FIFO, a device)."""


def open_regular(path):
    """Open `path` for reading as a binary file object, only if it is a regular file.

    O_NONBLOCK: a FIFO planted where a file should be must not hang the reader (the flag is dropped once
    the file is known to be regular). A folder or anything else raises NotRegularFile.
    """
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise NotRegularFile(errno.EINVAL, "not a regular file", str(path))
        os.set_blocking(fd, True)
        return os.fdopen(fd, "rb")
    except BaseException:
        os.close(fd)
        raise


def read_text(path, default=""):
    """The file's text (undecodable bytes replaced), or `default` if there is no regular file there."""
    try:
        with open_regular(path) as f:
            return f.read().decode("utf-8", "replace")
    except (FileNotFoundError, IsADirectoryError, NotRegularFile):
        return default


def read_head(path, max_bytes):
    """Up to max_bytes from the start of the file, and whether the file was longer."""
    with open_regular(path) as f:
        data = f.read(max_bytes + 1)
    return data[:max_bytes], len(data) > max_bytes


def split_records(data):
    """The lines of a line-oriented file's bytes, split at b"\n" only, decoded.

    Never str.splitlines(): it also splits at U+2028, U+0085, \x1c and others a record may hold.
    """
    lines = data.split(b"\n")
    if lines and lines[-1] == b"":
        lines.pop()
    return [line[:-1].decode("utf-8", "replace") if line.endswith(b"\r") else line.decode("utf-8", "replace")
            for line in lines]


def tail_lines(path, n, block=65536):
    """The last `n` lines of a text file, read backwards from the end: cost does not grow with file size."""
    if n <= 0:
        return []
    try:
        f = open_regular(path)
    except (FileNotFoundError, IsADirectoryError, NotRegularFile):
        return []
    with f:
        f.seek(0, os.SEEK_END)
        pos = f.tell()
        data = b""
        while pos > 0 and data.count(b"\n") <= n:
            step = min(block, pos)
            pos -= step
            f.seek(pos)
            data = f.read(step) + data
    return split_records(data)[-n:]


def lines_from_end(path, max_bytes=None, block=65536):
    """Yield the file's lines as bytes, newest first, reading backwards in blocks: a reader that stops
    early costs what it read, whatever the file's size. After `max_bytes`, stops (the oldest line read
    may then be partial and is not yielded). A missing file yields nothing."""
    try:
        f = open_regular(path)
    except (FileNotFoundError, NotRegularFile):
        return
    with f:
        pos = size = f.seek(0, os.SEEK_END)
        rest = b""
        while pos > 0:
            if max_bytes is not None and size - pos >= max_bytes:
                return
            step = min(block, pos)
            pos -= step
            f.seek(pos)
            lines = (f.read(step) + rest).split(b"\n")
            rest = lines[0]
            yield from reversed(lines[1:])
        yield rest


class FileLock:
    """An exclusive, non-blocking flock on a lock file; released when the process dies, whatever the death."""

    def __init__(self, path):
        self.path = Path(path)
        self.fd = None

    def acquire(self):
        """Take the lock; return False if another process holds it."""
        ensure_dir(self.path.parent)
        make_room(self.path)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_NONBLOCK, FILE_MODE)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as e:
            os.close(fd)
            if e.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                return False
            raise
        self.fd = fd
        return True

    def release(self):
        if self.fd is not None:
            try:
                fcntl.flock(self.fd, fcntl.LOCK_UN)
            finally:
                os.close(self.fd)
                self.fd = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.release()
