"""Health alerts (§21) driven by real ticks against the fake providers and the fake Telegram."""

import json

import pytest

from conftest import THREADS, reply
from fakes import Reply

from mako import health


def alerts(root):
    return [m["text"] for m in root.telegram.messages if m["text"].startswith(("⚠️", "✅"))]


def fail_primary(root, n=1):
    root.ollama.push("/api/chat", *[Reply(500, {"error": "Internal Server Error"})] * n)


def fail_fallback(root, n=1):
    root.openai.push("/chat/completions", *[Reply(503, {"error": {"message": "overloaded"}})] * n)


def ticks(root, n):
    return [root.tick() for _ in range(n)]


def test_health_primary_down_five_ticks_then_back_one_alert_one_recovery(root):
    fail_primary(root, 5)
    assert ticks(root, 2) == [0, 0]
    assert alerts(root) == []  # two failures are under alert_after_ticks (3)
    assert root.tick() == 0
    (alert,) = alerts(root)
    assert alert.startswith("⚠️ primary qwen3.5 failing since ")
    assert alert.endswith(" (3 ticks, last: http_500); running on qwen3.6")
    posted = [m for m in root.telegram.messages if m["text"] == alert][0]
    assert posted["message_thread_id"] == THREADS["log"]
    ticks(root, 2)
    assert len(alerts(root)) == 1  # no repeat while the episode lasts
    # Back from tick 6: the episode closes once it has answered alert_after_ticks ticks in a row.
    ticks(root, 2)
    assert len(alerts(root)) == 1
    root.tick()
    assert alerts(root)[1:] == ["✅ primary back after 5 ticks"]
    ticks(root, 3)
    assert len(alerts(root)) == 2
    assert [row["provider_used"] for row in root.metrics()] == ["fallback"] * 5 + ["primary"] * 6


def test_health_both_providers_down_alerts_primary_and_ticks_once_each(root):
    fail_primary(root, 4)
    fail_fallback(root, 4)
    assert ticks(root, 4) == [1, 1, 1, 1]
    got = alerts(root)
    assert len(got) == 2
    assert any(a.startswith("⚠️ primary qwen3.5 failing since ") and
               a.endswith("(3 ticks, last: http_500); all providers failing") for a in got)
    assert any(a.startswith("⚠️ ticks failing since ") and a.endswith("(3 ticks, last: provider_error)")
               for a in got)
    assert ticks(root, 3) == [0, 0, 0]
    assert sorted(alerts(root)[2:]) == ["✅ primary back after 4 ticks", "✅ ticks back after 4 ticks"]


def test_health_flapping_primary_is_one_episode_not_a_post_per_flip(root):
    # Fails on every other tick for 20 ticks: one alert, no recovery while it keeps flapping.
    for i in range(20):
        if i % 2 == 0:
            fail_primary(root)
        assert root.tick() == 0
    got = alerts(root)
    assert len(got) == 1 and got[0].startswith("⚠️ primary qwen3.5 failing since ")
    assert "(3 ticks, last: http_500)" in got[0]  # the third failure, two good ticks in between
    ticks(root, 3)
    assert alerts(root)[1:] == ["✅ primary back after 19 ticks"]
    state = health.load(root.cfg().paths.private)
    assert state["primary"]["open"] is False and state["primary"]["fails"] == 0


def test_health_single_failures_never_alert(root):
    for _ in range(3):
        fail_primary(root)
        ticks(root, 4)  # a failure, then alert_after_ticks good ticks clear it
    assert alerts(root) == []
    history = health.read_history(root.cfg().paths.private)
    assert [r["primary"] for r in history].count("http_500") == 3 and len(history) == 12


def test_health_restart_mid_episode_posts_no_second_alert(root):
    fail_primary(root, 6)
    ticks(root, 3)
    assert len(alerts(root)) == 1
    saved = json.loads(root.read("state/.mako/health.json"))
    assert saved["primary"]["open"] is True and saved["primary"]["alert_sent"] is True
    # A new process, as after a restart of the service: the episode is remembered.
    for _ in range(2):
        r = root.run("tick.py")
        assert r.returncode == 0, r.stderr
    assert len(alerts(root)) == 1
    assert json.loads(root.read("state/.mako/health.json"))["primary"]["fails"] == 5


def test_health_alert_not_delivered_is_sent_on_the_next_tick_once(root):
    root.write_config(health={"alert_after_ticks": 2})
    fail_primary(root, 4)
    root.tick()
    # Telegram refuses both posts of the second tick (its summary, then the alert).
    refused = root.telegram.tg_error(400, "Bad Request: message thread not found")
    root.telegram.push("sendMessage", refused, refused)
    root.tick()
    assert len(alerts(root)) == 1 and not [t for t in root.telegram.texts() if t.startswith("⚠️")]
    assert json.loads(root.read("state/.mako/health.json"))["primary"]["alert_sent"] is False
    ticks(root, 2)
    delivered = [t for t in root.telegram.texts() if t.startswith("⚠️")]
    assert len(delivered) == 1 and "(3 ticks, last: http_500)" in delivered[0]
    assert len(alerts(root)) == 2  # refused once, delivered once, then never again


@pytest.mark.parametrize("junk", [
    '{"primary": {"fails": "many", "open": 3}, "ticks": [',
    '{"primary": {"since": "yesterday", "since_tick": -4, "last_kind": 7, "alert_sent": 1}, "ticks": 5}',
    '[1, 2, 3]',
])
def test_health_corrupt_state_file_reads_as_fresh(root, junk):
    root.tick()
    root.p("state/.mako/health.json").write_text(junk)
    fail_primary(root, 3)
    ticks(root, 3)
    (alert,) = alerts(root)
    assert "(3 ticks, last: http_500)" in alert
    assert not [e for n in range(2, 5) for e in root.payload(n)["errors"] if "health" in e]


def test_health_history_trimmed_to_its_newest_half(root, monkeypatch):
    monkeypatch.setattr(health, "HISTORY_MAX_BYTES", 400)
    ticks(root, 12)
    history = health.read_history(root.cfg().paths.private)
    assert root.p("state/.mako/health.jsonl").stat().st_size <= 400 + 200
    assert history[-1]["tick"] == 12 and history[0]["tick"] > 1
    assert [r["tick"] for r in history] == list(range(history[0]["tick"], 13))


def test_health_tick_without_provider_attempt_leaves_primary_alone(root):
    root.p("state").mkdir(parents=True, exist_ok=True)
    fail_primary(root, 3)
    ticks(root, 2)
    events = health.record_tick(root.cfg(), 99, "fail", [], _NoTelegram())
    assert events == {"ticks": None}
    state = health.load(root.cfg().paths.private)
    assert state["primary"]["fails"] == 2 and state["ticks"]["fails"] == 1


class _NoTelegram:
    def send(self, text, thread="log", reply_markup=None):
        raise AssertionError("nothing should be posted")


def test_health_reply_with_fallback_used_counts_as_primary_failure(root):
    root.write_config(llm={"primary": {"base_url": "http://127.0.0.1:9"}})
    root.openai.reply_content(reply(work_done="fallback"))
    root.tick()
    state = health.load(root.cfg().paths.private)
    assert state["primary"]["fails"] == 1 and state["primary"]["last_kind"] == "connection"
