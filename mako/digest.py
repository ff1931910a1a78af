"""The daily digest (§18): the last `digest.hours_window` hours of ticks, the current focus, the journal tail.

Figures come from the window's rows of logs/metrics.csv through mako.stats (junk cells count as unknown,
undated rows are left out), approvals (open items, the oldest one's age, decisions in the window) from
their index, the focus from state/STATE.md and the last journal lines from state/JOURNAL.md. The metrics
and the journal are read from their ends and the approvals through their index: the cost does not grow with
their history. The text is plain (Telegram gets no parse mode) and goes to the digest thread, else the log
thread.
"""

import logging
import re
import time
from datetime import datetime, timedelta, timezone

from . import decisions
from .fileio import read_text, tail_lines
from .health import failure_kinds, provider_figures, provider_lines, read_history
from .redact import Redactor
from .runrecord import run_deadline
from .schedule import record_digest_sent
from .stats import count_if, is_true, numbers, pct, read_table_since, summarize, total
from .telegram import TelegramClient
from .text import short, terminal_safe

log = logging.getLogger(__name__)

JOURNAL_LINES = 5
JOURNAL_LINE_MAX = 300
FOCUS_MAX = 600
DRIFT_LISTED = 10
DRIFT_MAX = 160
HISTORY_TAIL_MAX = 50000

FOCUS_LINE_RE = re.compile(r"^\s*(?:[-*+]\s+)?(?:\*\*|__)?focus(?:\*\*|__)?\s*:\s*(?:\*\*|__)?\s*(.*)$", re.I)
FOCUS_HEADING_RE = re.compile(r"^\s{0,3}#{1,6}\s+(?:current\s+)?focus\s*:?\s*#*\s*$", re.I)
HEADING_RE = re.compile(r"^\s{0,3}#{1,6}(\s|$)")


def extract_focus(text):
    """The focus in STATE.md: a `Focus:` line, else a `## Focus` section, else the first non-heading paragraph."""
    lines = text.splitlines()
    for i, line in enumerate(lines):
        m = FOCUS_LINE_RE.match(line)
        if m:
            value = m.group(1).strip()
            if value:
                return short(value, FOCUS_MAX)
            # "Focus:" alone on its line: the lines under it, up to a blank line or a heading.
            rest = _paragraph(lines[i + 1:])
            if rest:
                return short(rest, FOCUS_MAX)
    for i, line in enumerate(lines):
        if FOCUS_HEADING_RE.match(line):
            body = []
            for following in lines[i + 1:]:
                if HEADING_RE.match(following):
                    break
                body.append(following)
            section = " ".join(" ".join(body).split())
            if section:
                return short(section, FOCUS_MAX)
    block = []
    for line in lines + [""]:
        if not line.strip():
            if block:
                return short(" ".join(block), FOCUS_MAX)
            continue
        if not HEADING_RE.match(line):
            block.append(line.strip())
    return ""


def _paragraph(lines):
    out = []
    for line in lines:
        if not line.strip():
            if out:
                break
            continue
        if HEADING_RE.match(line):
            break
        out.append(line.strip())
    return " ".join(out)


def collect(cfg, now=None):
    """The digest's figures as a dict (see render); never raises on a missing or junk metrics file."""
    now = now or datetime.now(timezone.utc)
    hours = cfg.digest.hours_window
    since = now - timedelta(hours=hours)
    fig = {"now": now, "hours": hours, "metrics_missing": False}

    try:
        table = read_table_since(cfg.paths.logs / "metrics.csv", since)
    except FileNotFoundError:
        table = None
        fig["metrics_missing"] = True
    if table is not None:
        table = table.select([i for i, t in enumerate(table.ts) if t >= since])
    n = len(table) if table is not None else 0
    fig["ticks"] = n
    if n:
        outcomes = [o.strip() for o in table.col("outcome")]
        failed = [o or "unknown" for o in outcomes if o != "ok"]
        kinds = {}
        for o in failed:
            kinds[o] = kinds.get(o, 0) + 1
        fig["failures"] = len(failed)
        fig["failure_kinds"] = sorted(kinds.items(), key=lambda kv: (-kv[1], kv[0]))
        fig["failure_rate"] = pct(len(failed), n)
        fig["compactions"] = count_if(table.col("mode"), lambda m: m.strip() == "compact")
        fig["compact_now"] = count_if(table.col("compact_now"), is_true)
        fig["executed"], _ = total(table.col("actions_executed"))
        fig["queued"], _ = total(table.col("actions_queued"))
        fig["prompt_tokens"], fig["prompt_known"] = total(table.col("prompt_tokens"))
        fig["completion_tokens"], fig["completion_known"] = total(table.col("completion_tokens"))
        fig["input_est"], _ = total(table.col("input_tokens_est"))
        fig["wall"] = summarize(numbers(table.col("wall_s")))
        ticks = table.col("tick_n")
        fig["drift"] = [(ticks[i].strip(), d.strip()) for i, d in enumerate(table.col("drift_flag")) if d.strip()]
        fig["providers"] = provider_figures(table)
        # The history holds one line per tick: the window's worth of its tail is enough.
        lines = min(int(hours * 3600 / cfg.supervisor.tick_interval_s) + 100, HISTORY_TAIL_MAX)
        fig["provider_kinds"] = failure_kinds(read_history(cfg.paths.private, lines), since.timestamp())

    # From the approvals index (read-only here), never the whole queue.
    fig["pending"], fig["oldest_age"], fig["decided"] = decisions.figures(
        cfg, since.timestamp(), now.timestamp(), write=False)

    fig["focus"] = extract_focus(read_text(cfg.paths.state / "STATE.md"))
    fig["journal"] = [short(line, JOURNAL_LINE_MAX)
                      for line in tail_lines(cfg.paths.state / "JOURNAL.md", JOURNAL_LINES) if line.strip()]
    return fig


def _n(x):
    return f"{round(x):,}"


def render(fig):
    """The digest text from collect()'s figures."""
    local = fig["now"].astimezone()
    window = f"{fig['hours']:g}h"
    out = [f"🦫 Daily digest · {local:%Y-%m-%d}"]
    n = fig["ticks"]
    if not n:
        why = " (no metrics file yet)" if fig["metrics_missing"] else ""
        out.append(f"No ticks in the last {window}{why}.")
    else:
        line = f"Last {window}: {n:,} tick{'s' if n != 1 else ''}, {fig['failures']:,} failed " \
               f"({fig['failure_rate']:.1f}%)"
        if fig["failure_kinds"]:
            line += ": " + ", ".join(f"{c} {k}" for k, c in fig["failure_kinds"])
        out.append(line)
        out += provider_lines(fig["providers"], fig["provider_kinds"])
        out.append(f"Compactions: {fig['compactions']:,} · compact_now requested {fig['compact_now']:,}×")
        out.append(f"Actions: {_n(fig['executed'])} executed, {_n(fig['queued'])} queued")
        tokens = f"Tokens: prompt {_n(fig['prompt_tokens'])} · completion {_n(fig['completion_tokens'])} · " \
                 f"input est {_n(fig['input_est'])}"
        known = min(fig["prompt_known"], fig["completion_known"])
        if known < n:
            tokens += f" (usage reported on {known}/{n} ticks)"
        out.append(tokens)
        wall = fig["wall"]
        out.append(f"Wall time: mean {wall.mean:.1f}s · p95 {wall.p95:.1f}s" if wall else "Wall time: unknown")
        drift = fig["drift"]
        if drift:
            out.append(f"Drift flags: {len(drift)}")
            out += [f"  #{tick or '?'} {short(flag, DRIFT_MAX)}" for tick, flag in drift[-DRIFT_LISTED:]]
            if len(drift) > DRIFT_LISTED:
                out.append(f"  (+{len(drift) - DRIFT_LISTED} earlier)")
        else:
            out.append("Drift flags: none")
    oldest = f" (oldest {decisions.age_text(fig['oldest_age'])})" if fig["oldest_age"] is not None else ""
    out.append(f"Approvals: {fig['pending']:,} open{oldest} · {fig['decided']:,} decided in the last {window}")
    out += ["", f"Focus: {fig['focus'] or '(STATE.md has none)'}"]
    out += ["", "Journal (latest):"] + (fig["journal"] or ["(empty)"])
    # Model text (drift flags, STATE, the journal) printed or posted as it is shown: no control sequences.
    return terminal_safe("\n".join(out))


def build_digest(cfg, now=None):
    return render(collect(cfg, now))


def send_digest(cfg, text, clock=time.time):
    """Post the digest to the digest thread (else log); True when Telegram accepted every part, and then
    the local date is recorded at once for the supervisor (§4)."""
    redactor = Redactor(cfg.secrets())
    # Finish before the supervisor's digest_timeout_s kills the run.
    client = TelegramClient(cfg.telegram, redactor, deadline=run_deadline(clock(), cfg.supervisor.digest_timeout_s))
    thread = cfg.telegram.first_thread("digest", "log")
    ok = bool(client.send(redactor.text(text), thread or "log"))
    if ok:
        record_digest_sent(cfg.paths.private, time.localtime(clock()))
    else:
        last = client.records[-1] if client.records else {}
        log.error("digest not delivered: %s", last.get("error") or "no reply")
    return ok
