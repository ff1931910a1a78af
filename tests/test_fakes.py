"""The fake servers themselves: wire shapes, scripting, and that faults behave as the clients will see them."""

import json
import time

import pytest
import requests

from fakes import (FakeOllama, FakeOpenAI, FakeTelegram, Reply, error_envelope_200, go_usage_limit,
                   ollama_thinking_only, ollama_usage_limit, reasoning_only, tg_429)

TOKEN = "123456789:AAE-fake-test-token-abcdefghijklmnopq"


def chat(fake, body, key=None, timeout=5):
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    return requests.post(fake.url + "/api/chat", json=body, headers=headers, timeout=timeout)


def test_fakes_ollama_happy_reply_has_real_shape_and_records_request():
    with FakeOllama(api_key="k-123456", content="hello") as fake:
        r = chat(fake, {"model": "qwen3.5", "stream": False, "messages": [{"role": "user", "content": "hi"}]},
                 key="k-123456")
        assert r.status_code == 200
        body = r.json()
        assert body["model"] == "qwen3.5"
        assert body["message"] == {"role": "assistant", "content": "hello"}
        assert body["done"] is True and body["done_reason"] == "stop"
        assert isinstance(body["eval_count"], int) and isinstance(body["prompt_eval_count"], int)
        assert fake.chat_requests()[0]["messages"][0]["content"] == "hi"
        assert fake.requests[0].headers["Authorization"] == "Bearer k-123456"


def test_fakes_ollama_auth_unknown_model_and_streaming():
    with FakeOllama(api_key="k-123456") as fake:
        r = chat(fake, {"model": "qwen3.5", "stream": False, "messages": []}, key="wrong")
        assert (r.status_code, r.json()) == (401, {"error": "unauthorized"})
        r = chat(fake, {"model": "llama9", "stream": False, "messages": []}, key="k-123456")
        assert r.status_code == 404 and r.json()["error"] == 'model "llama9" not found, try pulling it first'
        r = chat(fake, {"model": "qwen3.5", "messages": [{"role": "user", "content": "x"}]}, key="k-123456")
        lines = [json.loads(line) for line in r.text.splitlines()]
        assert len(lines) > 1 and lines[-1]["done"] is True
        assert "".join(line["message"]["content"] for line in lines) == fake.content


def test_fakes_ollama_scripted_replies_are_consumed_in_order():
    with FakeOllama() as fake:
        fake.push("/api/chat", ollama_usage_limit(), ollama_thinking_only())
        fake.reply_content("third", prompt_eval_count=None)
        body = {"model": "qwen3.5", "stream": False, "messages": [{"role": "user", "content": "x"}]}
        r1, r2, r3, r4 = (chat(fake, body) for _ in range(4))
        assert r1.status_code == 429 and "usage limit" in r1.json()["error"] and "Retry-After" not in r1.headers
        assert r2.json()["message"]["content"] == "" and r2.json()["done_reason"] == "length"
        assert r2.json()["message"]["thinking"]
        assert r3.json()["message"]["content"] == "third" and "prompt_eval_count" not in r3.json()
        assert r4.json()["message"]["content"] == fake.content


def test_fakes_openai_happy_and_opencode_errors():
    with FakeOpenAI(api_key="sk-abcdef", content="yo") as fake:
        h = {"Authorization": "Bearer sk-abcdef"}
        body = {"model": "qwen3.6", "messages": [{"role": "user", "content": "x"}], "max_tokens": 10}
        r = requests.post(fake.url + "/chat/completions", json=body, headers=h, timeout=5)
        data = r.json()
        assert data["object"] == "chat.completion" and data["choices"][0]["message"]["content"] == "yo"
        assert data["usage"]["prompt_tokens"] >= 1 and "cost" in data
        r = requests.post(fake.url + "/chat/completions", json=dict(body, model="nope"), headers=h, timeout=5)
        assert r.status_code == 401 and r.json()["error"]["type"] == "ModelError"
        r = requests.post(fake.url + "/chat/completions", json=body, headers={"Authorization": "Bearer x"}, timeout=5)
        assert r.status_code == 401 and r.json() == {"type": "error", "error": {"type": "AuthError",
                                                                                "message": "Invalid API key."}}
        fake.push("/chat/completions", go_usage_limit(), error_envelope_200(), reasoning_only())
        r = requests.post(fake.url + "/chat/completions", json=body, headers=h, timeout=5)
        assert r.status_code == 429 and r.headers["retry-after"] == "3600"
        assert r.json()["error"]["type"] == "GoUsageLimitError" and r.json()["metadata"]["limitName"] == "weekly"
        r = requests.post(fake.url + "/chat/completions", json=body, headers=h, timeout=5)
        assert r.status_code == 200 and r.json()["type"] == "error"
        r = requests.post(fake.url + "/chat/completions", json=body, headers=h, timeout=5)
        choice = r.json()["choices"][0]
        assert choice["message"]["content"] == "" and choice["message"]["reasoning_content"]
        assert choice["finish_reason"] == "length"


@pytest.mark.parametrize("mode,check", [
    ("html", lambda r: r.status_code == 502 and r.headers["Content-Type"] == "text/html"),
    ("malformed", lambda r: r.content == b'{"mess'),
    ("empty_body", lambda r: r.content == b""),
])
def test_fakes_fault_modes_answer_as_described(mode, check):
    with FakeOllama() as fake:
        fake.push("/api/chat", Reply(mode=mode))
        assert check(requests.post(fake.url + "/api/chat", json={}, timeout=5))


def test_fakes_close_early_drops_connection():
    with FakeOllama() as fake:
        fake.push("/api/chat", Reply(mode="close_early"))
        with pytest.raises(requests.ConnectionError):
            requests.post(fake.url + "/api/chat", json={}, timeout=5)


def test_fakes_hang_times_out_client_and_close_returns_promptly():
    fake = FakeOllama()
    fake.push("/api/chat", Reply(mode="hang"), Reply(delay_s=30))
    with pytest.raises(requests.Timeout):
        requests.post(fake.url + "/api/chat", json={}, timeout=(2, 0.3))
    with pytest.raises(requests.Timeout):
        requests.post(fake.url + "/api/chat", json={}, timeout=(2, 0.3))
    start = time.monotonic()
    fake.close()
    assert time.monotonic() - start < 2
    with pytest.raises(requests.ConnectionError):
        requests.post(fake.url + "/api/chat", json={}, timeout=2)


def test_fakes_telegram_send_message_rules():
    with FakeTelegram(TOKEN) as fake:
        base = f"{fake.url}/bot{TOKEN}/sendMessage"
        r = requests.post(base, json={"chat_id": -100, "text": "hi", "message_thread_id": 7}, timeout=5)
        assert r.json()["ok"] is True and r.json()["result"]["message_thread_id"] == 7
        r2 = requests.post(base, json={"chat_id": -100, "text": "again"}, timeout=5)
        assert r2.json()["result"]["message_id"] == r.json()["result"]["message_id"] + 1
        assert requests.post(base, json={"chat_id": -100, "text": "x" * 4097}, timeout=5).json()["description"] \
            == "Bad Request: message is too long"
        assert requests.post(base, json={"chat_id": -100, "text": ""}, timeout=5).status_code == 400
        assert requests.post(base, json={"chat_id": -100, "text": "g", "message_thread_id": 1},
                             timeout=5).json()["description"] == "Bad Request: message thread not found"
        bad = requests.post(f"{fake.url}/bot1:wrong/sendMessage", json={"chat_id": 1, "text": "x"}, timeout=5)
        assert (bad.status_code, bad.json()["description"]) == (401, "Unauthorized")
        fake.push("sendMessage", tg_429(retry_after=3))
        r = requests.post(base, json={"chat_id": -100, "text": "later"}, timeout=5)
        assert r.status_code == 429 and r.json()["parameters"]["retry_after"] == 3
        assert fake.texts() == ["hi", "again"]
        assert fake.texts(thread_id=7) == ["hi"] and fake.texts(thread_id=None) == ["again"]
        assert len(fake.messages) == 7
        assert requests.get(f"{fake.url}/bot{TOKEN}/getMe", timeout=5).json()["result"]["is_bot"] is True
