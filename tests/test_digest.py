"""digest.py and mako.digest: exact figures over the window, focus, journal, approvals, and where it is sent."""

import json
from datetime import datetime, timedelta, timezone

import pytest

import digest
from conftest import BOT_TOKEN, CHAT_ID, PRIMARY_KEY, THREADS
from fakes import tg_error
from mako import decisions
from mako.digest import build_digest, collect, extract_focus, render
from test_analyse import HEADER, known_rows, tick_row, write_metrics

NOW = datetime(2025, 3, 2, 9, 0, tzinfo=timezone.utc)
JOURNAL = [f"#{n} 2025-03-02T0{n}:00:00+00:00 — step {n}" for n in range(1, 8)]


def window_rows(now):
    """known_rows() moved to end 10 minutes before `now`, after five ticks from more than a day before."""
    old = [tick_row(n, ts=(now - timedelta(hours=30, minutes=-n)).isoformat(), outcome="fail", wall_s=500.0,
                    drift_flag="stale flag") for n in range(1, 6)]
    rows = known_rows()
    for i, row in enumerate(rows):
        row["tick_n"] = 100 + i
        row["ts"] = (now - timedelta(minutes=10 + 5 * (len(rows) - 1 - i))).isoformat(timespec="seconds")
    return old + rows


def seed(root, now=NOW, rows=None):
    write_metrics(root.p("logs/metrics.csv"), window_rows(now) if rows is None else rows)
    queue = [
        {"id": "q1", "queued_at": (now - timedelta(days=2)).isoformat(), "tick": 3, "type": "email_send",
         "action": {"type": "email_send"}, "sha256": "0" * 64},
        {"id": "q2", "queued_at": (now - timedelta(hours=1)).isoformat(), "tick": 110, "type": "cf_api",
         "action": {"type": "cf_api"}, "sha256": "1" * 64},
        {"id": "q3", "queued_at": "not a time", "tick": 111, "type": "spend", "action": {}, "sha256": "2" * 64},
    ]
    pending = root.p("pending/pending_actions.jsonl")
    pending.parent.mkdir(parents=True, exist_ok=True)
    pending.write_text("".join(json.dumps(q) + "\n" for q in queue) + '{"id": "q4", "queued_')
    decided = {"id": "q2", "sha256": "1" * 64, "decision": "rejected", "by": "cli",
               "at": (now - timedelta(hours=2)).isoformat(), "note": "", "result": None}
    pending.with_name("decisions.jsonl").write_text(json.dumps(decided) + "\n")
    state = root.p("state")
    state.mkdir(parents=True, exist_ok=True)
    (state / "STATE.md").write_text("# State\n\nFocus: ship the first blog post\n\nOther things.\n")
    (state / "JOURNAL.md").write_text("\n".join(JOURNAL) + "\n")


def expected_text(now=NOW):
    return "\n".join([
        f"🦫 Daily digest · {now.astimezone():%Y-%m-%d}",
        "Last 24h: 20 ticks, 3 failed (15.0%): 2 parse_error, 1 timeout",
        "Providers: primary failed on 5 of 20 ticks (25.0%) · fallback answered 4 (20.0%) · none answered 1",
        "  failure kinds: none recorded",
        "Compactions: 2 · compact_now requested 1×",
        "Actions: 15 executed, 15 queued",
        "Tokens: prompt 17,100 · completion 950 · input est 210,000 (usage reported on 19/20 ticks)",
        "Wall time: mean 10.5s · p95 19.0s",
        "Drift flags: 2",
        "  #107 off mission",
        "  #118 off mission",
        "Approvals: 2 open (oldest 2d0h) · 1 decided in the last 24h",
        "",
        "Focus: ship the first blog post",
        "",
        "Journal (latest):",
        *JOURNAL[-5:],
    ])


def run(root, capsys, *args):
    rc = digest.main(["--config", str(root.config_path), *args])
    out, err = capsys.readouterr()
    return rc, out, err


# -- figures --------------------------------------------------------------------------------------------

def test_digest_text_exact_figures(root):
    seed(root)
    assert build_digest(root.cfg(), now=NOW) == expected_text()


def test_digest_window_follows_hours_window(root):
    root.write_config(digest={"hours_window": 0.5})
    seed(root)
    fig = collect(root.cfg(), now=NOW)
    # Ticks 10, 15, ..., 30 minutes before now: the last five rows, walls 16..20.
    assert fig["ticks"] == 5
    assert (fig["wall"].mean, fig["wall"].p95) == (18.0, 20.0)
    assert fig["failures"] == 0 and fig["drift"] == [("118", "off mission")]
    text = render(fig)
    assert "Last 0.5h: 5 ticks, 0 failed (0.0%)" in text
    assert "Approvals: 2 open (oldest 2d0h) · 0 decided in the last 0.5h" in text


def test_digest_missing_metrics_says_no_ticks(root):
    seed(root)
    root.p("logs/metrics.csv").unlink()
    text = build_digest(root.cfg(), now=NOW)
    assert text.splitlines()[1] == "No ticks in the last 24h (no metrics file yet)."
    assert "Approvals: 2 open (oldest 2d0h) · 1 decided in the last 24h" in text
    assert "Focus: ship the first blog post" in text


@pytest.mark.parametrize("content", ["", HEADER])
def test_digest_empty_metrics_says_no_ticks(root, content):
    seed(root)
    root.p("logs/metrics.csv").write_text(content)
    assert build_digest(root.cfg(), now=NOW).splitlines()[1] == "No ticks in the last 24h."


def test_digest_only_old_ticks_says_no_ticks(root):
    seed(root, rows=window_rows(NOW)[:5])
    assert build_digest(root.cfg(), now=NOW).splitlines()[1] == "No ticks in the last 24h."


def test_digest_junk_rows_do_not_crash(root):
    seed(root)
    junk = ("garbage line\n"
            f"{(NOW - timedelta(minutes=3)).isoformat()},200,normal,slow,primary\n"
            f"{(NOW - timedelta(minutes=2)).isoformat()},201,normal,7,x,y,lots,many,two,1,zero,maybe,,nah,,ok\n")
    with open(root.p("logs/metrics.csv"), "a") as f:
        f.write(junk)
    fig = collect(root.cfg(), now=NOW)
    assert fig["ticks"] == 22
    # The torn row has no outcome, so it is not known to be ok.
    assert fig["failures"] == 4 and dict(fig["failure_kinds"])["unknown"] == 1
    assert fig["wall"].n == 21 and fig["executed"] == 16 and fig["queued"] == 15
    assert "Last 24h: 22 ticks, 4 failed (18.2%)" in render(fig)


def test_digest_reads_the_window_and_the_queue_from_their_ends(root):
    import tracemalloc
    seed(root)
    for rel in ("logs/metrics.csv", "pending/pending_actions.jsonl"):
        # 64 MB of older history (sparse) before what the files held: the digest must not read it.
        path = root.p(rel)
        data = path.read_bytes()
        head, rest = data.split(b"\n", 1) if rel.endswith(".csv") else (None, data)
        with open(path, "wb") as f:
            if head is not None:
                f.write(head + b"\n")
            f.seek(64 * 1024 * 1024, 1)
            f.write(b"\n" + rest)
    # Ticks keep the approvals index current as they queue; the digest only reads it.
    decisions.open_summary(root.cfg())
    tracemalloc.start()
    try:
        text = build_digest(root.cfg(), now=NOW)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert text == expected_text(NOW)
    assert peak < 8 * 1024 * 1024


def test_digest_usage_partly_reported_is_said(root):
    rows = window_rows(NOW)
    for row in rows[-4:]:
        row["prompt_tokens"] = None
    seed(root, rows=rows)
    assert ("Tokens: prompt 13,500 · completion 950 · input est 210,000 (usage reported on 15/20 ticks)"
            in build_digest(root.cfg(), now=NOW))


@pytest.mark.parametrize("state, focus", [
    ("# State\n\nFocus: ship it\n\nmore\n", "ship it"),
    ("# State\n\n- **Focus:** the blog, then the shop\n", "the blog, then the shop"),
    ("# State\nFocus:\n  first part\n  second part\n\nlater\n", "first part second part"),
    ("# State\n\n## Done\nthings\n\n## Focus\n\nwrite the\nfirst post\n\n## Next\nother\n", "write the first post"),
    ("# State\n\nWorking on the landing page\nwith tests.\n\n## Focus-free\n", "Working on the landing page with tests."),
    ("## Only\n### headings\n", ""),
    ("", ""),
])
def test_digest_focus_extraction(state, focus):
    assert extract_focus(state) == focus


def test_digest_focus_is_cut_and_missing_state_is_said(root):
    seed(root)
    root.p("state/STATE.md").write_text("Focus: " + "x" * 2000 + "\n")
    fig = collect(root.cfg(), now=NOW)
    assert len(fig["focus"]) <= 600 and fig["focus"].endswith("…[truncated 1423 chars]")
    root.p("state/STATE.md").unlink()
    root.p("state/JOURNAL.md").unlink()
    text = build_digest(root.cfg(), now=NOW)
    assert "Focus: (STATE.md has none)" in text
    assert text.endswith("Journal (latest):\n(empty)")


# -- sending --------------------------------------------------------------------------------------------

def test_digest_goes_to_digest_thread(root, capsys):
    seed(root, now=datetime.now(timezone.utc))
    rc, out, err = run(root, capsys)
    assert rc == 0, err
    assert out == ""
    texts = root.telegram.texts(THREADS["digest"])
    assert len(texts) == 1 and root.telegram.texts() == texts
    assert texts[0].splitlines()[0] == f"🦫 Daily digest · {datetime.now().astimezone():%Y-%m-%d}"
    assert "Last 24h: 20 ticks, 3 failed (15.0%): 2 parse_error, 1 timeout" in texts[0]
    assert "Wall time: mean 10.5s · p95 19.0s" in texts[0]
    assert root.telegram.messages[0]["chat_id"] == CHAT_ID
    assert "parse_mode" not in root.telegram.messages[0]


def test_digest_records_the_local_date_the_moment_it_is_delivered(root, capsys):
    import time
    from mako.schedule import digest_sent_date
    seed(root)
    private = root.p("state/.mako")
    root.telegram.push("sendMessage", tg_error(400, "Bad Request: chat not found"))
    assert run(root, capsys)[0] == 1
    assert run(root, capsys, "--print")[0] == 0
    assert digest_sent_date(private) is None  # nothing was delivered
    assert run(root, capsys)[0] == 0
    assert digest_sent_date(private) == time.strftime("%Y-%m-%d")
    assert root.read("state/.mako/digest_sent") == time.strftime("%Y-%m-%d") + "\n"


def test_digest_without_digest_thread_goes_to_log(root, capsys):
    root.write_config(telegram={"digest_thread_id": 0})
    seed(root, now=datetime.now(timezone.utc))
    rc, _, err = run(root, capsys)
    assert rc == 0, err
    assert len(root.telegram.texts(THREADS["log"])) == 1 and len(root.telegram.texts()) == 1


def test_digest_failed_send_exits_1(root, capsys):
    seed(root)
    root.telegram.push("sendMessage", tg_error(400, "Bad Request: chat not found"))
    rc, out, err = run(root, capsys)
    assert rc == 1
    assert "digest not delivered: HTTP 400: Bad Request: chat not found" in err
    assert root.telegram.texts() == [] and BOT_TOKEN not in err + out


def test_digest_telegram_off_prints_and_exits_0(root, capsys):
    root.write_config(telegram={"bot_token": ""})
    seed(root)
    rc, out, _ = run(root, capsys)
    assert rc == 0
    assert out.startswith("🦫 Daily digest · ") and "Focus: ship the first blog post" in out
    assert root.telegram.messages == []


def test_digest_print_option_does_not_send(root, capsys):
    seed(root)
    rc, out, _ = run(root, capsys, "--print")
    assert rc == 0 and out.startswith("🦫 Daily digest · ")
    assert root.telegram.messages == []


def test_digest_redacts_secrets(root, capsys):
    seed(root, now=datetime.now(timezone.utc))
    with open(root.p("state/JOURNAL.md"), "a") as f:
        f.write(f"#8 leaked {PRIMARY_KEY} and bot{BOT_TOKEN}\n")
    assert run(root, capsys)[0] == 0
    sent = root.telegram.texts()[0]
    assert "#8 leaked <redacted> and bot<redacted>" in sent
    rc, out, err = run(root, capsys, "--print")
    assert PRIMARY_KEY not in out + err and BOT_TOKEN not in out + err


def test_digest_bad_config_exits_78(tmp_path, capsys):
    bad = tmp_path / "config.yaml"
    bad.write_text("llm: {}\ndigest:\n  hours_window: yesterday\n")
    assert digest.main(["--config", str(bad)]) == 78
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and "digest.hours_window" in err


def test_digest_subprocess_sends(root):
    seed(root, now=datetime.now(timezone.utc))
    done = root.run("digest.py")
    assert done.returncode == 0, done.stderr
    texts = root.telegram.texts(THREADS["digest"])
    assert len(texts) == 1 and "Last 24h: 20 ticks, 3 failed (15.0%)" in texts[0]
    assert BOT_TOKEN not in done.stdout + done.stderr


def test_digest_provider_health_from_real_ticks(root):
    from fakes import Reply

    root.ollama.push("/api/chat", Reply(500, {"error": "down"}), Reply(500, {"error": "down"}),
                     Reply(500, {"error": "down"}))
    root.openai.push("/chat/completions", Reply(503, {"error": {"message": "overloaded"}}))
    for _ in range(4):
        root.tick()
    text = build_digest(root.cfg())
    assert ("Providers: primary failed on 3 of 4 ticks (75.0%) · fallback answered 2 (50.0%) · none answered 1"
            in text.splitlines())
    assert "  failure kinds: primary 3 http_500; fallback 1 http_503" in text.splitlines()
