"""Run counters that never go back: the tick counter (§5 step 2) and the scribe's own counter.

The number is kept twice — the visible `state/tick_counter.txt` and a shadow in `state/.mako/` — and the
next number is one past the highest of both and of the highest run recorded in the logs, so neither a
corrupt counter nor a state/ restored from an old backup ever makes a run reuse a number.
"""

import os
import re

from .fileio import atomic_write, tail_lines

NUMBER_RE = re.compile(r"^\s*(\d{1,12})\s*$")
PAYLOAD_RE = re.compile(r"^(\d{8,12})\.json$")
ERROR_RE = re.compile(r"^error-(\d{1,12})\.log$")


def _read_number(path):
    try:
        with open(path, "rb") as f:
            m = NUMBER_RE.match(f.read(64).decode("ascii", "replace"))
    except (FileNotFoundError, IsADirectoryError, PermissionError):
        return None
    return int(m.group(1)) if m else None


def _highest_logged(folders, metrics=None):
    """The highest run number named by a payload or error-N.log in `folders`, or in metrics.csv's tail."""
    best = 0
    for folder in folders:
        try:
            names = os.listdir(folder)
        except FileNotFoundError:
            continue
        for name in names:
            m = PAYLOAD_RE.match(name) or ERROR_RE.match(name)
            if m:
                best = max(best, int(m.group(1)))
    if metrics is not None:
        for line in tail_lines(metrics, 50):
            cells = line.split(",")
            if len(cells) > 1 and cells[1].isdigit():
                best = max(best, int(cells[1]))
    return best


def next_number(visible, shadow, log_folders, metrics=None):
    """Bump and persist the counter; return the new number (written to both files before use)."""
    known = [v for v in (_read_number(visible), _read_number(shadow)) if v is not None]
    # The logs outlive state/ (a restored backup, a hand edit): a number they show is taken.
    known.append(_highest_logged(log_folders, metrics))
    n = max(known) + 1
    atomic_write(shadow, f"{n}\n")
    atomic_write(visible, f"{n}\n", mode=0o644)
    return n


def next_tick(paths):
    # Tick payloads live in logs/ticks/, their error-N.log files in logs/.
    return next_number(paths.state / "tick_counter.txt", paths.private / "tick_counter",
                       (paths.logs / "ticks", paths.logs), paths.logs / "metrics.csv")


def next_scribe(paths):
    return next_number(paths.private / "scribe_counter.txt", paths.private / "scribe_counter.shadow",
                       (paths.logs / "scribe",))
