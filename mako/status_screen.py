"""The status screen (§21): `mako.status.collect()`'s figures as one line per item, every character visible.

Times are local (like the tick summary's HH:MM), ages relative to now; an item that could not be read says
"unknown (why)" instead of disappearing.
"""

import time

from .text import visible
from .stats import parse_ts

DAY_S = 86400
NO_SCHEDULE = "unknown (no schedule yet: the supervisor has not run here)"

def _ago(seconds):
    seconds = max(int(seconds), 0)
    if seconds < 90:
        return f"{seconds}s"
    if seconds < 5400:
        return f"{round(seconds / 60)}m"
    if seconds < 2 * DAY_S:
        return f"{seconds // 3600}h {seconds % 3600 // 60:02d}m"
    return f"{seconds // DAY_S}d {seconds % DAY_S // 3600}h"


def _local(epoch):
    return time.strftime("%Y-%m-%d %H:%M", time.localtime(epoch))


def _epoch(iso_text):
    stamp = parse_ts(iso_text) if iso_text else None
    return stamp.timestamp() if stamp else None


def _due(epoch, now):
    if epoch <= now:
        return f"due now (since {_local(epoch)})" if now - epoch > 120 else "due now"
    return f"in {_ago(epoch - now)} ({_local(epoch)})"


def _size(n):
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1024 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024


def _unknown(value):
    return isinstance(value, dict) and "unknown" in value


def _lines(info, now):
    """(label, value) pairs, one per §21 item, in screen order."""
    out = [("health", "ok" if info["healthy"] else "DEGRADED: " + "; ".join(info["problems"]))]
    paused = info["paused"]
    out.append(("paused", f"unknown ({paused['unknown']})" if _unknown(paused) else
                f"yes: {paused} (remove state/PAUSED to resume)" if paused else "no"))
    ticks = info["ticks"]
    if _unknown(ticks):
        out += [("last tick", f"unknown ({ticks['unknown']})"), ("last 24h", "unknown")]
    else:
        last = ticks["last"]
        if last:
            out.append(("last tick", f"#{last['n'] if last['n'] is not None else '?'} {last['outcome'] or 'unknown'}"
                        f" · {_ago(now - last['epoch'])} ago · {last['provider'] or '-'}/{last['model'] or '-'}"))
        else:
            out.append(("last tick", "none yet" + (f" ({ticks['note']})" if ticks.get("note") else "")))
        day = ticks["day"]
        more = "" if day["complete"] else " (at least: the window was longer than the part read)"
        out.append(("last 24h", f"{day['ticks']} ticks, {day['failed']} failed{more}"))
    sched = info["schedule"]
    paused_now = isinstance(paused, str)
    for role, key in (("tick", "tick_next"), ("scribe", "scribe_next")):
        if role == "scribe" and not info["scribe_enabled"]:
            value = "off (scribe.enabled: false)"
        elif paused_now:
            value = "paused"
        elif _unknown(sched):
            value = f"unknown ({sched['unknown']})"
        elif sched[key] is None and role == "tick" and not _unknown(ticks) and ticks["last"]:
            value = _due(ticks["last"]["epoch"] + info["tick_interval_s"], now) + " (estimated from the last tick)"
        else:
            value = _due(sched[key], now) if sched[key] is not None else NO_SCHEDULE
        out.append((f"next {role}", value))
    digest = info["digest"]
    out.append(("next digest", f"unknown ({digest['unknown']})" if _unknown(digest) else
                "off (digest.enabled: false)" if digest.get("off") else _due(digest["epoch"], now)))
    inbox = info["inbox"]
    if _unknown(inbox):
        value = f"unknown ({inbox['unknown']})"
    else:
        parts = []
        if inbox["waiting_bytes"]:
            parts.append(f"waiting ({_size(inbox['waiting_bytes'])} in state/INBOX.md)")
        if inbox["held_since_tick"] is not None:
            parts.append(f"held in a claim since tick #{inbox['held_since_tick']} (shown again until a tick succeeds)")
        value = " · ".join(parts) or "empty"
    out.append(("inbox", value))
    appr = info["approvals"]
    if _unknown(appr):
        value = f"unknown ({appr['unknown']})"
    else:
        value = f"{appr['open']} open"
        oldest = _epoch(appr["oldest_queued_at"])
        if oldest is not None:
            value += f", oldest {_ago(now - oldest)}"
    out.append(("approvals", value))
    providers = info["providers"]
    if _unknown(providers):
        out += [(slot, f"unknown ({providers['unknown']})") for slot in ("primary", "fallback")]
    else:
        for p in providers:
            out.append((p["slot"], _provider(p, now)))
    spend = info["spend"]
    out.append(("spend", f"unknown ({spend['unknown']})" if _unknown(spend) else
                f"{spend['pence']}p of {spend['ceiling']}p this month ({spend['month']})"
                + ("" if spend["complete"] else " (at least)")))
    last_date = None if _unknown(sched) else sched["last_digest_date"]
    out.append(("last digest", last_date or "none recorded"))
    scribe = info["scribe"]
    if _unknown(scribe):
        value = f"unknown ({scribe['unknown']})"
    elif not scribe:
        value = "none yet"
    else:
        at = _epoch(scribe["at"])
        value = f"#{scribe['n']} {scribe['outcome'] or 'unknown'}" + (f" · {_ago(now - at)} ago" if at else "")
    out.append(("last scribe", value))
    logs = info["logs"]
    out.append(("logs", f"unknown ({logs['unknown']})" if _unknown(logs) else
                f"{_size(logs['bytes'])} in {logs['files']:,} files" + ("" if logs["complete"] else " (at least)")))
    return out


def _provider(p, now):
    if not p["configured"]:
        return "not configured"
    head = f"{p['model']}: "
    if p["state"] == "failing":
        since = _epoch(p.get("since"))
        head += (f"failing since {_local(since)}" if since else "failing") + f", {p['failed_ticks']} ticks"
        head += f" (last: {p['last_kind'] or 'unknown'})"
        if p.get("ok_since"):
            head += f", answering again for {p['ok_since']}"
    else:
        head += "ok" if p["state"] == "ok" else "no answer recorded yet"
    until = p.get("cooldown_until")
    if until and until.startswith("unknown"):
        head += f" · cool-down {until}"
    elif _epoch(until):
        head += f" · cool-down until {_local(_epoch(until))}"
        if p.get("cooldown_reason"):
            head += f" ({p['cooldown_reason']})"
    return head


def render(info, now=None):
    """The status screen: one line per item, every character visible."""
    now = info["now_epoch"] if now is None else now
    lines = [f"mako-zero · {info['root']} · {_local(now)} {time.strftime('%Z', time.localtime(now))}"]
    lines += [f"{label + ':':<13} {value}" for label, value in _lines(info, now)]
    return "\n".join(visible(line) for line in lines) + "\n"
