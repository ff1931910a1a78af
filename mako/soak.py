"""The soak report `analyse.py` prints (§18): span and cadence, outcomes, providers and their health,
distributions with text histograms, actions, approvals, flags and the recent failures, from a Table of
metrics rows (mako.stats).
"""

import re
from datetime import datetime, timezone

from .stats import count_if, counts, fmt_int, histogram, is_false, is_true, numbers, pct, summarize, total
from .text import short, terminal_safe

DISTRIBUTIONS = (("wall_s", "s", "{:.2f}"), ("input_tokens_est", "tokens", "{:.0f}"),
                 ("output_chars", "chars", "{:.0f}"))
RECENT_FAILURES = 10
TICK_RE = re.compile(r"[0-9]{1,12}")


def _count_lines(pairs, n, limit=12):
    width = max([len(v) for v, _ in pairs[:limit]] + [8])
    lines = [f"  {v:<{width}} {c:>9,} {pct(c, n):5.1f}%" for v, c in pairs[:limit]]
    if len(pairs) > limit:
        rest = sum(c for _, c in pairs[limit:])
        lines.append(f"  {'(' + str(len(pairs) - limit) + ' more)':<{width}} {rest:>9,} {pct(rest, n):5.1f}%")
    return lines


def _span_lines(table, tick_interval_s, mean_wall):
    stamps = sorted(t.timestamp() for t in table.ts)
    first, last = stamps[0], stamps[-1]
    hours = (last - first) / 3600
    n = len(stamps)
    lines = ["Span",
             f"  first   {datetime.fromtimestamp(first, timezone.utc).isoformat()}",
             f"  last    {datetime.fromtimestamp(last, timezone.utc).isoformat()}",
             f"  hours   {hours:,.2f}"]
    if n > 1 and last > first:
        lines.append(f"  ticks   {n:,} · {n / hours:.2f}/h · one every {(last - first) / (n - 1):.1f} s on average")
        # The interval runs from the end of one tick to the start of the next, so a tick period is
        # the interval plus the tick's own wall time.
        period = tick_interval_s + (mean_wall or 0.0)
        expected = (last - first) / period + 1
        lines.append(f"  cadence tick_interval_s {tick_interval_s:g} s + mean wall {mean_wall or 0:.1f} s → "
                     f"expected ~{expected:,.0f} ticks, actual {n:,} ({pct(n, expected):.1f}%)")
        gap, at = max((b - a, b) for a, b in zip(stamps, stamps[1:]))
        lines.append(f"  longest gap {gap / 3600:.2f} h (until "
                     f"{datetime.fromtimestamp(at, timezone.utc).isoformat()})")
    else:
        lines.append(f"  ticks   {n:,} (too short a span for a rate)")
    return lines


def report(table, source, tick_interval_s, reason=None, extra=()):
    """The soak report for a non-empty Table, as text. `reason(tick_n)` says why a tick failed ("" when
    unknown); `extra` lines (a section from outside the metrics) go before the recent failures."""
    n = len(table)
    out = [f"metrics: {source}",
           f"rows: {n:,}" + (f" ({table.skipped:,} unreadable rows skipped)" if table.skipped else ""), ""]
    wall = summarize(numbers(table.col("wall_s")))
    out += _span_lines(table, tick_interval_s, wall.mean if wall else None)

    outcomes = table.col("outcome")
    failed = [i for i, o in enumerate(outcomes) if o != "ok" and o.strip() != "ok"]
    parse_ok = table.col("parse_ok")
    parse_failed = count_if(parse_ok, is_false)
    parse_unknown = count_if(parse_ok, lambda c: not is_true(c) and not is_false(c))
    out += ["", f"Outcomes (failed: {len(failed):,}, {pct(len(failed), n):.1f}%)"]
    out += _count_lines(counts(outcomes, empty="(unknown)"), n)
    out.append(f"  parse failures (parse_ok false): {parse_failed:,} ({pct(parse_failed, n):.1f}%)"
               + (f" · parse_ok unknown: {parse_unknown:,}" if parse_unknown else ""))
    for title, name in (("Modes", "mode"), ("Providers", "provider_used"), ("Models", "model_used")):
        out += ["", title] + _count_lines(counts(table.col(name)), n)

    for name, unit, fmt in DISTRIBUTIONS:
        s = wall if name == "wall_s" else summarize(numbers(table.col(name)))
        out.append("")
        if s is None:
            out.append(f"{name}: no values")
            continue
        f = fmt.format
        out.append(f"{name} ({unit}, {s.n:,} values): mean {s.mean:,.2f} · p50 {f(s.p50)} · p95 {f(s.p95)} · "
                   f"p99 {f(s.p99)} · max {f(s.max)}")
        out += histogram(s.values, fmt=fmt)

    out += ["", "Actions"]
    for name in ("actions_count", "actions_executed", "actions_queued"):
        value, known = total(table.col(name))
        out.append(f"  {name[8:]:<9} total {fmt_int(value):>10} · {value / known if known else 0:.2f} per tick")
    prompt, p_known = total(table.col("prompt_tokens"))
    completion, c_known = total(table.col("completion_tokens"))
    out += ["", "Tokens (provider-reported)",
            f"  prompt {fmt_int(prompt)} on {p_known:,} ticks · completion {fmt_int(completion)} on {c_known:,} ticks"]

    drift = [d.strip() for d in table.col("drift_flag") if d and d.strip()]
    compact_now = count_if(table.col("compact_now"), is_true)
    compactions = count_if(table.col("mode"), lambda m: m.strip() == "compact")
    out += ["", "Flags", f"  drift flags raised: {len(drift):,} ({pct(len(drift), n):.1f}%)"]
    out += [f"    {c:>6,}× {short(v, 100)}" for v, c in counts(drift)[:5]]
    out.append(f"  compact_now true: {compact_now:,} · compaction ticks: {compactions:,}")

    out += list(extra)
    out += ["", f"Recent failures (last {min(RECENT_FAILURES, len(failed))} of {len(failed):,})"]
    ticks = table.col("tick_n")
    for i in failed[-RECENT_FAILURES:]:
        tick = ticks[i].strip()
        why = reason(int(tick)) if reason and TICK_RE.fullmatch(tick) else ""
        out.append(f"  {table.ts[i].isoformat()}  #{tick or '?'}  {outcomes[i].strip() or '(unknown)'}"
                   + (f"  {short(why, 160)}" if why.strip() else ""))
    if not failed:
        out.append("  none")
    # Cells hold model text (a drift flag, a model name): no escape sequence reaches the terminal.
    return terminal_safe("\n".join(out)) + "\n"
