"""Reading logs/metrics.csv into columns, and the statistics the digest and analyse both report.

The file is read once and kept as one list of strings per column, so a year of 5-minute ticks (~105k rows)
loads and summarises in a fraction of a second. Cells are parsed only when a figure needs them, and a cell
that does not parse (junk, a half-written row) counts as unknown instead of failing the report. A row whose
`ts` cannot be read cannot be placed in time: it is left out of every figure and counted in `skipped`.

Percentiles use the **nearest-rank** definition: for n sorted values and 0 < p <= 100, the p-th percentile
is the value at rank ceil(p/100 * n) (1-based), so it is always one of the observed values. p50 of
1..10 is 5, p95 of 1..10 is 10, p95 of 1..20 is 19, p99 of 1..200 is 198.
"""

import csv
import gc
import io
import math
import os
from collections import Counter
from dataclasses import dataclass
from datetime import datetime, timezone
from fractions import Fraction

from .fileio import lines_from_end, open_regular, read_head
from .logs import METRICS_COLUMNS

BAR = "█"
_fromiso = datetime.fromisoformat
# A quoted field may hold a newline (csv.writer quotes it); beyond this many lines an open quote is junk.
MAX_RECORD_LINES = 50
# A tail read gives up here (a year of 5-minute ticks is about 20 MB).
TAIL_MAX_BYTES = 64 * 1024 * 1024
HEADER_MAX_BYTES = 4096


@dataclass
class Table:
    """metrics.csv as columns: only rows with a readable `ts`, in file order."""

    header: list
    columns: dict
    ts: list
    skipped: int = 0
    blank: int = 0

    def __len__(self):
        return len(self.ts)

    def col(self, name):
        """The column's cells as strings; a column the file does not have reads as all unknown."""
        values = self.columns.get(name)
        return values if values is not None else [""] * len(self.ts)

    def select(self, indices):
        """A Table of the rows at `indices` (in that order)."""
        return Table(header=self.header, ts=[self.ts[i] for i in indices],
                     columns={k: [v[i] for i in indices] for k, v in self.columns.items()})


# -- reading ---------------------------------------------------------------------------------------------

def parse_ts(text):
    """An aware UTC datetime from an ISO 8601 cell, or None. A naive time is taken as UTC."""
    try:
        dt = _fromiso(text)
    except ValueError:
        # Python 3.10 reads neither a trailing Z nor surrounding blanks.
        text = text.strip()
        if text[-1:] in ("Z", "z"):
            text = text[:-1] + "+00:00"
        try:
            dt = _fromiso(text)
        except ValueError:
            return None
    except TypeError:
        return None
    if dt.tzinfo is None:
        return dt.replace(tzinfo=timezone.utc)
    return dt.astimezone(timezone.utc) if dt.utcoffset() else dt


def _parse_line(line):
    try:
        return next(csv.reader([line]), [])
    except csv.Error:
        return line.split(",")


def _records(lines, width):
    """Yield the cells of each record. Lines without a quote are split directly (the common, fast case).

    Records are re-assembled across lines only while a quote is open and only when the result has the
    header's width: a row cut by a crash mid-append leaves an open quote that must not swallow the rows
    written after it.
    """
    i, n = 0, len(lines)
    while i < n:
        line = lines[i]
        i += 1
        if '"' not in line:
            yield line.split(",")
            continue
        if line.count('"') % 2:
            buf, j = line, i
            while j < n and j - i < MAX_RECORD_LINES:
                buf += "\n" + lines[j]
                j += 1
                if buf.count('"') % 2 == 0:
                    row = _parse_line(buf)
                    if len(row) == width:
                        i = j
                        yield row
                        buf = None
                    break
            if buf is None:
                continue
        yield _parse_line(line)


def _header(first):
    """The header named by the first record, or None when the file starts with a data row (header lost)."""
    if first and parse_ts(first[0]):
        return None
    return [h.strip() for h in first]


def _careful_rows(text):
    lines = text.split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    lines = [ln[:-1] if ln.endswith("\r") else ln for ln in lines]
    if not lines:
        return [], list(METRICS_COLUMNS)
    header = _header(_parse_line(lines[0]))
    if header is None:
        header = list(METRICS_COLUMNS)
    else:
        lines = lines[1:]
    return list(_records(lines, len(header))), header


def _fast_rows(text):
    """All records through the csv module in one pass, or None when any row is ragged or unparsable."""
    try:
        rows = list(csv.reader(io.StringIO(text, newline="")))
    except csv.Error:
        return None
    if not rows:
        return [], list(METRICS_COLUMNS)
    header = _header(rows[0])
    if header is None:
        header = list(METRICS_COLUMNS)
    else:
        rows = rows[1:]
    width = len(header)
    if any(len(r) != width for r in rows if r):
        return None
    return rows, header


def read_table(path):
    """Read metrics.csv at `path` into a Table. Raises FileNotFoundError when there is no file."""
    with open_regular(path) as f:  # a FIFO there must not hang the report
        raw = f.read()
    return parse_table(raw)


def read_table_since(path, since, max_bytes=TAIL_MAX_BYTES):
    """The rows of metrics.csv from `since` on (and perhaps a few before), read from the file's end back to
    the first row older than `since` (or `max_bytes`): a day's digest costs a day of rows, not the file.
    Raises FileNotFoundError when there is no file."""
    if not os.path.exists(path):
        raise FileNotFoundError(path)
    lines, whole = [], os.path.getsize(path) <= max_bytes
    for line in lines_from_end(path, max_bytes):
        lines.append(line)
        stamp = parse_ts(line.split(b",", 1)[0].decode("ascii", "replace")) if line[:1].isdigit() else None
        if stamp is not None and stamp < since:
            whole = False
            break
    lines.reverse()
    if not whole:
        lines.insert(0, read_head(path, HEADER_MAX_BYTES)[0].split(b"\n", 1)[0])
    return parse_table(b"\n".join(lines))


def parse_table(raw):
    """A Table from the bytes of a metrics file (a header line, then rows)."""
    text = raw.decode("utf-8", "replace").replace("\x00", "")
    if text.startswith("\ufeff"):
        text = text[1:]
    # A well-formed file goes through the csv module in C; anything ragged is re-read line by line so
    # one bad row cannot take the rows after it down with it. The cyclic collector is paused meanwhile:
    # millions of new cell strings would otherwise trigger it over and over for nothing (no cycles here).
    collecting = gc.isenabled()
    gc.disable()
    try:
        parsed = _fast_rows(text)
        rows, header = parsed if parsed is not None else _careful_rows(text)
        return _table(rows, header)
    finally:
        if collecting:
            gc.enable()


def _table(rows, header):
    """Drop blank and undated rows, square the rest to the header, and turn them into columns."""
    width = len(header)
    ts_at = header.index("ts") if "ts" in header else None

    blank = sum(1 for r in rows if not r or (len(r) == 1 and not r[0].strip()))
    if blank:
        rows = [r for r in rows if r and not (len(r) == 1 and not r[0].strip())]
    if ts_at is None:
        stamps = [None] * len(rows)
    else:
        stamps = [parse_ts(r[ts_at]) if ts_at < len(r) else None for r in rows]
    skipped = stamps.count(None)
    if skipped:
        keep = [i for i, s in enumerate(stamps) if s is not None]
        rows = [rows[i] for i in keep]
        stamps = [stamps[i] for i in keep]
    if any(len(r) != width for r in rows):
        rows = [r if len(r) == width else (r + [""] * width)[:width] for r in rows]

    columns = {}
    if rows:
        for name, values in zip(header, zip(*rows)):
            columns.setdefault(name, list(values))
    for name in header:
        columns.setdefault(name, [])
    return Table(header=header, columns=columns, ts=stamps, skipped=skipped, blank=blank)


# -- cells -----------------------------------------------------------------------------------------------

def to_float(cell):
    """A finite float from a cell, or None for empty / junk / nan / inf."""
    try:
        value = float(cell)
    except (TypeError, ValueError):
        return None
    return value if math.isfinite(value) else None


def numbers(cells):
    """The finite numbers among `cells` (unknown cells left out)."""
    try:
        out = [float(cell) for cell in cells if cell]
    except ValueError:
        out = [v for v in map(to_float, cells) if v is not None]
    if not all(map(math.isfinite, out)):
        out = [v for v in out if math.isfinite(v)]
    return out


def total(cells):
    """(sum, how many cells were known) of a numeric column."""
    values = numbers(cells)
    return sum(values), len(values)


def is_true(cell):
    return cell.strip().lower() == "true"


def is_false(cell):
    return cell.strip().lower() == "false"


def count_if(cells, test):
    """How many cells pass `test`, testing each distinct value once (columns repeat a few values)."""
    return sum(n for value, n in Counter(cells).items() if test(value))


def counts(cells, empty="(none)"):
    """[(value, count)] most common first, ties by value; blank cells are named `empty`."""
    folded = Counter()
    for value, count in Counter(cells).items():
        folded[value.strip() or empty] += count
    return sorted(folded.items(), key=lambda kv: (-kv[1], kv[0]))


# -- statistics ------------------------------------------------------------------------------------------

def percentile(sorted_values, p):
    """Nearest-rank percentile of an ascending list (see the module docstring); None when empty."""
    n = len(sorted_values)
    if not n:
        return None
    if p <= 0:
        return sorted_values[0]
    rank = math.ceil(Fraction(str(p)) * n / 100)
    return sorted_values[min(max(rank, 1), n) - 1]


@dataclass
class Summary:
    n: int
    mean: float
    p50: float
    p95: float
    p99: float
    min: float
    max: float
    values: list  # sorted ascending


def summarize(values):
    """Mean, p50/p95/p99, min and max of `values` (sorted once); None when there are none."""
    if not values:
        return None
    s = sorted(values)
    return Summary(n=len(s), mean=math.fsum(s) / len(s), p50=percentile(s, 50), p95=percentile(s, 95),
                   p99=percentile(s, 99), min=s[0], max=s[-1], values=s)


def histogram(sorted_values, bins=10, width=40, fmt="{:.1f}"):
    """Text histogram lines of equal-width bins from min to max, bars of █ scaled to the fullest bin."""
    if not sorted_values:
        return []
    lo, hi = sorted_values[0], sorted_values[-1]
    if hi == lo:
        bins = 1
    step = (hi - lo) / bins if bins > 1 else 1.0
    tally = [0] * bins
    last = bins - 1
    for v in sorted_values:
        k = int((v - lo) / step) if bins > 1 else 0
        tally[k if k < last else last] += 1
    n, peak = len(sorted_values), max(tally)
    edges = [fmt.format(lo + k * step) for k in range(bins)] + [fmt.format(hi)]
    left = max(len(e) for e in edges)
    lines = []
    for k, count in enumerate(tally):
        bar = BAR * round(width * count / peak) if count else ""
        closing = "]" if k == last else ")"
        lines.append(f"  [{edges[k]:>{left}} – {edges[k + 1]:>{left}}{closing} {bar:<{width}} "
                     f"{count:>7,} {100 * count / n:5.1f}%")
    return lines


def pct(part, whole):
    return 100.0 * part / whole if whole else 0.0


def fmt_int(x):
    return f"{round(x):,}"
