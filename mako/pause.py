"""The pause switch (§21): while `state/PAUSED` exists the supervisor starts no tick and no scribe run.

The operator writes it by hand (`echo reason > state/PAUSED`) or with `pause` from the chat, and removes it
(or says `resume`) to go on. Its first line is the reason shown by the supervisor and `status.py`.
"""

import os
import stat
from datetime import datetime, timezone

from .fileio import atomic_write, read_head

PAUSE_FILE = "PAUSED"
REASON_MAX_BYTES = 300


def pause_path(paths):
    return paths.state / PAUSE_FILE


def paused_reason(paths):
    """The reason the agent is paused ("paused" when none was given), or None when it is not paused."""
    path = pause_path(paths)
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return None
    data = b""
    # Anything at that name means paused; only a regular file is read (a FIFO would block the reader).
    if stat.S_ISREG(st.st_mode):
        try:
            data, _ = read_head(path, REASON_MAX_BYTES)
        except OSError:
            pass
    lines = data.decode("utf-8", "replace").strip().split("\n")
    reason = " ".join(lines[0].split()) if lines else ""
    return reason or "paused"


def pause(paths, reason, by):
    """Pause the agent, recording who asked and why; pausing again replaces the reason."""
    when = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    reason = " ".join(str(reason or "").split()) or "no reason given"
    atomic_write(pause_path(paths), f"{reason} (by {by}, {when})\n")


def resume(paths):
    """End the pause; False when the agent was not paused."""
    try:
        os.unlink(pause_path(paths))
    except FileNotFoundError:
        return False
    return True
