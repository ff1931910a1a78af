"""What a tick says about itself: LAST_RESULTS.md, the journal line and the Telegram summary (§14, §16).

Pure functions of the tick's results; the worker writes and sends what they return.
"""

from datetime import datetime

from .text import fold_lines, marker, truncate, visible

LAST_RESULTS_MAX_BYTES = 16 * 1024
FIELD_MAX_CHARS = 1500
JOURNAL_LINE_MAX_CHARS = 4000
ICONS = {"ok": "✅", "queued": "⏸", "waiting": "⏸", "skipped": "⏭"}


def icon(result):
    return ICONS.get(result.get("status"), "✅" if result.get("ok") else "❌")


def _one_line(text, limit=300):
    return truncate(visible(" ".join(str(text).split())), limit)


def _describe(result):
    """One line naming the item, then indented facts the next tick needs."""
    kind = result.get("type") or "write"
    lines = []
    if "path" in result and kind in ("write", "write_file", "append", "read_file"):
        head = f"{kind} {result.get('path')}"
        if result.get("bytes") is not None:
            head += f" ({result['bytes']} bytes)"
    else:
        head = result.get("summary") or kind
        if kind not in head:
            head = f"{kind}: {head}"
    if result.get("id"):
        head += f" — queued as {result['id']}, waiting for the operator"
    lines.append(f"{icon(result)} {_one_line(head, 400)}")
    facts = [f"{key}: {_one_line(result[key], 400)}" for key in ("cmd", "url", "final_url") if result.get(key)]
    facts += [f"{key}: {result[key]}" for key in ("exit_code", "http_status") if result.get(key) is not None]
    if result.get("timed_out"):
        facts.append("timed out (killed with its process group)")
    if result.get("error"):
        facts.append(f"error: {_one_line(result['error'], 600)}")
    for key in ("stdout", "stderr", "body", "content"):
        if result.get(key):
            # Only "\n" breaks a line here: any other break or control character is shown as its escape.
            text = visible(truncate(str(result[key]), FIELD_MAX_CHARS).rstrip("\n"), keep="\n\t")
            facts.append(f"{key}:\n" + "\n".join("    " + ln for ln in text.split("\n")))
    lines += ["   " + f for f in facts]
    return "\n".join(lines)


def last_results(tick_n, mode, when, provider, model, writes, actions, notes_skipped=(), failure=None):
    """The whole LAST_RESULTS.md text, capped at 16 KB with a visible marker."""
    out = [f"# LAST_RESULTS — tick #{tick_n} ({mode}) at {when}",
           f"Provider: {provider or '-'} / {model or '-'}"]
    if failure:
        out += ["", f"❌ The tick failed: {_one_line(failure, 600)}"]
    out += ["", "## File writes"]
    out += [_describe(r) for r in writes] or ["(none)"]
    out += ["", "## Actions"]
    out += [_describe(r) for r in actions] or ["(none)"]
    if notes_skipped:
        out += ["", "## Requested notes not loaded"]
        out += [f"❌ {_one_line(s, 200)}" for s in notes_skipped]
    text = "\n".join(out) + "\n"
    data = text.encode("utf-8")
    if len(data) > LAST_RESULTS_MAX_BYTES:
        kept = data[:LAST_RESULTS_MAX_BYTES - 200].decode("utf-8", "ignore")
        text = f"{kept}\n{marker(len(data) - len(kept.encode('utf-8')), 'bytes')}\n"
    return text


def journal_line(tick_n, when, work_done):
    """One journal line, whatever breaks work_done holds: a journal record is one line for every reader."""
    return f"#{tick_n} {when} — {truncate(fold_lines(work_done), JOURNAL_LINE_MAX_CHARS)}\n"


def action_counts(results):
    run = sum(1 for r in results if r.get("status") in ("ok", "error"))
    queued = sum(1 for r in results if r.get("status") == "queued")
    failed = sum(1 for r in results if not r.get("ok") and r.get("status") != "skipped")
    skipped = sum(1 for r in results if r.get("status") == "skipped")
    return run, queued, failed, skipped


def metrics_row(ts, tick_n, mode, wall_s, outcome, llm=None, reply=None, actions=(), writes=(),
                input_tokens=None):
    """The logs/metrics.csv row of a finished tick (§17): None where a value is unknown.

    `failures` counts the failed actions and file writes; why a tick failed is its `outcome` word and, in
    full, logs/error-N.log."""
    run, queued, failed, _ = action_counts(actions)
    failed += sum(1 for w in writes if not w.get("ok"))
    return {
        "ts": ts, "tick_n": tick_n, "mode": mode, "wall_s": round(wall_s, 3),
        "provider_used": llm.slot if llm else None, "model_used": llm.model if llm else None,
        "input_tokens_est": input_tokens,
        "output_chars": len(llm.content) if llm else None,
        "actions_count": len(reply["actions"]) if reply else None,
        "actions_executed": run if reply else None, "actions_queued": queued if reply else None,
        "parse_ok": (reply is not None) if llm else None,
        "drift_flag": reply["drift_flag"] if reply else None,
        "compact_now": reply["compact_now"] if reply else None,
        "failures": failed, "outcome": outcome,
        "llm_wall_s": round(llm.wall_s, 3) if llm else None,
        "prompt_tokens": llm.prompt_tokens if llm else None,
        "completion_tokens": llm.completion_tokens if llm else None,
    }


def tick_summary(tick_n, started, wall_s, provider, model, text, max_chars, results, drift_flag=None):
    """The Telegram log-thread post for a finished tick."""
    when = datetime.fromtimestamp(started).strftime("%H:%M")
    head = f"🦫 #{tick_n} · {when} · {wall_s:.0f}s · {provider}/{model}"
    run, queued, failed, skipped = action_counts(results)
    tail = f"actions: {run} run · {queued} queued · {failed} failed"
    if skipped:
        tail += f" · {skipped} skipped"
    if drift_flag:
        tail += f" · ⚠️ drift: {_one_line(drift_flag, 200)}"
    return f"{head}\n{truncate(text.strip(), max_chars)}\n{tail}"


def failure_summary(tick_n, error):
    return f"🦫 #{tick_n} FAIL · {type(error).__name__}: {_one_line(str(error), 500)}"
