"""The open-items index of the approval queue (§19): a small SQLite file in `state/.mako/`.

`pending/pending_actions.jsonl` and `pending/decisions.jsonl` are append-only and may grow for years, so
nothing reads them whole on a tick. The index remembers how far into each file it has read (by device,
inode and byte offset) and, on every open, reads only the complete lines appended since. It is rebuilt from
both files when it is missing, unreadable, or a file was replaced or shortened. It is only ever a cache of
the two files: deleting it loses nothing.

A file that vanished after the index had read lines from it is not taken as "empty": that would make every
decided item open again and let it run twice. The index keeps what it knew and reports the file as
missing until it is back (a restored copy, or an empty one the operator created to start afresh).
"""

import json
import os
import re
import sqlite3
import stat
import time
from contextlib import closing
from datetime import datetime, timezone

from .approvals import FALLBACK_FIELDS, KEY_FIELDS, QUEUE_FILE, cut
from .fileio import displace

DECISIONS_FILE = "decisions.jsonl"
INDEX_FILE = "approvals.db"
VERSION = "3"
FINAL = ("approved", "rejected", "done")
BUSY_TIMEOUT_S = 30.0
QID_RE = re.compile(r"q([1-9][0-9]{0,17})")

SCHEMA = (
    "CREATE TABLE meta(k TEXT PRIMARY KEY, v TEXT)",
    """CREATE TABLE items(n INTEGER PRIMARY KEY, qid TEXT, off INTEGER, sha TEXT, type TEXT, queued_at TEXT,
                          queued_ts REAL, tick INTEGER, summary TEXT, state TEXT, ok INTEGER, decided_ts REAL)""",
    "CREATE INDEX items_state ON items(state, n)",
    "CREATE INDEX items_sha ON items(sha, state)",
    "CREATE INDEX items_decided ON items(decided_ts)",
    "CREATE TABLE dlines(off INTEGER PRIMARY KEY, qid TEXT)",
    "CREATE INDEX dlines_qid ON dlines(qid)",
    # Items per state, kept by triggers: the open count costs the same whatever the queue's size.
    "CREATE TABLE counts(state TEXT PRIMARY KEY, n INTEGER)",
    """CREATE TRIGGER items_counted AFTER INSERT ON items BEGIN
           INSERT OR IGNORE INTO counts VALUES (NEW.state, 0);
           UPDATE counts SET n = n + 1 WHERE state = NEW.state;
       END""",
    """CREATE TRIGGER items_recounted AFTER UPDATE OF state ON items WHEN OLD.state != NEW.state BEGIN
           UPDATE counts SET n = n - 1 WHERE state = OLD.state;
           INSERT OR IGNORE INTO counts VALUES (NEW.state, 0);
           UPDATE counts SET n = n + 1 WHERE state = NEW.state;
       END""",
)


def parse_time(text):
    """Epoch seconds of an ISO 8601 time (naive taken as UTC), or None."""
    if not isinstance(text, str) or not text.strip():
        return None
    try:
        value = datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    except ValueError:
        return None
    if value.tzinfo is None:
        return value.replace(tzinfo=timezone.utc).timestamp()
    return value.timestamp()


def key_summary(kind, action, see):
    """The action's key fields on one line (`to: a@b.c · subject: Hi`), as `approve.py list` shows them:
    nothing hidden (`cut` shows every invisible character), a long one cut with where to read it whole."""
    if not isinstance(action, dict):
        return ""
    fields = KEY_FIELDS.get(kind)
    if fields is None:
        fields = next(((f,) for f in FALLBACK_FIELDS if f in action), ())
    return " · ".join(f"{name}: {cut(action[name], 80, see)}" for name in fields if name in action)


def qnum(qid):
    """N of a well-formed `q<N>` (ASCII digits, no leading zero, nothing around it), else None."""
    m = QID_RE.fullmatch(qid) if isinstance(qid, str) else None
    return int(m.group(1)) if m else None


def open_regular(path):
    """`path` opened for reading only if it is a regular file: a FIFO planted there must not block."""
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise OSError(f"{os.path.basename(path)} is not a regular file")
        os.set_blocking(fd, True)
        return os.fdopen(fd, "rb")
    except BaseException:
        os.close(fd)
        raise


def complete_lines(path, start):
    """(offset, raw line) for each whole line after byte `start`, and the offset after the last one.

    A torn last line (no newline yet) is left for a later read: it is either finished or cut aside.
    """
    with open_regular(path) as f:
        f.seek(start)
        data = f.read()
    end = data.rfind(b"\n") + 1
    out, pos = [], 0
    for raw in data[:end].split(b"\n")[:-1]:
        out.append((start + pos, raw))
        pos += len(raw) + 1
    return out, start + end


def _json(raw):
    try:
        value = json.loads(raw.decode("utf-8", "replace"))
    except ValueError:
        return None
    return value if isinstance(value, dict) else None


class Index:
    """An open connection to the index, caught up with both files."""

    def __init__(self, cfg, write=True):
        self.cfg = cfg
        self.queue_path = cfg.paths.pending / QUEUE_FILE
        self.decisions_path = cfg.paths.pending / DECISIONS_FILE
        self.path = cfg.paths.private / INDEX_FILE
        self.missing = {}  # file name -> lines the index had read from it before it vanished
        self.db = self._connect(write)
        self.refresh(write)

    # -- connection ---------------------------------------------------------------------------------------

    def _connect(self, write):
        if write:
            self.path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
            for planted in (self.path, self.path.with_name(self.path.name + "-journal")):
                displace(planted)  # a folder, FIFO or link planted here: moved aside, the index rebuilt
            try:
                db = self._open_file()
                try:
                    db.execute("SELECT v FROM meta WHERE k='version'").fetchone()
                except sqlite3.OperationalError:  # no tables yet (new, or another process is building it)
                    pass
                return db
            except sqlite3.DatabaseError:
                # Not a database (a crash can't do that; a hand or a disk can): it is a cache, start over.
                for suffix in ("", "-journal"):
                    try:
                        os.unlink(f"{self.path}{suffix}")
                    except FileNotFoundError:
                        pass
                return self._open_file()
        # Read-only (a dry run): work on a copy in memory so nothing on disk changes.
        mem = sqlite3.connect(":memory:", isolation_level=None)
        if self.path.is_file():
            try:
                with closing(sqlite3.connect(f"file:{self.path}?mode=ro", uri=True, timeout=BUSY_TIMEOUT_S)) as ro:
                    ro.backup(mem)
            except sqlite3.DatabaseError:
                mem.close()
                mem = sqlite3.connect(":memory:", isolation_level=None)
        return mem

    def _open_file(self):
        fresh = not self.path.exists()
        db = sqlite3.connect(str(self.path), timeout=BUSY_TIMEOUT_S, isolation_level=None)
        if fresh:
            os.chmod(self.path, 0o600)
        return db

    def close(self):
        self.db.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    # -- catching up --------------------------------------------------------------------------------------

    def _meta(self):
        try:
            return dict(self.db.execute("SELECT k, v FROM meta").fetchall())
        except sqlite3.OperationalError:  # no tables yet
            return {}

    @staticmethod
    def _stat(path):
        """(identity, size) of a regular file; None for anything else: a FIFO planted there would block a
        read forever, a folder can't be read, and neither is the record."""
        try:
            st = os.stat(path)
        except OSError:
            return None
        if not stat.S_ISREG(st.st_mode):
            return None
        return f"{st.st_dev}:{st.st_ino}", st.st_size

    def _plan(self, meta):
        """'rebuild', 'catch-up' or None (fresh), and fill self.missing."""
        if meta.get("version") != VERSION:
            return "rebuild"
        plan = None
        self.missing = {}
        for name, path in (("queue", self.queue_path), ("dec", self.decisions_path)):
            st, seen, off = self._stat(path), meta.get(f"{name}_id", ""), int(meta.get(f"{name}_off", 0))
            if st is None:
                if off > 0:
                    self.missing[path.name] = int(meta.get(f"{name}_lines", 0))
                continue
            ident, size = st
            if (seen and ident != seen) or size < off:
                return "rebuild"
            if size > off or not seen:
                plan = "catch-up"
        return plan

    def refresh(self, write=True):
        meta = self._meta()
        plan = self._plan(meta)
        if plan is None:
            return
        self.db.execute("BEGIN IMMEDIATE" if write else "BEGIN")
        try:
            meta = self._meta()  # another process may have caught up while this one waited
            plan = self._plan(meta)
            if plan == "rebuild":
                for table in ("meta", "items", "dlines", "counts"):
                    self.db.execute(f"DROP TABLE IF EXISTS {table}")
                for statement in SCHEMA:
                    self.db.execute(statement)
                meta = {"version": VERSION}
                self.missing = {}
            if plan is not None:
                self._read_queue(meta)
                self._read_decisions(meta)
                self.db.executemany("INSERT OR REPLACE INTO meta VALUES (?, ?)",
                                    [(k, str(v)) for k, v in meta.items()])
            self.db.execute("COMMIT")
        except BaseException:
            self.db.execute("ROLLBACK")
            raise

    def _advance(self, meta, name, path, handle):
        st = self._stat(path)
        if st is None:
            return
        start = int(meta.get(f"{name}_off", 0)) if meta.get(f"{name}_id") == st[0] else 0
        lines, end = complete_lines(path, start)
        count = int(meta.get(f"{name}_lines", 0))
        for off, raw in lines:
            entry = _json(raw) if raw.strip() else None
            if entry is not None:
                handle(off, entry)
                count += 1
        meta.update({f"{name}_id": st[0], f"{name}_off": end, f"{name}_lines": count})

    def _read_queue(self, meta):
        rows = []

        def add(off, e):
            n = qnum(e.get("id"))
            if n is None:
                return
            kind = e.get("type") if isinstance(e.get("type"), str) else "?"
            queued_at = e.get("queued_at") if isinstance(e.get("queued_at"), str) else ""
            tick = e.get("tick") if isinstance(e.get("tick"), int) and not isinstance(e.get("tick"), bool) else None
            sha = e.get("sha256") if isinstance(e.get("sha256"), str) else ""
            see = f"approve.py show q{n}"
            rows.append((n, f"q{n}", off, sha, cut(kind, 40, see), queued_at, parse_time(queued_at), tick,
                         key_summary(kind, e.get("action"), see)))
        self._advance(meta, "queue", self.queue_path, add)
        # The first line with an id is the record; a later copy (a hand edit) never replaces it.
        self.db.executemany("INSERT OR IGNORE INTO items (n, qid, off, sha, type, queued_at, queued_ts, tick, "
                            "summary, state) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, 'open')", rows)

    def _read_decisions(self, meta):
        lines, updates = [], []

        def add(off, e):
            n = qnum(e.get("id"))
            decision = e.get("decision")
            if n is None or decision not in FINAL:
                return
            lines.append((off, f"q{n}"))
            at = parse_time(e.get("at"))
            if e.get("status") == "started":
                updates.append(("started", None, at, n))
                return
            result = e.get("result")
            ok = result.get("ok") if isinstance(result, dict) else None
            updates.append((decision, None if ok is None else int(bool(ok)), at or time.time(), n))
        self._advance(meta, "dec", self.decisions_path, add)
        self.db.executemany("INSERT OR IGNORE INTO dlines VALUES (?, ?)", lines)
        # In file order: the last line about an item is its state.
        self.db.executemany("UPDATE items SET state=?, ok=?, decided_ts=? WHERE n=?", updates)

    # -- queries ------------------------------------------------------------------------------------------

    COLUMNS = "qid, off, sha, type, queued_at, queued_ts, tick, summary, state, ok, decided_ts"

    def _rows(self, sql, args=()):
        names = [c.strip() for c in self.COLUMNS.split(",")]
        return [dict(zip(names, row)) for row in self.db.execute(sql, args).fetchall()]

    def item(self, qid):
        rows = self._rows(f"SELECT {self.COLUMNS} FROM items WHERE n=?", (qnum(qid),))
        return rows[0] if rows else None

    def items(self, include_decided=False, limit=-1):
        """Items oldest first: the open ones, or all of them."""
        if not include_decided:
            return self.items_in("open", limit)
        return self._rows(f"SELECT {self.COLUMNS} FROM items ORDER BY n LIMIT ?", (limit,))

    def items_in(self, state, limit=-1):
        """Items in one state (open, started, approved, ...), oldest first."""
        return self._rows(f"SELECT {self.COLUMNS} FROM items WHERE state=? ORDER BY n LIMIT ?", (state, limit))

    def listing(self, include_decided=False):
        """(qid, queued_ts, type, summary, sha, state, ok, n) per item, oldest first: `approve.py list`, fast.

        Without decided items it still has the started ones: a run stopped midway waits for the operator too.
        """
        sql = "SELECT qid, queued_ts, type, summary, sha, state, ok, n FROM items {} ORDER BY n"
        if include_decided:
            return self.db.execute(sql.format("")).fetchall()
        # Two index scans rather than one IN: no sort of every open row in a temporary tree.
        rows = self.db.execute(sql.format("WHERE state = 'open'")).fetchall()
        started = self.db.execute(sql.format("WHERE state = 'started'")).fetchall()
        return sorted(rows + started, key=lambda r: r[7]) if started else rows

    def open_summary(self):
        """(open count, queued_at of the oldest open item)."""
        row = self.db.execute("SELECT n FROM counts WHERE state='open'").fetchone()
        count = row[0] if row else 0
        oldest = self.db.execute("SELECT queued_at FROM items WHERE state='open' ORDER BY n LIMIT 1").fetchone()
        return count, (oldest[0] if oldest else None)

    def open_with_sha(self, sha):
        row = self.db.execute("SELECT qid FROM items WHERE sha=? AND state='open' ORDER BY n LIMIT 1",
                              (sha,)).fetchone()
        return row[0] if row else None

    def decided_between(self, since_ts, until_ts=None):
        """How many items got their decision in [since, until] (an item decided twice counts once)."""
        until_ts = time.time() + 1 if until_ts is None else until_ts
        return self.db.execute("SELECT count(*) FROM items WHERE state IN ('approved', 'rejected', 'done') "
                               "AND decided_ts BETWEEN ? AND ?", (since_ts, until_ts)).fetchone()[0]

    def decision_offsets(self, qid):
        return [r[0] for r in self.db.execute("SELECT off FROM dlines WHERE qid=? ORDER BY off", (qid,))]

    def decisions_offset(self):
        """(file identity, byte offset) the index has read the decisions file up to."""
        meta = self._meta()
        return meta.get("dec_id", ""), int(meta.get("dec_off", 0))


def read_line_at(path, off):
    """The JSON object on the line starting at byte `off`, or None."""
    try:
        with open_regular(path) as f:
            f.seek(off)
            raw = f.readline()
    except OSError:
        return None
    return _json(raw) if raw.endswith(b"\n") else None
