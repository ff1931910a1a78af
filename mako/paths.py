"""The runtime layout, and the rules for where model-chosen paths may be read and written (§6).

Writes go through `PathPolicy.write`: the path is checked lexically, then resolved with symlinks followed
and checked again, then opened by walking the *resolved* folders one at a time with O_NOFOLLOW, so a
symlink swapped in after the check makes the write fail instead of escaping.
"""

import fnmatch
import logging
import os
import shutil
import stat
import time
from pathlib import Path, PurePath, PurePosixPath

from .errors import PathRefused
from .fileio import DISPLACED, DIR_MODE, FILE_MODE, atomic_write, ensure_dir, fsync_dir, move_aside, write_all

STATE_SEEDS = ("MISSION.md", "CAPABILITIES.md", "STATE.md", "NEXT.md", "PERSONA.md")
CODE_NAMES = ("supervisor.py", "tick.py", "scribe.py", "digest.py", "analyse.py", "approve.py", "status.py",
              "install.sh", "mako-zero.service", "config.example.yaml", "requirements.txt")
CODE_DIRS = ("mako", "prompts", "seed", "tests", "bench", ".venv", "venv", ".git", ".ci")
# Files under state/ that only the wrapper (or the operator) writes.
STATE_PROTECTED = ("MISSION.md", "CAPABILITIES.md", "INBOX.md", "tick_counter.txt", "next_notes.json",
                   "compact_pending.flag", "PAUSED")
SECRET_NAME_PATTERNS = ("config.yaml", "config.yml", "*.pem", "*.key", "id_rsa*", "id_ed25519*", "id_ecdsa*",
                        ".env", ".netrc", ".git-credentials", "*.secret")
WRITE_MODES = ("write", "append")
WRITE_MAX_BYTES = 1024 * 1024  # one model write, by files[] or write_file


def check_size(content):
    """Refuse a model write over the 1 MB limit, counted in the bytes it would take on disk."""
    size = len(content.encode("utf-8", "replace"))
    if size > WRITE_MAX_BYTES:
        raise PathRefused(f"content is {size} bytes, over the {WRITE_MAX_BYTES} byte (1 MB) limit")

log = logging.getLogger(__name__)
# Files in state/ the wrapper reads or writes itself; the model may write some of them whole, never beneath.
STATE_FILES = STATE_SEEDS + ("JOURNAL.md", "LAST_RESULTS.md", "INBOX.md", "tick_counter.txt", "next_notes.json",
                             "compact_pending.flag")
PENDING_FILES = ("pending_actions.jsonl", "decisions.jsonl")
# The wrapper's own files in state/.mako/ (a folder on one of these names would stop whatever uses it).
PRIVATE_FILES = ("tick.lock", "tick_counter", "compact_failures", "queue_seq", "queue.lock", "spend.jsonl",
                 "spend.lock", "cooldowns.json", "opencode-session", "scribe_counter.txt", "scribe_counter.shadow",
                 "schedule.json", "approvals.db", "approvals.db-journal", "approvals_seen.json", "decisions.lock",
                 "health.json", "health.jsonl")
# Archived INBOX messages and journals: kept as the wrapper wrote them.
ARCHIVE_PREFIXES = ("inbox-", "journal-")


def layout_folders(p):
    """The wrapper's folders, each after its parent."""
    return (p.state, p.notes, p.workdir, p.archive, p.logs, p.pending, p.private, p.private / "inbox",
            p.state / "outbox", p.state / "outbox" / "blog", p.state / "outbox" / "blog" / "drafts",
            p.logs / "ticks", p.logs / "scribe")


def layout_files(p):
    """The files the wrapper reads or writes at fixed places."""
    return ([p.state / name for name in STATE_FILES] + [p.pending / name for name in PENDING_FILES]
            + [p.notes / "INDEX.md", p.logs / "metrics.csv"])


def inside(path, folder):
    """Whether `path` is `folder` or beneath it, comparing normalised paths part by part (the one
    containment check: a string prefix would take /srv/mako-zero-evil for /srv/mako-zero)."""
    return PurePath(os.path.normpath(path)).is_relative_to(os.path.normpath(folder))


def check_layout(cfg):
    """Move aside whatever stands on a wrapper path and is not what it should be; return what was moved.

    A folder must be a real folder (inside the root a symlink to one is not: a wrapper write must never
    follow a planted link out of the root), a file a regular file (never a folder, FIFO, device or link).
    Everything in state/.mako/ is the wrapper's, so every entry there is checked, INBOX claims included.
    Nothing is ever opened here, so a FIFO cannot hang the check.
    """
    p = cfg.paths
    moved = []

    def wrong(path, want_dir):
        try:
            st = os.lstat(path)
        except FileNotFoundError:
            return False
        except NotADirectoryError:
            return False  # its parent was wrong and has been moved aside already
        if stat.S_ISLNK(st.st_mode):
            if not inside(path, p.root):
                # Outside the root the operator placed it; only what it points at matters.
                try:
                    st = os.stat(path)
                except OSError:
                    return True
            else:
                return True
        return not (stat.S_ISDIR(st.st_mode) if want_dir else stat.S_ISREG(st.st_mode))

    def fix(path, want_dir, kind):
        if wrong(path, want_dir):
            aside = move_aside(path)
            moved.append(f"{_show(path, p.root)} was not a {kind}; moved aside to {aside.name}")

    for folder in layout_folders(p):
        fix(folder, True, "folder")
    for path in layout_files(p):
        fix(path, False, "regular file")
    # state/.mako/ and the INBOX claims in it are the wrapper's alone: nothing there is ever a link, a FIFO
    # or a device. A folder is left to whoever made it, unless it stands on a name the wrapper uses.
    for folder in (p.private, p.private / "inbox"):
        try:
            entries = [e for e in os.scandir(folder) if DISPLACED not in e.name]
        except (FileNotFoundError, NotADirectoryError):
            continue
        for e in entries:
            path = Path(e.path)
            if e.is_symlink() or not (e.is_file(follow_symlinks=False) or e.is_dir(follow_symlinks=False)):
                fix(path, False, "regular file")
            elif e.is_dir(follow_symlinks=False) and path != p.private / "inbox" and (
                    e.name in PRIVATE_FILES or folder != p.private):
                fix(path, False, "regular file")
    return moved


def _show(path, root):
    try:
        return str(Path(path).relative_to(root))
    except ValueError:
        return str(path)


def seed_pairs(p):
    """(seed file, state file it seeds) for every file a fresh root is seeded with."""
    return [(p.seed / name, p.state / name) for name in STATE_SEEDS] + [
        (p.seed / "notes" / "INDEX.md", p.notes / "INDEX.md")]


def ensure_layout(cfg):
    """Put right what stands wrongly on a wrapper path (see check_layout), create missing folders and seed
    missing state files from seed/ — never overwriting anything. Returns what was moved aside."""
    p = cfg.paths
    ensure_dir(p.root)
    moved = check_layout(cfg)
    for line in moved:
        log.warning("%s", line)  # whoever runs this (the supervisor at start-up too) leaves it in the log
    for d in layout_folders(p):
        ensure_dir(d)
    for src, dst in seed_pairs(p):
        _seed(src, dst)
    return moved


def _seed(src, dst):
    """Copy a seed file into place only if nothing is there, whole or not at all (temp file, then link)."""
    if dst.exists() or dst.is_symlink() or not src.is_file():
        return
    tmp = dst.with_name(f".{dst.name}.{os.getpid()}.seed.tmp")
    with open(tmp, "wb") as f:
        f.write(src.read_bytes())
        f.flush()
        os.fsync(f.fileno())
    os.chmod(tmp, 0o644)
    try:
        os.link(tmp, dst)  # fails if the operator created the file meanwhile: theirs wins
    except FileExistsError:
        pass
    finally:
        os.unlink(tmp)


SWEEP_STAMP = "temp_sweep"
SWEEP_EVERY_S = 3600


def sweep_due(cfg, now=None):
    """True when the last sweep for temp files (the stamp's mtime) is over SWEEP_EVERY_S old, or unknown.

    A sweep reads every name in notes/ and logs/ticks/, which grow for ever; once an hour is enough, since
    only temp files over an hour old are taken anyway."""
    now = time.time() if now is None else now
    try:
        st = os.lstat(cfg.paths.private / SWEEP_STAMP)
    except FileNotFoundError:
        return True
    return not (stat.S_ISREG(st.st_mode) and 0 <= now - st.st_mtime < SWEEP_EVERY_S)


def remove_stale_temp_files(cfg, max_age_s=3600):
    """Delete `.NAME.*.tmp` files a killed writer left behind in the wrapper's folders, then stamp the time."""
    p = cfg.paths
    cutoff = time.time() - max_age_s
    for folder in (p.state, p.private, p.notes, p.pending, p.logs, p.logs / "ticks", p.logs / "scribe"):
        try:
            entries = list(os.scandir(folder))
        except OSError:
            continue
        for e in entries:
            if e.name.startswith(".") and e.name.endswith(".tmp"):
                try:
                    if e.is_file(follow_symlinks=False) and e.stat(follow_symlinks=False).st_mtime < cutoff:
                        os.unlink(e.path)
                except OSError:
                    pass
    atomic_write(p.private / SWEEP_STAMP, "", durable=False)


class PathPolicy:
    """Decides whether a root-relative path may be written or read, and performs safe writes."""

    def __init__(self, cfg, compaction=False):
        self.cfg = cfg
        self.root = Path(os.path.realpath(cfg.paths.root))
        self.compaction = compaction
        self.writable = [PurePosixPath(os.path.normpath(w)) for w in cfg.guardrails.writable_paths]
        self.forbidden = [PurePosixPath(os.path.normpath(f)) for f in cfg.guardrails.forbidden_paths]

    # -- helpers ----------------------------------------------------------------------------------------

    def _lexical(self, rel):
        if not isinstance(rel, str) or not rel.strip():
            raise PathRefused("path must be a non-empty string")
        if "\x00" in rel:
            raise PathRefused("path contains a NUL byte")
        try:
            os.fsencode(rel)
        except UnicodeEncodeError:
            raise PathRefused("path is not valid text (a lone surrogate)") from None
        if rel.startswith("/") or rel.startswith("~") or os.path.isabs(rel):
            raise PathRefused(f"absolute path refused: {rel[:200]}")
        parts = PurePosixPath(rel).parts
        if ".." in parts:
            raise PathRefused(f"'..' in path refused: {rel[:200]}")
        norm = PurePosixPath(os.path.normpath(rel))
        if str(norm) in (".", ""):
            raise PathRefused("path names the root itself")
        return norm

    def _resolved_rel(self, norm):
        target = Path(os.path.realpath(self.root / norm))
        if not inside(target, self.root) or target == self.root:
            raise PathRefused(f"path resolves outside the root: {str(norm)[:200]}")
        return target, PurePosixPath(target.relative_to(self.root))

    def _absolute_protected(self, target):
        """Protected locations given by absolute paths in the config (prompts, config file, code)."""
        p = self.cfg.paths
        real = lambda x: Path(os.path.realpath(x))  # noqa: E731
        if target == real(self.cfg.path):
            return "the config file"
        if inside(target, real(p.prompts)):
            return "prompts/"
        code = real(p.code)
        if target.parent == code and (target.suffix == ".py" or target.name in CODE_NAMES):
            return "the code"
        for d in ("mako", "seed", ".venv"):
            if inside(target, code / d):
                return "the code"
        if inside(target, real(p.private)):
            return "state/.mako/ (wrapper bookkeeping)"
        return None

    def protected_reason(self, rel, target):
        """Why a resolved root-relative path is protected, or None."""
        parts = rel.parts
        top = parts[0]
        if len(parts) == 1 and (top.endswith(".py") or top in CODE_NAMES or top == "config.yaml"):
            return "the code or config"
        if top in CODE_DIRS:
            return f"{top}/ is code"
        reason = self._absolute_protected(target)
        if reason:
            return reason
        p = self.cfg.paths
        state = Path(os.path.realpath(p.state))
        # A wrapper file used as a folder (state/INBOX.md/x) would turn the file into a folder.
        for name in STATE_FILES:
            if state / name in target.parents:
                return f"state/{name} is a file of the wrapper's; nothing may be written beneath it"
        if state / "PAUSED" in target.parents:  # a folder at that name would pause the agent too
            return "state/PAUSED is the operator's pause switch"
        if target.parent == state:
            if target.name in STATE_PROTECTED:
                return f"state/{target.name} is the operator's or the wrapper's"
            if target.name == "JOURNAL.md" and not self.compaction:
                return "state/JOURNAL.md is append-only outside compaction"
        if Path(os.path.realpath(p.notes)) / "INDEX.md" in target.parents:
            return "notes/INDEX.md is a file; nothing may be written beneath it"
        pending = Path(os.path.realpath(p.pending))
        for name in PENDING_FILES:
            if inside(target, pending / name):
                return f"pending/{name} is the wrapper's record of approvals"
        archive = Path(os.path.realpath(p.archive))
        if archive in target.parents and target.relative_to(archive).parts[0].startswith(ARCHIVE_PREFIXES):
            return "archived INBOX messages and journals are kept as written"
        if inside(target, Path(os.path.realpath(p.logs))):
            return "logs/ is the wrapper's record"
        for f in self.forbidden:
            if inside(PurePosixPath(rel), f):
                return f"{f} is in guardrails.forbidden_paths"
        return None

    def check_write(self, rel):
        """Return the resolved absolute path for a permitted write, else raise PathRefused."""
        norm = self._lexical(rel)
        # Checked as written and as resolved: a symlink may hide a protected file behind an allowed name.
        reason = self.protected_reason(norm, Path(os.path.normpath(self.root / norm)))
        if reason:
            raise PathRefused(f"protected: {reason}")
        target, resolved = self._resolved_rel(norm)
        reason = self.protected_reason(resolved, target)
        if reason:
            raise PathRefused(f"protected: {reason}")
        if not any(inside(target, Path(os.path.realpath(self.root / w))) for w in self.writable):
            raise PathRefused(f"not under a writable path ({', '.join(map(str, self.writable))}): {rel[:200]}")
        if target.is_dir():
            raise PathRefused(f"path is a folder: {rel[:200]}")
        return target

    def check_read(self, rel):
        """Return the resolved absolute path of a readable file under the root, else raise PathRefused."""
        norm = self._lexical(rel)
        target, resolved = self._resolved_rel(norm)
        if target == Path(os.path.realpath(self.cfg.path)):
            raise PathRefused("config.yaml holds secrets and is never read by actions")
        for name in (norm.name, target.name):
            if any(fnmatch.fnmatch(name, pat) for pat in SECRET_NAME_PATTERNS):
                raise PathRefused(f"secret file refused: {rel[:200]}")
        if not target.is_file():
            raise PathRefused(f"no such file: {rel[:200]}")
        return target

    # -- writing ----------------------------------------------------------------------------------------

    def write(self, rel, content, mode="write"):
        """Write (atomically) or append `content` at `rel`; returns the number of bytes written."""
        if mode not in WRITE_MODES:
            raise PathRefused(f"mode must be one of {', '.join(WRITE_MODES)}, got {str(mode)[:40]!r}")
        if not isinstance(content, str):
            raise PathRefused("content must be a string")
        check_size(content)
        target = self.check_write(rel)
        data = content.encode("utf-8", "replace")
        dfd = self._open_dir_nofollow(target.parent)
        try:
            if mode == "append":
                fd = os.open(target.name, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_NOFOLLOW,
                             0o644, dir_fd=dfd)
                try:
                    if not stat.S_ISREG(os.fstat(fd).st_mode):
                        raise PathRefused("not a regular file")
                    write_all(fd, data)
                    os.fsync(fd)
                finally:
                    os.close(fd)
            else:
                tmp = f".{target.name}.{os.getpid()}.tmp"
                fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o644, dir_fd=dfd)
                try:
                    write_all(fd, data)
                    os.fsync(fd)
                finally:
                    os.close(fd)
                try:
                    os.replace(tmp, target.name, src_dir_fd=dfd, dst_dir_fd=dfd)
                except BaseException:
                    os.unlink(tmp, dir_fd=dfd)
                    raise
                os.fsync(dfd)
        except OSError as e:
            raise PathRefused(f"write failed: {e.strerror or e.__class__.__name__}") from None
        finally:
            os.close(dfd)
        return len(data)

    def _open_dir_nofollow(self, folder):
        """Open `folder` (resolved, under the root) by walking from the root with O_NOFOLLOW, creating it."""
        rel = folder.relative_to(self.root)
        fd = os.open(self.root, os.O_RDONLY | os.O_DIRECTORY)
        try:
            for part in rel.parts:
                try:
                    nfd = os.open(part, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW, dir_fd=fd)
                except FileNotFoundError:
                    os.mkdir(part, DIR_MODE, dir_fd=fd)
                    nfd = os.open(part, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW, dir_fd=fd)
                os.close(fd)
                fd = nfd
        except OSError as e:
            os.close(fd)
            raise PathRefused(f"folder changed under the write: {e.strerror}") from None
        return fd


def copy_file(src, dst):
    """Copy src to dst (dst must not exist); used for archiving."""
    ensure_dir(Path(dst).parent)
    shutil.copyfile(src, dst)
    os.chmod(dst, FILE_MODE)
    fsync_dir(Path(dst).parent)
