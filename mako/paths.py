"""The runtime layout, and the rules for where model-chosen paths may be read and written (§6).

Writes go through `PathPolicy.write`: the path is checked lexically, then resolved with symlinks followed
and checked again, then opened by walking the *resolved* folders one at a time with O_NOFOLLOW, so a
symlink swapped in after the check makes the write fail instead of escaping.
"""

import fnmatch
import os
import shutil
import stat
import time
from pathlib import Path, PurePosixPath

from .errors import PathRefused
from .fileio import DIR_MODE, FILE_MODE, ensure_dir, fsync_dir

STATE_SEEDS = ("MISSION.md", "CAPABILITIES.md", "STATE.md", "NEXT.md", "PERSONA.md")
CODE_NAMES = ("supervisor.py", "tick.py", "scribe.py", "digest.py", "analyse.py", "status.py", "install.sh",
              "mako-zero.service", "config.example.yaml", "requirements.txt")
CODE_DIRS = ("mako", "prompts", "seed", "tests", "bench", ".venv", "venv", ".git", ".ci")
# Files under state/ that only the wrapper (or the operator) writes.
STATE_PROTECTED = ("MISSION.md", "CAPABILITIES.md", "INBOX.md", "tick_counter.txt", "next_notes.json",
                   "compact_pending.flag", "PAUSED")
SECRET_NAME_PATTERNS = ("config.yaml", "config.yml", "*.pem", "*.key", "id_rsa*", "id_ed25519*", "id_ecdsa*",
                        ".env", ".netrc", ".git-credentials", "*.secret")
WRITE_MODES = ("write", "append")


def ensure_layout(cfg):
    """Create missing folders and seed missing state files from seed/ — never overwriting anything."""
    p = cfg.paths
    for d in (p.root, p.state, p.notes, p.workdir, p.archive, p.logs, p.pending, p.private,
              p.state / "outbox" / "blog" / "drafts", p.logs / "ticks", p.logs / "scribe"):
        ensure_dir(d)
    for name in STATE_SEEDS:
        _seed(p.seed / name, p.state / name)
    _seed(p.seed / "notes" / "INDEX.md", p.notes / "INDEX.md")


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


def remove_stale_temp_files(cfg, max_age_s=3600):
    """Delete `.NAME.*.tmp` files a killed writer left behind in the wrapper's folders."""
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


def _is_under(path, folder):
    return path == folder or folder in path.parents


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
        if not _is_under(target, self.root) or target == self.root:
            raise PathRefused(f"path resolves outside the root: {str(norm)[:200]}")
        return target, PurePosixPath(target.relative_to(self.root))

    def _absolute_protected(self, target):
        """Protected locations given by absolute paths in the config (prompts, config file, code)."""
        p = self.cfg.paths
        real = lambda x: Path(os.path.realpath(x))  # noqa: E731
        if target == real(self.cfg.path):
            return "the config file"
        if _is_under(target, real(p.prompts)):
            return "prompts/"
        code = real(p.code)
        if target.parent == code and (target.suffix == ".py" or target.name in CODE_NAMES):
            return "the code"
        for d in ("mako", "seed", ".venv"):
            if _is_under(target, code / d):
                return "the code"
        if _is_under(target, real(p.private)):
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
        state = Path(os.path.realpath(self.cfg.paths.state))
        if state / "PAUSED" in target.parents:  # a folder at that name would pause the agent too
            return "state/PAUSED is the operator's pause switch"
        if target.parent == state:
            if target.name in STATE_PROTECTED:
                return f"state/{target.name} is the operator's or the wrapper's"
            if target.name == "JOURNAL.md" and not self.compaction:
                return "state/JOURNAL.md is append-only outside compaction"
        if target == Path(os.path.realpath(self.cfg.paths.pending)) / "pending_actions.jsonl":
            return "the approval queue is the wrapper's"
        archive = Path(os.path.realpath(self.cfg.paths.archive))
        if target.parent == archive and target.name.startswith("inbox-"):
            return "archived INBOX messages are kept as written"
        for f in self.forbidden:
            if _is_under(PurePosixPath(rel), f):
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
        if not any(_is_under(target, Path(os.path.realpath(self.root / w))) for w in self.writable):
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
                    _write_all(fd, data)
                    os.fsync(fd)
                finally:
                    os.close(fd)
            else:
                tmp = f".{target.name}.{os.getpid()}.tmp"
                fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o644, dir_fd=dfd)
                try:
                    _write_all(fd, data)
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


def _write_all(fd, data):
    view = memoryview(data)
    while view:
        n = os.write(fd, view)
        view = view[n:]


def copy_file(src, dst):
    """Copy src to dst (dst must not exist); used for archiving."""
    ensure_dir(Path(dst).parent)
    shutil.copyfile(src, dst)
    os.chmod(dst, FILE_MODE)
    fsync_dir(Path(dst).parent)
