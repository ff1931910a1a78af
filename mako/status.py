"""What `status.py` shows (§21): the agent at a glance, from bounded reads only.

Every figure comes from a small file or the tail of a large one (metrics.csv from its end back to the
start of the last 24 hours, the approvals index, the spend ledger's tail), so a year of history
costs what a day does. Nothing is written. Each line is computed on its own: a missing, torn or junk file
makes that one line say "unknown (why)" and the rest still print. Text from files the model or the web
can reach is shown through `text.visible`, so no escape sequence reaches the terminal.

The agent is *degraded* (exit 1) when the primary provider is in a failing episode (see mako/health.py),
the last 3 ticks failed, or no tick ran for 3 tick intervals while not paused.
"""

import json
import os
import re
import stat
import time
from datetime import datetime, timezone

from . import health
from .cooldowns import Cooldowns
from .fileio import read_head, tail_lines
from .ledger import SpendLedger
from .logs import iso_at
from .decisions import open_summary
from .pause import paused_reason
from .schedule import DATE_RE, DIGEST_SENT_FILE, SCHEDULE_FILE, digest_sent_date
from .stats import TAIL_MAX_BYTES, read_table_since
from .text import short

DAY_S = 86400
LOGS_MAX_ENTRIES = 50000
STALE_INTERVALS = 3
REASON_MAX = 100
FAILED_IN_A_ROW = 3
CLAIM_RE = re.compile(r"^claim-\d+-(\d+)\.md$")
OUTCOME_RE = re.compile(rb'"outcome":\s*"([^"\\]{0,40})"')


# -- small readers ----------------------------------------------------------------------------------------

def _regular(path):
    """True for a regular file, False when nothing is there. Anything else raises: a FIFO planted by a
    shell action would block the read forever, and status must never hang."""
    try:
        st = os.stat(path)
    except (FileNotFoundError, NotADirectoryError):
        return False
    if not stat.S_ISREG(st.st_mode):
        raise OSError(f"{os.path.basename(path)} is not a regular file")
    return True


def _tail(path, n):
    return tail_lines(path, n) if _regular(path) else []

def _json_file(path, max_bytes=1024 * 1024):
    """A small JSON object file, or {} when missing; raises ValueError on junk."""
    if not _regular(path):
        return {}
    data, _ = read_head(path, max_bytes)
    value = json.loads(data.decode("utf-8", "replace")) if data.strip() else {}
    if not isinstance(value, dict):
        raise ValueError("not a JSON object")
    return value


def approvals_summary(cfg):
    """Open approvals and the oldest one's queue time, from the approvals index (read, never written)."""
    for name in ("pending_actions.jsonl", "decisions.jsonl"):
        _regular(cfg.paths.pending / name)  # a FIFO there would hang whichever reader comes next
    count, oldest = open_summary(cfg, write=False)
    return {"open": count, "oldest_queued_at": oldest}


def month_spend(cfg, now):
    """Pence in the spend ledger for the current UTC month (read from its end back to the month's start)."""
    month = time.strftime("%Y-%m", time.gmtime(now))
    ledger = SpendLedger(cfg, redactor=None)
    _regular(ledger.ledger_path)  # a FIFO or folder there is "unknown", never "0p"
    return {"month": month, "pence": ledger.month_total(month),
            "ceiling": cfg.tick.budget_ceiling_pence_month, "complete": True}


def cooldowns(cfg, now):
    """{slot: (until epoch, reason)} of the providers cooling down now (state/.mako/cooldowns.json)."""
    cooling = Cooldowns(cfg.paths.private, clock=lambda: now)
    saved = cooling.load()
    out = {}
    for provider in (cfg.primary, cfg.fallback):
        until = cooling.until(provider)
        if until is not None:
            out[provider.name] = (until, short(str(saved[provider.name].get("reason") or ""), REASON_MAX))
    return out


def inbox_state(cfg):
    size = 0
    inbox = cfg.paths.state / "INBOX.md"
    if _regular(inbox) and read_head(inbox, 4096)[0].strip():
        size = os.stat(inbox).st_size
    held = []
    try:
        names = os.listdir(cfg.paths.private / "inbox")
    except (FileNotFoundError, NotADirectoryError):
        names = []
    for name in names:
        m = CLAIM_RE.match(name)
        if m:
            held.append(int(m.group(1)))
    return {"waiting_bytes": size, "held_since_tick": min(held) if held else None, "claims": len(held)}


def last_scribe(cfg):
    counter = cfg.paths.private / "scribe_counter.txt"
    n = read_head(counter, 64)[0].decode("ascii", "replace").strip() if _regular(counter) else ""
    if not n.isdigit():
        return None
    path = cfg.paths.logs / "scribe" / f"{int(n):08d}.json"
    if not _regular(path):
        return {"n": int(n), "at": None, "outcome": None}
    st = os.stat(path)
    with open(path, "rb") as f:
        f.seek(max(st.st_size - 4096, 0))
        m = OUTCOME_RE.search(f.read())
    return {"n": int(n), "at": iso_at(st.st_mtime), "outcome": m.group(1).decode() if m else None}


def logs_usage(folder):
    """(bytes, files, complete) under logs/, stopping after LOGS_MAX_ENTRIES entries."""
    total = files = seen = 0
    stack = [str(folder)]
    while stack:
        try:
            entries = list(os.scandir(stack.pop()))
        except OSError:
            continue
        for entry in entries:
            seen += 1
            if seen > LOGS_MAX_ENTRIES:
                return total, files, False
            try:
                if entry.is_dir(follow_symlinks=False):
                    stack.append(entry.path)
                elif entry.is_file(follow_symlinks=False):
                    total += entry.stat(follow_symlinks=False).st_size
                    files += 1
            except OSError:
                continue
    return total, files, True


def next_digest(cfg, last_date, now):
    if not cfg.digest.enabled:
        return {"off": True}
    tm = time.localtime(now)
    today = time.strftime("%Y-%m-%d", tm)
    hour = cfg.supervisor.digest_hour_local
    at = time.mktime((tm.tm_year, tm.tm_mon, tm.tm_mday, hour, 0, 0, 0, 0, -1))
    if last_date and last_date >= today:
        at = time.mktime((tm.tm_year, tm.tm_mon, tm.tm_mday + 1, hour, 0, 0, 0, 0, -1))
    return {"at": iso_at(at), "epoch": at}


# -- the whole picture ------------------------------------------------------------------------------------

def _section(info, key, fn, *args):
    try:
        info[key] = fn(*args)
    except Exception as e:  # noqa: BLE001 — one unreadable file costs one line, never the report
        info[key] = {"unknown": f"{type(e).__name__}: {e}"[:200]}


def _ticks(cfg, now):
    path = cfg.paths.logs / "metrics.csv"
    since = datetime.fromtimestamp(now - DAY_S, timezone.utc)
    try:
        _regular(path)
        table = read_table_since(path, since)
    except FileNotFoundError:
        return {"last": None, "day": {"ticks": 0, "failed": 0, "complete": True}, "recent": [],
                "note": "no logs/metrics.csv yet"}
    outcomes = [o.strip() for o in table.col("outcome")]
    day = [i for i, t in enumerate(table.ts) if t >= since]
    # Read back to a row older than the window, unless the file's tail stopped first.
    complete = not table.ts or table.ts[0] < since or os.path.getsize(path) <= TAIL_MAX_BYTES
    # An empty outcome is unknown (a row cut short by a crash), not a failure.
    out = {"day": {"ticks": len(day), "failed": sum(1 for i in day if outcomes[i] not in ("ok", "")),
                   "complete": complete},
           "recent": outcomes[-FAILED_IN_A_ROW:], "last": None}
    if table.ts:
        cell = {name: table.col(name)[-1].strip() for name in ("tick_n", "provider_used", "model_used")}
        epoch = table.ts[-1].timestamp()
        out["last"] = {"n": int(cell["tick_n"]) if cell["tick_n"].isdigit() else None,
                       "outcome": outcomes[-1] or None, "at": iso_at(epoch), "epoch": epoch,
                       "provider": cell["provider_used"] or None, "model": cell["model_used"] or None}
    return out


def _schedule(cfg, now):
    data = _json_file(cfg.paths.private / SCHEDULE_FILE)
    out = {}
    for key in ("tick_next", "scribe_next"):
        value = data.get(key)
        out[key] = float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None
    # digest.py records its own deliveries (manual ones too); the supervisor's copy may lag behind it.
    dates = [data.get("last_digest_date")]
    if _regular(cfg.paths.private / DIGEST_SENT_FILE):
        dates.append(digest_sent_date(cfg.paths.private))
    dates = [d for d in dates if isinstance(d, str) and DATE_RE.fullmatch(d)]
    out["last_digest_date"] = max(dates) if dates else None
    return out


def _providers(cfg, now):
    state = health.load(cfg.paths.private)
    try:
        cooling, cooling_error = cooldowns(cfg, now), None
    except (OSError, ValueError) as e:
        cooling, cooling_error = {}, f"unknown ({type(e).__name__}: {e})"[:200]
    out = []
    for p in (cfg.primary, cfg.fallback):
        track = state[p.name]
        item = {"slot": p.name, "model": p.model, "configured": p.configured, "state": "unknown",
                "cooldown_until": iso_at(cooling[p.name][0]) if p.name in cooling else cooling_error,
                "cooldown_reason": cooling[p.name][1] if p.name in cooling else None}
        if track["fails"]:
            item.update(state="failing", since=iso_at(track["since"]) if isinstance(track["since"], (int, float))
                        else None, failed_ticks=track["fails"], last_kind=track["last_kind"],
                        episode=track["open"], ok_since=track["ok_run"])
        elif track["last_result"] == "ok":
            item["state"] = "ok"
        out.append(item)
    return out


def collect(cfg, now=None):
    """Every status figure as a JSON-ready dict; never raises."""
    now = time.time() if now is None else now
    info = {"now": iso_at(now), "now_epoch": now, "root": str(cfg.paths.root),
            "tick_interval_s": cfg.supervisor.tick_interval_s}
    _section(info, "paused", paused_reason, cfg.paths)
    _section(info, "ticks", _ticks, cfg, now)
    _section(info, "schedule", _schedule, cfg, now)
    _section(info, "inbox", inbox_state, cfg)
    _section(info, "approvals", approvals_summary, cfg)
    _section(info, "providers", _providers, cfg, now)
    _section(info, "spend", month_spend, cfg, now)
    _section(info, "scribe", last_scribe, cfg)
    _section(info, "logs", lambda: dict(zip(("bytes", "files", "complete"), logs_usage(cfg.paths.logs))))
    last_date = info["schedule"].get("last_digest_date") if "unknown" not in info["schedule"] else None
    _section(info, "digest", next_digest, cfg, last_date, now)
    info["scribe_enabled"] = cfg.scribe.enabled
    info["problems"] = problems(cfg, info, now)
    info["healthy"] = not info["problems"]
    return info


def problems(cfg, info, now):
    """Why the agent is degraded (empty when it is healthy)."""
    out = []
    for p in info["providers"] if isinstance(info["providers"], list) else ():
        if p["slot"] == "primary" and p.get("episode"):
            out.append(f"the primary is failing ({p['failed_ticks']} ticks)")
    ticks = info["ticks"]
    recent = ticks.get("recent") or []
    if len(recent) >= FAILED_IN_A_ROW and all(o not in ("ok", "") for o in recent):
        out.append(f"the last {FAILED_IN_A_ROW} ticks failed")
    last = ticks.get("last")
    stale = STALE_INTERVALS * cfg.supervisor.tick_interval_s
    if last and not isinstance(info["paused"], str) and now - last["epoch"] > stale:
        out.append(f"no tick for {round((now - last['epoch']) / 60)} min (over {STALE_INTERVALS} intervals)")
    return out

