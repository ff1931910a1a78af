"""Running one child at a time for the supervisor (§4): its own process group, a timeout, and a clean stop.

A child is started with no shell and `start_new_session=True`, so it leads its own process group: at its
timeout, or when the supervisor is told to stop, the whole group gets SIGTERM, a short grace, then SIGKILL,
which also takes any grandchild the run left behind. Standard output and error are inherited, so the
child's lines reach journald beside the supervisor's own.

Waiting never spins: the supervisor blocks in select() on a pidfd for the child (where the kernel has
pidfds) and on a self-pipe that SIGTERM/SIGINT write to, so a stop request wakes it at once, idle or not.
"""

import os
import select
import signal
import subprocess
import tempfile
import time

from .config import SECRET_ENV
from .redact import SCRUB_MARGIN, clip

TIMEOUT = "TIMEOUT"
STOPPED = "STOPPED"
KILL_GRACE_S = 5.0
# Without pidfds the wait falls back to polling the child this often; never used on current Linux.
POLL_S = 0.2
SECRET_ENV_NAMES = frozenset(SECRET_ENV.values())


class StopSignal:
    """SIGTERM/SIGINT turn into a flag plus a byte on a pipe, so any select() on the pipe wakes at once."""

    def __init__(self):
        self.read_fd, self.write_fd = os.pipe()
        os.set_blocking(self.read_fd, False)
        os.set_blocking(self.write_fd, False)
        self.signum = None

    def install(self):
        """Route SIGTERM and SIGINT here; must be called from the main thread."""
        signal.set_wakeup_fd(self.write_fd, warn_on_full_buffer=False)
        for signum in (signal.SIGTERM, signal.SIGINT):
            signal.signal(signum, self._handle)

    def _handle(self, signum, frame):
        self.signum = signum

    def request(self, signum=signal.SIGTERM):
        """Ask for a stop without a signal (the same effect as receiving `signum`)."""
        self.signum = signum
        try:
            os.write(self.write_fd, b"\0")
        except BlockingIOError:
            pass

    @property
    def requested(self):
        return self.signum is not None

    @property
    def name(self):
        return signal.Signals(self.signum).name if self.signum else ""

    def drain(self):
        try:
            while os.read(self.read_fd, 512):
                pass
        except (BlockingIOError, InterruptedError):
            pass

    def sleep(self, seconds):
        """Sleep up to `seconds`, returning early (True) when a stop is requested."""
        if self.requested:
            return True
        if seconds > 0:
            select.select([self.read_fd], [], [], seconds)
            self.drain()
        return self.requested


def _pidfd(pid):
    try:
        return os.pidfd_open(pid)
    except (AttributeError, OSError):
        return None


def wait_exit(proc, seconds, stop=None):
    """Wait up to `seconds` for `proc` to exit; True if it did. Returns early (False) on a stop request."""
    deadline = time.monotonic() + seconds
    pidfd = _pidfd(proc.pid)
    try:
        while True:
            if proc.poll() is not None:
                return True
            if stop is not None and stop.requested:
                return False
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return False
            fds = [stop.read_fd] if stop is not None else []
            if pidfd is not None:
                fds.append(pidfd)
            else:
                remaining = min(remaining, POLL_S)
            if fds:
                select.select(fds, [], [], remaining)
            else:
                time.sleep(remaining)
            if stop is not None:
                stop.drain()
    finally:
        if pidfd is not None:
            os.close(pidfd)


def signal_group(pgid, signum):
    """Send `signum` to a process group; a group that is already gone is not an error."""
    try:
        os.killpg(pgid, signum)
    except (ProcessLookupError, PermissionError):
        pass


def kill_group(proc, grace_s):
    """SIGTERM the child's group, give it `grace_s` to exit, then SIGKILL whatever is left of the group."""
    signal_group(proc.pid, signal.SIGTERM)
    wait_exit(proc, grace_s)
    # Always: the leader may have exited on SIGTERM while a grandchild in its group ignored it.
    signal_group(proc.pid, signal.SIGKILL)
    proc.wait()


class ChildRunner:
    """Runs one child to completion, timeout or stop: `runner(label, argv, timeout_s) -> rc`.

    The result is the exit code (negative for a signal, as subprocess reports it), TIMEOUT when the run was
    killed at its timeout, or STOPPED when the supervisor was asked to stop while it ran.
    """

    def __init__(self, stop, stop_grace_s=10.0, kill_grace_s=KILL_GRACE_S, say=print, env=None):
        self.stop = stop
        self.stop_grace_s = stop_grace_s
        self.kill_grace_s = kill_grace_s
        self.say = say
        self.env = env

    def __call__(self, label, argv, timeout_s):
        proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, start_new_session=True, close_fds=True,
                                env=self.env)
        try:
            if wait_exit(proc, timeout_s, self.stop):
                return proc.returncode
            if self.stop.requested:
                self.say(f"{label}: stopping (SIGTERM to its process group, {self.stop_grace_s:g}s grace)")
                kill_group(proc, self.stop_grace_s)
                return STOPPED
            self.say(f"{label}: timed out after {timeout_s:g}s, killing its process group")
            kill_group(proc, min(self.kill_grace_s, self.stop_grace_s))
            return TIMEOUT
        except BaseException:
            signal_group(proc.pid, signal.SIGKILL)
            proc.wait()
            raise


# -- commands run for actions (shell, git) ------------------------------------------------------------

def child_env(extra=None):
    """The wrapper's environment minus its secrets (they live in config-overriding env vars)."""
    env = {k: v for k, v in os.environ.items() if k not in SECRET_ENV_NAMES}
    env.update(extra or {})
    return env


def run_process(argv, cwd, env, timeout, max_bytes, redactor):
    """Run argv in its own session; output to temp files; kill the group at the timeout.

    Returns exit_code (None when killed), timed_out, and each stream scrubbed and clipped.
    """
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        proc = subprocess.Popen(argv, cwd=cwd, env=env, stdin=subprocess.DEVNULL, stdout=out, stderr=err,
                                start_new_session=True, close_fds=True)
        timed_out = False
        try:
            code = proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            timed_out = True
            signal_group(proc.pid, signal.SIGKILL)
            proc.wait()
            code = None
        except BaseException:
            # SIGTERM from the supervisor (or anything else) mid-command: never leave the group behind.
            signal_group(proc.pid, signal.SIGKILL)
            proc.wait()
            raise
        result = {"exit_code": code, "timed_out": timed_out}
        for name, f in (("stdout", out), ("stderr", err)):
            # A background child may still be writing: take a snapshot of what is there now.
            f.seek(0, os.SEEK_END)
            size = f.tell()
            f.seek(0)
            data = f.read(min(size, max_bytes + SCRUB_MARGIN))
            result[name], result[f"{name}_truncated"] = clip(redactor, data, max_bytes, max(size, len(data)))
        return result
