"""Provider calls against the local fakes: exact requests, fallback on every failure kind, cool-downs,
deadlines, and that no secret reaches an attempt record or a provider."""

import json
import time

import pytest

from conftest import BOT_TOKEN, FALLBACK_KEY, PRIMARY_KEY, SECRETS, closed_port_url
from fakes import (Reply, error_envelope_200, go_usage_limit, ollama_thinking_only, ollama_usage_limit,
                   reasoning_only)
from mako.errors import AllProvidersFailed
from mako.llm import DEFAULT_COOLDOWN_S, call_providers, retry_after_s
from mako.redact import Redactor


@pytest.fixture(autouse=True)
def no_env_secrets(monkeypatch):
    for name in ("MAKO_PRIMARY_API_KEY", "MAKO_FALLBACK_API_KEY", "MAKO_TELEGRAM_BOT_TOKEN"):
        monkeypatch.delenv(name, raising=False)


def call(root, system="You are mako.", user="Tick 1. Do the next thing.", deadline_in=60, clock=time.time):
    cfg = root.cfg()
    return call_providers(cfg, system, user, clock() + deadline_in, Redactor(cfg.secrets()), clock=clock)




def cooldowns(root):
    return json.loads(root.read("state/.mako/cooldowns.json"))


def test_llm_ollama_happy_path_sends_exact_request(root, ollama, openai):
    ollama.reply_content('{"work_done": "wrote tests"}')
    result = call(root, system="SYS", user="USER")
    assert (result.slot, result.type, result.model) == ("primary", "ollama", "qwen3.5")
    assert result.content == '{"work_done": "wrote tests"}'
    assert isinstance(result.prompt_tokens, int) and isinstance(result.completion_tokens, int)
    assert result.wall_s >= 0 and len(result.attempts) == 1
    req = ollama.requests[-1]
    assert (req.method, req.path) == ("POST", "/api/chat")
    assert req.json == {"model": "qwen3.5", "stream": False, "think": False, "options": {"num_predict": 12000},
                        "messages": [{"role": "system", "content": "SYS"}, {"role": "user", "content": "USER"}]}
    assert req.header("Authorization") == f"Bearer {PRIMARY_KEY}"
    assert req.header("Content-Type") == "application/json"
    assert req.header("User-Agent").startswith("mako-zero/")
    attempt = result.attempts[0]
    assert attempt["ok"] is True and attempt["kind"] is None and attempt["status"] == 200
    assert attempt["request"]["headers"]["Authorization"] == "<redacted>"
    assert attempt["request"]["body"] == req.json
    assert attempt["url"] == ollama.url + "/api/chat"
    assert openai.requests == []


def test_llm_ollama_without_key_sends_no_authorization(root, ollama):
    ollama.api_key = None
    root.write_config(llm={"primary": {"api_key": ""}})
    assert call(root).slot == "primary"
    assert ollama.requests[-1].header("Authorization") is None


def test_llm_openai_happy_path_sends_exact_request_and_stable_session(root, openai):
    root.write_config(llm={"primary": {"type": "openai_compat", "base_url": openai.url, "api_key": FALLBACK_KEY,
                                       "model": "qwen3.6", "num_predict": 3000}})
    openai.reply_content("first")
    first = call(root, system="SYS", user="USER")
    second = call(root)
    assert (first.slot, first.type, first.content, second.content) == ("primary", "openai_compat", "first",
                                                                       openai.content)
    assert first.prompt_tokens is not None and first.completion_tokens is not None
    r1, r2 = openai.requests_to("/chat/completions")
    assert r1.json == {"model": "qwen3.6", "max_tokens": 3000, "stream": False,
                       "messages": [{"role": "system", "content": "SYS"}, {"role": "user", "content": "USER"}]}
    assert r1.header("Authorization") == f"Bearer {FALLBACK_KEY}"
    assert r1.header("User-Agent").startswith("mako-zero/")
    session = r1.header("x-opencode-session")
    assert session and session == r2.header("x-opencode-session")
    assert root.read("state/.mako/opencode-session").strip() == session


def test_llm_usage_counts_absent_are_none(root, ollama, openai):
    ollama.reply_content("ok", prompt_eval_count=None, eval_count=None)
    result = call(root)
    assert (result.prompt_tokens, result.completion_tokens) == (None, None)


@pytest.mark.parametrize("reply,kind", [
    (Reply(429, {"error": "too many requests"}), "http_429"),
    (Reply(500, {"error": "Internal Server Error"}), "http_500"),
    (Reply(503, {"error": "server busy"}), "http_503"),
    (Reply(mode="malformed"), "bad_json"),
    (Reply(mode="empty_body"), "bad_json"),
    (Reply(mode="html"), "http_502"),
    (Reply(mode="close_early"), "connection"),
    (Reply(200, {"error": "an error was encountered while running the model"}), "error_envelope"),
    (Reply(200, [1, 2]), "bad_json"),
    (ollama_thinking_only(), "thinking_only"),
])
def test_llm_falls_back_on_primary_failure(root, ollama, openai, reply, kind):
    ollama.push("/api/chat", reply)
    result = call(root)
    assert result.slot == "fallback" and result.content == openai.content
    failed, ok = result.attempts
    assert (failed["slot"], failed["kind"], failed["ok"]) == ("primary", kind, False)
    assert failed["error"] and ok["ok"] is True
    assert not root.p("state/.mako/cooldowns.json").exists()


def test_llm_falls_back_on_empty_content(root, ollama, openai):
    ollama.reply_content("   ")
    result = call(root)
    assert result.slot == "fallback" and result.attempts[0]["kind"] == "empty"
    assert result.attempts[0]["response_body"].startswith("{")


def test_llm_falls_back_on_unknown_model(root, ollama, openai):
    root.write_config(llm={"primary": {"model": "llama9"}})
    result = call(root)
    assert result.slot == "fallback"
    assert result.attempts[0]["kind"] == "http_404" and "not found" in result.attempts[0]["error"]


def test_llm_falls_back_on_timeout(root, ollama, openai):
    root.write_config(llm={"primary": {"timeout_s": 1}})
    ollama.push("/api/chat", Reply(delay_s=5))
    start = time.monotonic()
    result = call(root)
    assert time.monotonic() - start < 4
    assert result.slot == "fallback" and result.attempts[0]["kind"] == "timeout"
    assert result.attempts[0]["status"] is None
    assert result.wall_s == pytest.approx(sum(a["wall_s"] for a in result.attempts), abs=0.01)


def test_llm_drip_reply_cannot_outlast_the_attempt_budget(root, ollama, openai):
    root.write_config(llm={"primary": {"timeout_s": 1}})
    ollama.push("/api/chat", Reply(200, {"message": {"content": "x" * 200}}, mode="drip", delay_s=0.05))
    start = time.monotonic()
    result = call(root)
    assert time.monotonic() - start < 4
    assert result.slot == "fallback" and result.attempts[0]["kind"] == "timeout"


def test_llm_falls_back_on_connection_refused(root, openai):
    root.write_config(llm={"primary": {"base_url": closed_port_url()}})
    result = call(root)
    assert result.slot == "fallback" and result.attempts[0]["kind"] == "connection"


def test_llm_both_failing_raises_with_both_attempts(root, ollama, openai):
    ollama.push("/api/chat", Reply(500, {"error": "Internal Server Error"}))
    openai.push("/chat/completions", error_envelope_200())
    with pytest.raises(AllProvidersFailed) as info:
        call(root)
    attempts = info.value.attempts
    assert [(a["slot"], a["kind"], a["status"]) for a in attempts] == [("primary", "http_500", 500),
                                                                       ("fallback", "error_envelope", 200)]
    assert "Endpoint is unavailable" in attempts[1]["response_body"]
    assert "primary: http_500" in str(info.value)


def test_llm_reasoning_only_and_null_content_are_failures(root, ollama, openai):
    ollama.push("/api/chat", Reply(mode="malformed"))
    openai.push("/chat/completions", reasoning_only(content=None))
    with pytest.raises(AllProvidersFailed) as info:
        call(root)
    assert [a["kind"] for a in info.value.attempts] == ["bad_json", "thinking_only"]


def test_llm_ollama_stream_reply_is_folded(root, ollama, openai):
    lines = [{"model": "qwen3.5", "message": {"role": "assistant", "content": "hel"}, "done": False},
             {"model": "qwen3.5", "message": {"role": "assistant", "content": "lo"}, "done": False},
             {"model": "qwen3.5", "message": {"role": "assistant", "content": ""}, "done": True,
              "done_reason": "stop", "prompt_eval_count": 9, "eval_count": 2}]
    ollama.push("/api/chat", Reply(200, "".join(json.dumps(line) + "\n" for line in lines)))
    result = call(root)
    assert (result.slot, result.content, result.prompt_tokens, result.completion_tokens) == ("primary", "hello", 9, 2)


def test_llm_usage_limit_cooldown_persisted_and_honoured(root, ollama, openai):
    ollama.push("/api/chat", ollama_usage_limit())
    now = time.time()
    first = call(root)
    assert first.slot == "fallback" and first.attempts[0]["kind"] == "usage_limit"
    saved = cooldowns(root)["primary"]
    assert saved["until"] == pytest.approx(now + DEFAULT_COOLDOWN_S, abs=30)
    assert saved["base_url"] == ollama.url and first.attempts[0]["cooldown_until"] == saved["until_iso"]

    asked = len(ollama.requests)
    second = call(root)
    assert second.slot == "fallback"
    skipped = second.attempts[0]
    assert (skipped["slot"], skipped["kind"], skipped["ok"], skipped["request"]) == ("primary", "cooling_down",
                                                                                     False, None)
    assert len(ollama.requests) == asked

    later = call(root, clock=lambda: time.time() + DEFAULT_COOLDOWN_S + 60)
    assert later.slot == "primary" and len(later.attempts) == 1


def test_llm_go_usage_limit_uses_retry_after_and_all_cooling_tries_earliest(root, ollama, openai):
    ollama.push("/api/chat", ollama_usage_limit())
    openai.push("/chat/completions", go_usage_limit(retry_after=120))
    now = time.time()
    with pytest.raises(AllProvidersFailed) as info:
        call(root)
    assert [a["kind"] for a in info.value.attempts] == ["usage_limit", "usage_limit"]
    saved = cooldowns(root)
    assert saved["fallback"]["until"] == pytest.approx(now + 120, abs=30)
    assert saved["primary"]["until"] > saved["fallback"]["until"]

    result = call(root)
    assert result.slot == "fallback"
    assert [a["kind"] for a in result.attempts] == ["cooling_down", None]
    assert "fallback" not in cooldowns(root) and "primary" in cooldowns(root)


def test_llm_cooldown_for_another_endpoint_is_ignored(root, ollama, openai):
    ollama.push("/api/chat", ollama_usage_limit())
    call(root)
    data = cooldowns(root)
    data["primary"]["base_url"] = "https://elsewhere.example"
    root.p("state/.mako/cooldowns.json").write_text(json.dumps(data))
    assert call(root).slot == "primary"


def test_llm_deadline_too_close_starts_no_attempt(root, ollama, openai):
    with pytest.raises(AllProvidersFailed) as info:
        call(root, deadline_in=1.5)
    assert [a["kind"] for a in info.value.attempts] == ["timeout", "timeout"]
    assert ollama.requests == [] and openai.requests == []


def test_llm_hanging_primary_leaves_the_fallback_its_turn(root, ollama, openai):
    root.write_config(llm={"primary": {"timeout_s": 180}, "fallback": {"timeout_s": 120}})
    ollama.push("/api/chat", Reply(mode="hang"))
    start = time.monotonic()
    result = call(root, deadline_in=10)
    assert time.monotonic() - start < 9
    assert result.slot == "fallback"
    # Half the 9 s left (after the 1 s reserve) went to the primary: less than the fallback's own timeout.
    assert result.attempts[0]["kind"] == "timeout" and 4.0 <= result.attempts[0]["wall_s"] < 5.5


def test_llm_primary_leaves_the_fallback_its_own_timeout(root, ollama, openai):
    root.write_config(llm={"primary": {"timeout_s": 180}, "fallback": {"timeout_s": 2}})
    ollama.push("/api/chat", Reply(mode="hang"))
    result = call(root, deadline_in=9)
    assert result.slot == "fallback"
    assert 5.0 <= result.attempts[0]["wall_s"] < 6.3  # 8 s left, less the fallback's 2 s (and a little slack)


def test_llm_two_timeouts_in_a_row_put_the_provider_on_cooldown(root, ollama, openai):
    root.write_config(llm={"primary": {"timeout_s": 1}, "timeout_cooldown_s": 90})
    ollama.push("/api/chat", Reply(mode="hang"), Reply(mode="hang"))
    assert call(root).slot == "fallback"
    assert cooldowns(root)["primary"]["timeouts_in_row"] == 1 and "until" not in cooldowns(root)["primary"]
    before = time.time()
    second = call(root)
    saved = cooldowns(root)["primary"]
    assert second.attempts[0]["cooldown_until"] == saved["until_iso"]
    assert before + 89 <= saved["until"] <= time.time() + 91
    asked = len(ollama.chat_requests())
    third = call(root)
    assert third.slot == "fallback" and third.attempts[0]["kind"] == "cooling_down"
    assert len(ollama.chat_requests()) == asked


def test_llm_a_quick_failure_breaks_a_row_of_timeouts(root, ollama, openai):
    root.write_config(llm={"primary": {"timeout_s": 1}})
    ollama.push("/api/chat", Reply(mode="hang"), Reply(500, {"error": "Internal Server Error"}),
                Reply(mode="hang"))
    for _ in range(3):
        assert call(root).slot == "fallback"
    saved = cooldowns(root)["primary"]
    assert saved["timeouts_in_row"] == 1 and "until" not in saved
    assert call(root).attempts[0]["ok"] is True
    assert "primary" not in cooldowns(root)


def test_llm_timeout_while_all_are_cooling_keeps_the_cooldown(root, ollama, openai):
    root.write_config(llm={"primary": {"timeout_s": 1}})
    cfg = root.cfg()
    later = time.time() + 3600
    path = root.p("state/.mako/cooldowns.json")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"primary": {"until": later, "base_url": cfg.primary.base_url},
                                "fallback": {"until": later + 60, "base_url": cfg.fallback.base_url}}))
    ollama.push("/api/chat", Reply(mode="hang"))
    with pytest.raises(AllProvidersFailed):
        call(root)
    saved = cooldowns(root)["primary"]
    assert saved["until"] == later and saved["timeouts_in_row"] == 1


def test_llm_read_timeout_shortened_by_deadline(root, ollama, openai):
    ollama.push("/api/chat", Reply(mode="hang"))
    start = time.monotonic()
    with pytest.raises(AllProvidersFailed) as info:
        call(root, deadline_in=3.5)
    assert time.monotonic() - start < 3.5
    assert [a["kind"] for a in info.value.attempts] == ["timeout", "timeout"]
    assert openai.requests == []


def test_llm_secrets_never_in_attempts_or_provider_requests(root, ollama, openai):
    ollama.push("/api/chat", Reply(500, {"error": f"key {PRIMARY_KEY} rejected, token bot{BOT_TOKEN}"}))
    openai.reply_content(f"echo {FALLBACK_KEY}")
    result = call(root, system=f"system with {PRIMARY_KEY}", user=f"user with {BOT_TOKEN} and {FALLBACK_KEY}")
    dumped = json.dumps(result.attempts) + result.content
    for secret in SECRETS:
        assert secret not in dumped
    for req in ollama.requests + openai.requests:
        for secret in SECRETS:
            assert secret.encode() not in req.body
    assert "<redacted>" in result.attempts[0]["response_body"]


def test_llm_secrets_never_in_failure_text(root, ollama, openai):
    root.write_config(llm={"primary": {"base_url": closed_port_url() + "/" + PRIMARY_KEY},
                           "fallback": {"base_url": closed_port_url()}})
    with pytest.raises(AllProvidersFailed) as info:
        call(root)
    text = str(info.value) + json.dumps(info.value.attempts)
    assert PRIMARY_KEY not in text and FALLBACK_KEY not in text


def test_llm_retry_after_parses_seconds_and_http_date():
    assert retry_after_s({"retry-after": "3600"}, 0) == 3600
    assert retry_after_s({"retry-after": "Thu, 01 Jan 1970 01:00:00 GMT"}, 0) == 3600
    assert retry_after_s({"retry-after": "soon"}, 0) is None
    assert retry_after_s({}, 0) is None
