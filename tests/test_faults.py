"""Fault matrix through real ticks: every provider failure kind on the primary, with the fallback healthy or
failing, and every Telegram failure a tick meets. Each row checks what the operator would find afterwards:
exit code, metrics row, payload attempts, error log, the Telegram post, and that the next tick still runs."""

import json
import re
import time

import pytest

from conftest import (BOT_TOKEN, CHAT_ID, FALLBACK_KEY, PRIMARY_KEY, SECRETS, THREADS, closed_port_url,
                      reply)
from fakes import (Reply, error_envelope_200, go_usage_limit, ollama_thinking_only, ollama_usage_limit,
                   reasoning_only, tg_429, tg_error, utf16_len)

from mako.fileio import FileLock

ROUTE = {"ollama": "/api/chat", "openai": "/chat/completions"}
MODEL = {"ollama": "qwen3.5", "openai": "qwen3.6"}
OTHER = {"ollama": "openai", "openai": "ollama"}
DEFAULT_COOLDOWN_S = 15 * 60
GO_USAGE_RETRY_AFTER_S = 3600




def slot_config(root, side, **overrides):
    """One llm slot pointing at the fake for `side` ("ollama" or "openai")."""
    if side == "ollama":
        cfg = {"type": "ollama", "base_url": root.ollama.url, "api_key": PRIMARY_KEY, "model": MODEL[side],
               "timeout_s": 5}
    else:
        cfg = {"type": "openai_compat", "base_url": root.openai.url, "api_key": FALLBACK_KEY,
               "model": MODEL[side], "timeout_s": 5}
    cfg.update(overrides)
    return cfg


def fake_for(root, side):
    return root.ollama if side == "ollama" else root.openai


# Each fault: (attempt kind recorded, HTTP status recorded). `inject` scripts the fake or returns the slot
# overrides that produce it, so config faults (wrong key, wrong model, closed port) hit the real fake paths.
FAULTS = {
    "timeout": ("timeout", None),
    "refused": ("connection", None),
    "usage_limit": ("usage_limit", 429),
    "rate_limit": ("http_429", 429),
    "401": ("http_401", 401),
    "404": ("http_404", 404),
    "500": ("http_500", 500),
    "502_html": ("http_502", 502),
    "503": ("http_503", 503),
    "non_json": ("bad_json", 200),
    "malformed": ("bad_json", 200),
    "close_early": ("connection", None),
    "empty": ("empty", 200),
    "thinking_only": ("thinking_only", 200),
    "error_envelope": ("error_envelope", 200),
    "usage_limit_200": ("usage_limit", 200),
}
OPENAI_ONLY = ("error_envelope", "usage_limit_200")


def inject(root, side, fault):
    """Make the next call to `side` fail with `fault`; returns slot config overrides (maybe empty)."""
    fake, route = fake_for(root, side), ROUTE[side]
    ollama = side == "ollama"

    def error_body(message, code):
        return {"error": message} if ollama else {"error": {"message": message, "type": "api_error",
                                                            "param": None, "code": code}}

    if fault == "timeout":
        fake.push(route, Reply(200, {"late": True}, delay_s=5))
        return {"timeout_s": 1}
    if fault == "refused":
        return {"base_url": closed_port_url()}
    if fault == "usage_limit":
        fake.push(route, ollama_usage_limit() if ollama else go_usage_limit(GO_USAGE_RETRY_AFTER_S))
    elif fault == "rate_limit":
        fake.push(route, Reply(429, error_body("Rate limit reached for requests", "rate_limit_exceeded"),
                               headers={"retry-after": "2"}))
    elif fault == "401":
        return {"api_key": "wrong-key-for-this-endpoint-0000"}
    elif fault == "404":
        # Ollama names an unknown model with 404; an OpenAI-compatible base URL with a wrong path is a 404 too.
        return {"model": "no-such-model"} if ollama else {"base_url": fake.url + "/v9"}
    elif fault == "500":
        fake.push(route, Reply(500, error_body("Internal Server Error", "server_error")))
    elif fault == "502_html":
        fake.push(route, Reply(502, mode="html"))
    elif fault == "503":
        fake.push(route, Reply(503, error_body("server busy, please try again", "overloaded")))
    elif fault == "non_json":
        fake.push(route, Reply(200, "upstream says: all good"))
    elif fault == "malformed":
        fake.push(route, Reply(200, mode="malformed"))
    elif fault == "close_early":
        fake.push(route, Reply(mode="close_early"))
    elif fault == "empty":
        fake.reply_content("")
    elif fault == "thinking_only":
        fake.push(route, ollama_thinking_only() if ollama else reasoning_only())
    elif fault == "error_envelope":
        assert not ollama, "the 200 error envelope is an OpenCode quirk"
        fake.push(route, error_envelope_200())
    elif fault == "usage_limit_200":
        assert not ollama
        fake.push(route, error_envelope_200("GoUsageLimitError", "Weekly usage limit reached."))
    else:
        raise AssertionError(f"unknown fault {fault}")
    return {}


# The fallback's failure for each primary fault when the fallback fails too: varied so every fallback
# failure path also ends a tick, and timeout x timeout checks the "timeout" outcome.
FALLBACK_FAULT = {
    "timeout": "timeout", "refused": "500", "usage_limit": "503", "rate_limit": "close_early",
    "401": "refused", "404": "non_json", "500": "timeout", "502_html": "500", "503": "empty",
    "non_json": "502_html", "malformed": "thinking_only", "close_early": "401", "empty": "malformed",
    "thinking_only": "rate_limit", "error_envelope": "404", "usage_limit_200": "500",
}


def matrix():
    rows = []
    for side in ("ollama", "openai"):
        for fault in FAULTS:
            if fault in OPENAI_ONLY and side != "openai":
                continue
            for fallback in ("healthy", "failing"):
                rows.append(pytest.param(side, fault, fallback, id=f"{side}-{fault}-fallback_{fallback}"))
    return rows


def assert_no_secrets(root):
    for rel, data in root.all_files_text():
        for secret in SECRETS:
            assert secret.encode() not in data, (rel, secret)
    for msg in root.telegram.messages:
        assert not any(s in msg["text"] for s in SECRETS)


def assert_lock_free(root):
    lock = FileLock(root.p("state/.mako/tick.lock"))
    assert lock.acquire(), "the tick lock was left held"
    lock.release()


@pytest.mark.parametrize("side,fault,fallback", matrix())
def test_faults_provider_matrix(root, side, fault, fallback):
    other = OTHER[side]
    primary_over = inject(root, side, fault)
    if fallback == "healthy":
        fallback_over = {}
        fake_for(root, other).reply_content(reply(work_done="answered by the fallback"))
    else:
        fallback_over = inject(root, other, FALLBACK_FAULT[fault])
    root.write_config(llm={"primary": slot_config(root, side, **primary_over),
                           "fallback": slot_config(root, other, **fallback_over)})
    root.p("state").mkdir(parents=True, exist_ok=True)
    root.p("state/INBOX.md").write_text("Operator: check the provider matrix.\n")

    started = time.time()
    rc = root.tick()
    kind, status = FAULTS[fault]
    assert root.ollama.pending() == 0 and root.openai.pending() == 0, "a scripted reply was never asked for"
    payload = root.payload(1)
    (row,) = root.metrics()
    attempts = payload["llm_attempts"]
    assert attempts[0]["slot"] == "primary" and attempts[0]["ok"] is False
    assert attempts[0]["status"] == status and attempts[0]["error"]

    if fallback == "healthy":
        assert rc == 0
        assert [a["kind"] for a in attempts] == [kind, None]
        assert attempts[1]["ok"] is True and attempts[1]["status"] == 200
        assert row["outcome"] == payload["outcome"] == "ok"
        assert row["provider_used"] == "fallback" and row["model_used"] == MODEL[other]
        assert row["parse_ok"] == "true"
        assert not root.p("logs/error-1.log").exists()
        (post,) = root.telegram.messages
        head = post["text"].split("\n")[0]
        assert head.startswith("🦫 #1 · ") and head.endswith(f" · fallback/{MODEL[other]}")
        assert "answered by the fallback" in root.read("state/JOURNAL.md")
        assert len(list(root.p("archive").glob("inbox-*.md"))) == 1
    else:
        fb_kind, fb_status = FAULTS[FALLBACK_FAULT[fault]]
        assert rc == 1
        assert [a["kind"] for a in attempts] == [kind, fb_kind]
        assert attempts[1]["ok"] is False and attempts[1]["status"] == fb_status
        outcome = "timeout" if kind == fb_kind == "timeout" else "provider_error"
        assert row["outcome"] == payload["outcome"] == outcome
        assert row["provider_used"] == "" and row["model_used"] == "" and row["parse_ok"] == ""
        assert "Traceback" in root.read("logs/error-1.log")
        (post,) = root.telegram.messages
        assert post["text"] == (f"🦫 #1 FAIL · AllProvidersFailed: all providers failed "
                                f"(primary: {kind}; fallback: {fb_kind})")
        assert payload["errors"] == [f"AllProvidersFailed: all providers failed (primary: {kind}; "
                                     f"fallback: {fb_kind})"]
        assert "❌ The tick failed" in root.read("state/LAST_RESULTS.md")
        assert not root.p("state/JOURNAL.md").exists() or root.read("state/JOURNAL.md") == ""
        assert not list(root.p("archive").glob("inbox-*.md"))  # kept for the next tick
    assert payload["tick_n"] == 1 and payload["ended_at"] and payload["wall_s"] < 30

    cooldowns = root.p("state/.mako/cooldowns.json")
    if kind == "usage_limit":
        entry = json.loads(cooldowns.read_text())["primary"]
        # Retry-After when the reply gives one (OpenCode's 429), else the 15-minute default.
        wait = GO_USAGE_RETRY_AFTER_S if (side, fault) == ("openai", "usage_limit") else DEFAULT_COOLDOWN_S
        assert started + wait - 5 <= entry["until"] <= time.time() + wait
        assert entry["base_url"] == slot_config(root, side)["base_url"]
        assert attempts[0]["cooldown_until"]
    else:
        saved = json.loads(cooldowns.read_text()) if cooldowns.exists() else {}
        # One timeout only starts a row (the second puts the primary on cool-down); nothing else is kept.
        assert "until" not in saved.get("primary", {}) and (kind == "timeout" or "primary" not in saved)

    # The tick finished and let go: a second one runs on the healthy config; a cooling primary is skipped.
    assert_lock_free(root)
    root.write_config(llm={"primary": slot_config(root, side), "fallback": slot_config(root, other)})
    assert root.tick() == 0
    second = root.payload(2)
    (_, row2) = root.metrics()
    assert row2["outcome"] == "ok"
    if kind == "usage_limit":
        assert [a["kind"] for a in second["llm_attempts"]] == ["cooling_down", None]
        assert second["llm_attempts"][0]["status"] is None
        assert row2["provider_used"] == "fallback"
        assert [r.route for r in fake_for(root, side).requests].count(ROUTE[side]) == 1
    else:
        assert [a["kind"] for a in second["llm_attempts"]] == [None]
        assert row2["provider_used"] == "primary"
    # An INBOX kept by a failed tick is seen and archived by the next.
    assert len(list(root.p("archive").glob("inbox-*.md"))) == 1
    assert_no_secrets(root)


def test_faults_every_provider_cooling_tries_the_one_that_ends_first(root):
    root.ollama.push("/api/chat", ollama_usage_limit())           # 15 minutes
    root.openai.push("/chat/completions", go_usage_limit(3600))  # an hour
    assert root.tick() == 1
    assert [a["kind"] for a in root.payload(1)["llm_attempts"]] == ["usage_limit", "usage_limit"]
    assert root.tick() == 0
    attempts = root.payload(2)["llm_attempts"]
    assert [(a["slot"], a["kind"]) for a in attempts] == [("primary", None)]
    saved = json.loads(root.read("state/.mako/cooldowns.json"))
    assert "primary" not in saved and "fallback" in saved  # a success clears only its own cool-down
    assert root.tick() == 0
    assert [(a["slot"], a["kind"]) for a in root.payload(3)["llm_attempts"]] == [("primary", None)]


# -- Telegram -------------------------------------------------------------------------------------------


def _script_telegram(root, fault):
    """Returns (expected records as (ok, status) pairs, delivered?)."""
    if fault == "429":
        root.telegram.push("sendMessage", tg_429(1))
        return [(False, 429), (True, 200)], True
    if fault == "thread_not_found":
        root.telegram.threads = {THREADS["requests"], THREADS["approvals"], THREADS["digest"]}
        return [(False, 400)], False
    if fault == "500_once":
        root.telegram.push("sendMessage", tg_error(500, "Internal Server Error"))
        return [(False, 500), (True, 200)], True
    if fault == "500_always":
        root.telegram.push("sendMessage", tg_error(500, "Internal Server Error"),
                           tg_error(500, "Internal Server Error"))
        return [(False, 500), (False, 500)], False
    if fault == "502_html":
        root.telegram.push("sendMessage", Reply(502, mode="html"))
        return [(False, 502), (True, 200)], True
    if fault == "refused":
        root.write_config(telegram={"api_base_url": closed_port_url()})
        return [(False, None), (False, None)], False
    raise AssertionError(fault)


@pytest.mark.parametrize("fault", ["429", "thread_not_found", "500_once", "500_always", "502_html", "refused"])
def test_faults_telegram_never_fails_the_tick(root, fault):
    expected, delivered = _script_telegram(root, fault)
    root.ollama.reply_content(reply(work_done="did the work", telegram="Summary for the operator."))
    assert root.tick() == 0
    payload = root.payload(1)
    (row,) = root.metrics()
    assert row["outcome"] == payload["outcome"] == "ok" and row["provider_used"] == "primary"
    assert not root.p("logs/error-1.log").exists()
    posts = payload["telegram_posts"]
    assert [(p["ok"], p["status"]) for p in posts] == expected
    assert all(p["thread_id"] == THREADS["log"] for p in posts)
    for p in posts:
        assert (p["error"] is None) == p["ok"]
    if fault == "429":
        assert posts[0]["retry_after"] == 1.0 and "retry after 1" in posts[0]["error"]
    if fault == "thread_not_found":
        assert "message thread not found" in posts[0]["error"]
    if fault == "refused":
        assert all("Connection" in p["error"] for p in posts)
    texts = root.telegram.texts(THREADS["log"])
    if delivered:
        (text,) = texts
        assert text.startswith("🦫 #1 · ") and "\nSummary for the operator.\n" in text
        assert posts[-1]["message_id"]
    else:
        assert texts == []
    assert_lock_free(root)
    root.write_config()
    assert root.tick() == 0
    assert_no_secrets(root)
    assert BOT_TOKEN.split(":")[1] not in json.dumps(payload)


def long_text(words_only):
    """About 10,000 characters with astral-plane emoji (2 UTF-16 units each), as words or paragraphs."""
    words = [f"w{i}🦫" if i % 7 == 0 else f"word{i}" for i in range(2000)]
    if words_only:
        text = " ".join(words)
    else:
        lines = [" ".join(words[i:i + 12]) for i in range(0, len(words), 12)]
        text = "\n".join(line + ("\n" if j % 5 == 4 else "") for j, line in enumerate(lines))
    return text[:10000].rstrip()


def assert_parts_reassemble(sent, original):
    """`sent` are the delivered parts "(i/n) ..." in order; they rebuild `original` exactly, except for the
    line breaks a part was cut at (trimmed from the ends of each part)."""
    n = len(sent)
    assert n >= 3
    pos = 0
    for i, body in enumerate(sent, 1):
        assert utf16_len(body) <= 4096
        prefix = f"({i}/{n}) "
        assert body.startswith(prefix), body[:20]
        piece = body[len(prefix):]
        assert piece
        while not original.startswith(piece, pos) and original[pos:pos + 1] == "\n":
            pos += 1
        assert original.startswith(piece, pos), f"part {i} is not the next slice of the original"
        pos += len(piece)
    assert original[pos:].strip("\n") == ""


@pytest.mark.parametrize("words_only", [False, True], ids=["paragraphs", "one_line"])
def test_faults_telegram_long_summary_split_in_order(root, words_only):
    text = long_text(words_only)
    assert len(text) == 10000
    root.write_config(tick={"telegram_summary_max_chars": 12000})
    root.ollama.reply_content(reply(work_done="long one", telegram=text))
    assert root.tick() == 0
    sent = root.telegram.texts(THREADS["log"])
    first_line = sent[0].split(" ", 1)[1].split("\n", 1)[0]
    assert re.fullmatch(r"🦫 #1 · \d\d:\d\d · \d+s · primary/qwen3\.5", first_line)
    original = f"{first_line}\n{text}\nactions: 0 run · 0 queued · 0 failed"
    assert_parts_reassemble(sent, original)
    # Cut near the limit: the short first line is not sent as a part of its own.
    assert all(utf16_len(part) > 2000 for part in sent[:-1])
    posts = root.payload(1)["telegram_posts"]
    n = len(sent)
    assert [(p["ok"], p["part"], p["parts"]) for p in posts] == [(True, i, n) for i in range(1, n + 1)]
    (row,) = root.metrics()
    assert row["outcome"] == "ok"


def test_faults_telegram_post_action_long_text_split_in_order(root):
    text = long_text(words_only=True)
    assert len(text) == 10000
    root.ollama.reply_content(reply(work_done="posted", telegram="short summary",
                                    actions=[{"type": "telegram_post", "thread": "requests", "text": text}]))
    assert root.tick() == 0
    sent = root.telegram.texts(THREADS["requests"])
    assert_parts_reassemble(sent, text)
    assert "".join(s.split(" ", 1)[1] for s in sent) == text  # cut at spaces: nothing at all is lost
    payload = root.payload(1)
    assert payload["actions"][0]["ok"] is True and payload["actions"][0]["delivered"] is True
    assert root.telegram.texts(THREADS["log"])[0].split("\n")[1] == "short summary"
    assert all(m["chat_id"] == CHAT_ID for m in root.telegram.messages)
    (row,) = root.metrics()
    assert row["outcome"] == "ok" and row["actions_executed"] == "1"
