"""Run counters that never go back: the tick counter (§5 step 2) and the scribe's own counter.

The number is kept twice — the visible `state/tick_counter.txt` and a shadow in `state/.mako/` — and the
next number is one past the highest of both and of the highest run recorded in the logs, so neither a
corrupt counter nor a state/ restored from an old backup ever makes a run reuse a number.
"""

import csv
import os
import re

from .fileio import NotRegularFile, atomic_write, displace, open_regular, tail_lines

# ASCII digits only: str.isdigit() and \d also take "²" or "٣", which a model can put in any text field.
NUMBER_RE = re.compile(r"[ \t\r\n]*([0-9]{1,12})[ \t\r\n]*", re.ASCII)
PAYLOAD_RE = re.compile(r"([0-9]{8,12})\.json", re.ASCII)
ERROR_RE = re.compile(r"error-([0-9]{1,12})\.log", re.ASCII)
TICK_CELL_RE = re.compile(r"[0-9]{1,12}", re.ASCII)


def read_number(path):
    """The whole number a small counter file holds, or None when it is missing, not a file or not a number."""
    try:
        with open_regular(path) as f:
            m = NUMBER_RE.fullmatch(f.read(64).decode("ascii", "replace"))
    except (FileNotFoundError, IsADirectoryError, PermissionError, NotRegularFile):
        return None
    return int(m.group(1)) if m else None


def metrics_tick_numbers(lines):
    """The tick numbers in metrics.csv lines (the second cell), read with the csv module; junk is skipped."""
    try:
        rows = list(csv.reader(lines))
    except csv.Error:
        rows = []
    return [int(row[1]) for row in rows if len(row) > 1 and TICK_CELL_RE.fullmatch(row[1])]


def _highest_logged(folders, metrics=None):
    """The highest run number named by a payload or error-N.log in `folders`, or in metrics.csv's tail."""
    best = 0
    for folder in folders:
        try:
            names = os.listdir(folder)
        except FileNotFoundError:
            continue
        for name in names:
            m = PAYLOAD_RE.fullmatch(name) or ERROR_RE.fullmatch(name)
            if m:
                best = max(best, int(m.group(1)))
    if metrics is not None:
        best = max([best, *metrics_tick_numbers(tail_lines(metrics, 50))])
    return best


def next_number(visible, shadow, log_folders, metrics=None):
    """Bump and persist the counter; return the new number (written to both files before use)."""
    known = [v for v in (read_number(visible), read_number(shadow)) if v is not None]
    # The logs outlive state/ (a restored backup, a hand edit): a number they show is taken.
    known.append(_highest_logged(log_folders, metrics))
    n = max(known) + 1
    # Whatever stands where a counter file should be (a folder, a FIFO, a link) is moved aside, not followed.
    for path in (shadow, visible):
        displace(path)
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
