"""Telegram sends against the local fake: request shape, threads, splitting, retries, and that the bot
token never shows up in a record or a log line."""

import json
import time

import pytest
import yaml

from conftest import BOT_TOKEN, PRIMARY_KEY, closed_port_url
from fakes import FakeTelegram, Reply, tg_429, tg_error
from mako.config import load_config
from mako.logs import setup_logging
from mako.redact import Redactor
from mako.telegram import TelegramClient, resolve_thread, split_message, utf16_len

CHAT = 424242
THREADS = {"log": 11, "requests": 22, "approvals": 33, "digest": 0}


@pytest.fixture(autouse=True)
def no_env_secrets(monkeypatch):
    monkeypatch.delenv("MAKO_TELEGRAM_BOT_TOKEN", raising=False)


def make_tg(tmp_path, base_url, token=BOT_TOKEN, chat_id=CHAT):
    config = {"paths": {"root": str(tmp_path)},
              "llm": {"primary": {"api_key": PRIMARY_KEY}},
              "telegram": {"bot_token": token, "chat_id": chat_id, "api_base_url": base_url,
                           **{f"{k}_thread_id": v for k, v in THREADS.items()}}}
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    cfg = load_config(path)
    return cfg.telegram, Redactor(cfg.secrets())


class Sleeps(list):
    def __call__(self, seconds):
        self.append(seconds)


@pytest.fixture
def fake():
    with FakeTelegram(token=BOT_TOKEN) as server:
        yield server


@pytest.fixture
def client(tmp_path, fake):
    tg, redactor = make_tg(tmp_path, fake.url)
    sleeps = Sleeps()
    c = TelegramClient(tg, redactor, deadline=time.time() + 60, sleep=sleeps)
    c.sleeps = sleeps
    yield c
    c.close()




def test_telegram_send_posts_plain_text_to_log_thread(client, fake):
    assert client.send("🦫 #1 · hello") is True
    assert fake.messages == [{"chat_id": CHAT, "text": "🦫 #1 · hello", "message_thread_id": 11,
                              "link_preview_options": {"is_disabled": True}}]
    assert fake.requests[0].path == f"/bot{BOT_TOKEN}/sendMessage"
    assert fake.requests[0].header("Content-Type") == "application/json"
    assert client.records == [{"ok": True, "status": 200, "error": None, "thread_id": 11, "part": 1, "parts": 1,
                               "chars": utf16_len("🦫 #1 · hello"), "message_id": 901}]


def test_telegram_send_thread_names_numbers_and_unset(client, fake):
    assert client.send("a", "requests") and client.send("b", 77) and client.send("c", "digest")
    assert client.send("d", "0")
    assert fake.texts(thread_id=22) == ["a"] and fake.texts(thread_id=77) == ["b"]
    assert fake.texts(thread_id=None) == ["c", "d"]
    assert "message_thread_id" not in fake.messages[2]


def test_telegram_resolve_thread(tmp_path):
    tg, _ = make_tg(tmp_path, "http://127.0.0.1:9")
    assert [resolve_thread(tg, t) for t in ("log", " Approvals ", "digest", 5, "42", 0, 1, 7.0)] == \
        [11, 33, 0, 5, 42, 0, 0, 7]
    assert [resolve_thread(tg, t) for t in ("nonsense", -3, True, None, 2.5, [11], "")] == [None] * 7


def test_telegram_unknown_thread_is_refused_without_request(client, fake):
    assert client.send("x", "general-chat") is False
    assert fake.requests == []
    assert client.records[0]["ok"] is False and "unknown thread" in client.records[0]["error"]


def test_telegram_disabled_records_nothing(tmp_path, fake):
    tg, redactor = make_tg(tmp_path, fake.url, token="")
    client = TelegramClient(tg, redactor)
    assert client.send("hello") is False
    assert client.records == [] and fake.requests == []


def test_telegram_split_long_message_into_ordered_parts(client, fake):
    paragraphs = [f"paragraph {i}: " + "word " * 60 for i in range(33)]
    text = "\n\n".join(paragraphs)
    assert 9500 < len(text) < 10500
    assert client.send(text) is True
    sent = fake.texts()
    assert len(sent) == 3 and all(utf16_len(t) <= 4096 for t in sent)
    assert [t.split(" ", 1)[0] for t in sent] == ["(1/3)", "(2/3)", "(3/3)"]
    joined = "\n\n".join(t.split(" ", 1)[1] for t in sent)
    assert joined.split() == text.split()
    assert [(r["part"], r["parts"], r["ok"]) for r in client.records] == [(1, 3, True), (2, 3, True), (3, 3, True)]


def test_telegram_split_message_keeps_every_character():
    text = "intro\n\n" + "x" * 9000 + "\nshort line\n" + "🦫" * 3000
    parts = split_message(text)
    assert "".join(parts) == text
    assert all(utf16_len(p) <= 4000 for p in parts)
    assert parts[0] == "intro\n\n"
    assert split_message("short") == ["short"] and split_message("") == []


def test_telegram_split_prefers_paragraphs_then_lines():
    para = "a" * 2500 + "\n\n" + "b" * 2500
    assert split_message(para) == ["a" * 2500 + "\n\n", "b" * 2500]
    lines = "c" * 2500 + "\n" + "d" * 2500
    assert split_message(lines) == ["c" * 2500 + "\n", "d" * 2500]
    words = ("e" * 9 + " ") * 500
    assert all(p.endswith(" ") for p in split_message(words))


def test_telegram_429_waits_retry_after_and_retries(client, fake):
    fake.push("sendMessage", tg_429(retry_after=2))
    assert client.send("after the flood") is True
    assert client.sleeps == [2.0]
    assert [(r["ok"], r["status"]) for r in client.records] == [(False, 429), (True, 200)]
    assert client.records[0]["retry_after"] == 2.0 and "retry after 2" in client.records[0]["error"]
    assert fake.texts() == ["after the flood"]


def test_telegram_429_past_the_deadline_gives_up(tmp_path, fake):
    tg, redactor = make_tg(tmp_path, fake.url)
    sleeps = Sleeps()
    client = TelegramClient(tg, redactor, deadline=time.time() + 10, sleep=sleeps)
    fake.push("sendMessage", tg_429(retry_after=35))
    assert client.send("x") is False
    assert sleeps == [] and len(fake.messages) == 1


def test_telegram_repeated_429_stops_after_a_few_retries(client, fake):
    fake.push("sendMessage", *[tg_429(retry_after=1) for _ in range(10)])
    assert client.send("x") is False
    assert len(fake.messages) == 4 and len(client.sleeps) == 3


def test_telegram_400_thread_not_found_recorded_no_retry(tmp_path):
    with FakeTelegram(token=BOT_TOKEN, threads={11}) as fake:
        tg, redactor = make_tg(tmp_path, fake.url)
        client = TelegramClient(tg, redactor, sleep=Sleeps())
        assert client.send("x", 99) is False
        assert len(fake.messages) == 1
        assert client.records == [{"ok": False, "status": 400, "thread_id": 99, "part": 1, "parts": 1, "chars": 1,
                                   "error": "HTTP 400: Bad Request: message thread not found", "message_id": None}]


@pytest.mark.parametrize("reply", [tg_error(502, "Bad Gateway"), Reply(mode="html"), Reply(mode="close_early")])
def test_telegram_transient_failure_retried_once(client, fake, reply):
    fake.push("sendMessage", reply)
    assert client.send("x") is True
    assert client.sleeps == [1.0]
    assert [r["ok"] for r in client.records] == [False, True]


def test_telegram_persistent_5xx_gives_up_after_one_retry(client, fake):
    fake.push("sendMessage", tg_error(500, "Internal Server Error"), tg_error(500, "Internal Server Error"),
              tg_error(500, "Internal Server Error"))
    assert client.send("x") is False
    assert len(fake.messages) == 2


def test_telegram_connection_refused_recorded_without_token(tmp_path, capsys):
    tg, redactor = make_tg(tmp_path, closed_port_url())
    client = TelegramClient(tg, redactor, sleep=Sleeps())
    setup_logging(verbose=True)  # as an entry point logs, at DEBUG
    assert client.send("x") is False
    assert [r["status"] for r in client.records] == [None, None]
    assert "ConnectionRefusedError" in client.records[0]["error"]
    err = capsys.readouterr().err
    assert "telegram send failed" in err  # the failure was logged
    dumped = json.dumps(client.records) + err
    assert BOT_TOKEN not in dumped and BOT_TOKEN.split(":")[1] not in dumped


def test_telegram_wrong_token_401_recorded_without_token(tmp_path, fake, capsys):
    wrong = "987654321:ZZZ-wrong-token-abcdefghijklmnopqrstu"
    tg, redactor = make_tg(tmp_path, fake.url, token=wrong)
    client = TelegramClient(tg, redactor, sleep=Sleeps())
    setup_logging(verbose=True)
    assert client.send("x") is False
    assert [(r["status"], r["error"]) for r in client.records] == [(401, "HTTP 401: Unauthorized")]
    err = capsys.readouterr().err
    assert "telegram send failed: HTTP 401" in err
    assert wrong not in json.dumps(client.records) + err


def test_telegram_text_is_scrubbed_before_sending(client, fake):
    assert client.send(f"key {PRIMARY_KEY} and bot{BOT_TOKEN}/getMe")
    sent = fake.texts()[0]
    assert PRIMARY_KEY not in sent and BOT_TOKEN not in sent and "<redacted>" in sent


def test_telegram_send_never_raises(client, fake, monkeypatch):
    def boom(*args, **kwargs):
        raise RuntimeError(f"exploded near bot{BOT_TOKEN}")
    client.send("warm up")
    monkeypatch.setattr(client._conn, "request", boom)
    assert client.send("x") is False
    assert client.records[-1]["ok"] is False and "RuntimeError" in client.records[-1]["error"]
    assert BOT_TOKEN not in client.records[-1]["error"]


def test_telegram_deadline_passed_sends_nothing(tmp_path, fake):
    tg, redactor = make_tg(tmp_path, fake.url)
    client = TelegramClient(tg, redactor, deadline=time.time() - 1)
    assert client.send("late") is False
    assert fake.requests == [] and "deadline" in client.records[0]["error"]


def test_telegram_empty_text_is_not_sent(client, fake):
    assert client.send("   \n") is False
    assert fake.requests == [] and client.records[0]["error"] == "empty text, nothing sent"
