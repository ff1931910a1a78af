"""Provider and tick health (§21): alerts once per episode, remembered across restarts.

At the end of every tick, ok or failed, `record_tick` notes how each provider slot fared (from the tick's
`llm_attempts`) and whether the tick succeeded, in `state/.mako/health.json`, and appends one line to
`state/.mako/health.jsonl` (the failure kinds digest and analyse report; trimmed to its newest half past
HISTORY_MAX_BYTES). Two things are watched, each an "episode" that opens and closes:

- the primary provider: failing on `health.alert_after_ticks` ticks opens an episode and posts
  `⚠️ primary <model> failing since HH:MM (N ticks, last: <kind>); running on <fallback model>` (or
  `all providers failing`); it closes with `✅ primary back after N ticks`;
- the tick itself: the same, with `⚠️ ticks failing since HH:MM (N ticks, last: <outcome>)` and
  `✅ ticks back after N ticks`.

How flapping counts: a run of failures is broken only by `alert_after_ticks` good ticks in a row. So a
primary that fails every other tick opens one episode after `alert_after_ticks` failures, and that episode
closes only once it has answered `alert_after_ticks` ticks in a row: one alert and one recovery, not a
post per flip. The recovery post therefore comes `alert_after_ticks - 1` ticks after the first good one;
"back after N ticks" counts the ticks from the first failure to the first tick of the good run.

A post that Telegram did not accept is tried again on the next tick, so it is sent once; a recovery is
posted only for an episode whose alert went out. Any error here is logged, never fails the tick.
"""

import json
import logging
import time

from .fileio import append, atomic_write, displace, read_text, tail_lines

log = logging.getLogger("mako.health")

HEALTH_FILE = "health.json"
HISTORY_FILE = "health.jsonl"
HISTORY_MAX_BYTES = 4 * 1024 * 1024
SLOTS = ("primary", "fallback")
# Each is tracked for status.py; the fallback is shown there but not alerted on (the primary's alert says
# whether the fallback carries on).
WATCHED = ("primary", "fallback", "ticks")
ALERTED = ("primary", "ticks")
SKIPPED_KIND = "cooling_down"


def slot_results(attempts):
    """{slot: "ok" | failure kind} for each slot tried this tick (a slot not reached is left out)."""
    out = {}
    for a in attempts or ():
        if not isinstance(a, dict) or a.get("slot") not in SLOTS:
            continue
        out[a["slot"]] = "ok" if a.get("ok") else str(a.get("kind") or "fail")[:40]
    return out


def fresh_track():
    return {"fails": 0, "since": None, "since_tick": None, "ok_run": 0, "good_since_tick": None,
            "closed_after": None, "last_kind": None, "last_result": None, "last_at": None, "open": False,
            "alert_sent": False}


TIMES = ("since", "last_at")
TEXTS = ("last_kind", "last_result")


def _fits(key, default, value):
    """Whether a saved value has the type its field needs (anything else reads as fresh)."""
    if value is None:
        return default is None
    if isinstance(value, bool) or isinstance(default, bool):
        return isinstance(value, bool) and isinstance(default, bool)
    if key in TIMES:
        return isinstance(value, (int, float))
    if key in TEXTS:
        return isinstance(value, str)
    return isinstance(value, int) and value >= 0


def load(private):
    """The health state (one track per watched subject); a missing, corrupt or odd field reads as fresh."""
    text = read_text(private / HEALTH_FILE, "")  # "" for a FIFO or folder planted there
    try:
        data = json.loads(text) if text.strip() else {}
    except ValueError:
        data = {}
    state = {}
    for name in WATCHED:
        track = fresh_track()
        saved = data.get(name) if isinstance(data, dict) else None
        if isinstance(saved, dict):
            track.update({k: v for k, v in saved.items() if k in track and _fits(k, track[k], v)})
        state[name] = track
    return state


def _hhmm(epoch):
    return time.strftime("%H:%M", time.localtime(epoch))


def step(track, ok, kind, tick_n, now, threshold):
    """Advance one subject by one tick. Returns "open", "close" or None (what to post)."""
    track["last_at"] = now
    if ok:
        track["last_result"] = "ok"
        if track["ok_run"] == 0:
            track["good_since_tick"] = tick_n
        track["ok_run"] += 1
        if track["ok_run"] >= threshold and track["fails"]:
            event = "close" if track["open"] else None
            start, back = track["since_tick"], track["good_since_tick"]
            closed_after = back - start if isinstance(start, int) and isinstance(back, int) else track["fails"]
            track.update(fails=0, since=None, since_tick=None, open=False, closed_after=closed_after)
            return event
        return None
    track["last_result"] = kind
    if kind != SKIPPED_KIND or not track["last_kind"]:
        track["last_kind"] = kind
    if not track["fails"]:
        track.update(since=now, since_tick=tick_n)
    track["fails"] += 1
    track["ok_run"] = 0
    track["good_since_tick"] = None
    if not track["open"] and track["fails"] >= threshold:
        track.update(open=True, alert_sent=False)
        return "open"
    return None


def alert_text(name, track, cfg, fallback_model=None):
    """The post that opens an episode of `name` ("primary" or "ticks")."""
    head = f"⚠️ {name}"
    if name == "primary":
        head += f" {cfg.primary.model}"
    text = f"{head} failing since {_hhmm(track['since'])} ({track['fails']} ticks, last: {track['last_kind']})"
    if name == "primary":
        text += f"; running on {fallback_model}" if fallback_model else "; all providers failing"
    return text


def recovery_text(name, track):
    return f"✅ {name} back after {track['closed_after']} ticks"


def _append_history(private, line):
    path = private / HISTORY_FILE
    displace(path)  # a folder or FIFO planted there is moved aside; appends never block on it
    try:
        if path.stat().st_size > HISTORY_MAX_BYTES:
            # Keep the newest half: the history serves recent figures, the metrics keep the long view.
            data = path.read_bytes()
            cut = data.find(b"\n", len(data) // 2)
            atomic_write(path, data[cut + 1:] if cut >= 0 else b"", durable=False)
    except FileNotFoundError:
        pass
    append(path, line, sync=False)


def record_tick(cfg, tick_n, outcome, attempts, telegram, clock=time.time):
    """Record one finished tick and post what opened or closed. Called once per tick, under the tick lock."""
    private = cfg.paths.private
    now = clock()
    results = slot_results(attempts)
    state = load(private)
    threshold = cfg.health.alert_after_ticks
    events = {}
    for slot in SLOTS:
        result = results.get(slot)
        if result is not None:
            events[slot] = step(state[slot], result == "ok", result, tick_n, now, threshold)
    events["ticks"] = step(state["ticks"], outcome == "ok", outcome or "fail", tick_n, now, threshold)

    fallback_model = cfg.fallback.model if results.get("fallback") == "ok" else None
    changed = any(events.values())
    for name in ALERTED:
        track = state[name]
        if events.get(name) == "close":
            if track["alert_sent"]:
                _post(telegram, recovery_text(name, track))
            track["alert_sent"] = False
        elif track["open"] and not track["alert_sent"]:
            if _post(telegram, alert_text(name, track, cfg, fallback_model)):
                track["alert_sent"] = changed = True

    # Durable only when an episode changed: a lost ordinary update costs nothing, a lost "alert sent"
    # would post it twice.
    atomic_write(private / HEALTH_FILE, json.dumps(state, indent=1, sort_keys=True) + "\n", durable=changed)
    line = {"tick": tick_n, "ts": round(now, 3), "outcome": outcome,
            **{slot: results.get(slot) for slot in SLOTS}}
    _append_history(private, json.dumps(line, separators=(",", ":")) + "\n")
    return events


def _post(telegram, text):
    try:
        return bool(telegram.send(text, "log"))
    except Exception as e:  # noqa: BLE001 — an alert must never fail the tick it reports on
        log.warning("health alert not sent: %s", e)
        return False


def safe_record_tick(cfg, tick_n, outcome, attempts, telegram, errors=None, clock=time.time):
    """record_tick, with any failure logged (and added to `errors`) instead of raised."""
    try:
        return record_tick(cfg, tick_n, outcome, attempts, telegram, clock)
    except Exception as e:  # noqa: BLE001 — the tick's own record comes first
        log.warning("health not recorded: %s: %s", type(e).__name__, e)
        if errors is not None:
            errors.append(f"health not recorded: {type(e).__name__}: {e}"[:300])
        return {}


def read_history(private, max_lines=None):
    """Records of health.jsonl (the newest `max_lines` when given), oldest first; torn or junk lines skipped."""
    path = private / HISTORY_FILE
    if max_lines is not None:
        lines = tail_lines(path, max_lines)
    else:
        lines = read_text(path, "").split("\n")
    out = []
    for line in lines:
        if not line.strip():
            continue
        try:
            rec = json.loads(line)
        except ValueError:
            continue
        if isinstance(rec, dict) and isinstance(rec.get("ts"), (int, float)):
            out.append(rec)
    return out


def failure_kinds(records, since=None):
    """[(slot, kind, count)] of failed provider attempts, most common first, from history records."""
    counts = {}
    for rec in records:
        if since is not None and rec["ts"] < since:
            continue
        for slot in SLOTS:
            kind = rec.get(slot)
            if isinstance(kind, str) and kind != "ok":
                counts[(slot, kind)] = counts.get((slot, kind), 0) + 1
    return sorted(((s, k, c) for (s, k), c in counts.items()), key=lambda t: (-t[2], t[0], t[1]))



# -- provider health for digest and analyse ---------------------------------------------------------------

ALL_FAILED_OUTCOMES = ("provider_error", "timeout")


def provider_figures(table):
    """Who answered, over the rows of a metrics Table: the primary, the fallback, or nobody.

    A row without a provider whose outcome is not a provider failure (a tick that failed before calling
    one) is left out. The primary's failure rate is the share of ticks it did not answer.
    """
    used = [u.strip() for u in table.col("provider_used")]
    outcomes = [o.strip() for o in table.col("outcome")]
    primary = used.count("primary")
    fallback = used.count("fallback")
    nobody = sum(1 for u, o in zip(used, outcomes) if not u and o in ALL_FAILED_OUTCOMES)
    reached = primary + fallback + nobody
    return {"reached": reached, "primary": primary, "fallback": fallback, "nobody": nobody,
            "primary_failure_rate": 100.0 * (fallback + nobody) / reached if reached else 0.0,
            "fallback_share": 100.0 * fallback / reached if reached else 0.0}


def provider_lines(figures, kinds):
    """Text lines on provider health: failure rate, fallback share, failure kinds by slot."""
    f = figures
    if not f["reached"]:
        return ["Providers: no tick reached a provider"]
    lines = [f"Providers: primary failed on {f['fallback'] + f['nobody']:,} of {f['reached']:,} ticks "
             f"({f['primary_failure_rate']:.1f}%) · fallback answered {f['fallback']:,} "
             f"({f['fallback_share']:.1f}%) · none answered {f['nobody']:,}"]
    by_slot = {}
    for slot, kind, count in kinds:
        by_slot.setdefault(slot, []).append(f"{count:,} {kind}")
    text = "; ".join(f"{slot} {', '.join(parts)}" for slot, parts in by_slot.items())
    lines.append(f"  failure kinds: {text or 'none recorded'}")
    return lines


def analyse_lines(cfg, table):
    """analyse.py's provider health section: the primary's failure rate and the fallback's share from the
    metrics, the failure kinds from the health history (the newest few months) over the same span."""
    kinds = failure_kinds(read_history(cfg.paths.private), min(table.ts).timestamp())
    return ["", *provider_lines(provider_figures(table), kinds)]
