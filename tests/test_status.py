"""status.py (§21): every line present even when unknown, bounded reads, exit 0 / 1 / 78, nothing hidden."""

import json
import os
import time

import pytest

from conftest import reply
from fakes import Reply, ollama_usage_limit

import status

LABELS = ("health", "paused", "last tick", "last 24h", "next tick", "next scribe", "next digest", "inbox",
          "approvals", "primary", "fallback", "spend", "last digest", "last scribe", "logs")


def run_status(root, capsys, *args):
    rc = status.main(["--config", str(root.config_path), *args])
    out, err = capsys.readouterr()
    return rc, out, err


def fields(out):
    """{label: value} of the screen (the first line is the heading)."""
    lines = out.splitlines()
    got = {}
    for line in lines[1:]:
        label, _, value = line.partition(":")
        got[label] = value.strip()
    return got


def assert_every_line(out):
    got = fields(out)
    assert list(got) == list(LABELS), out
    assert "Traceback" not in out
    return got


def snapshot(path):
    out = {}
    for dirpath, dirs, files in os.walk(path):
        for name in dirs + files:
            full = os.path.join(dirpath, name)
            out[full] = os.lstat(full).st_mtime_ns
    return out


def test_status_after_real_ticks_shows_each_item(root, capsys):
    root.p("state").mkdir(parents=True)
    root.p("state/INBOX.md").write_text("Please look at the plan.\n")
    root.ollama.reply_content(reply(work_done="read it", actions=[
        {"type": "email_send", "to": "ed@example.com", "subject": "Hi", "body": "draft"}]))
    assert root.tick() == 0
    assert root.tick() == 0
    rc, out, err = run_status(root, capsys)
    assert rc == 0, out
    got = assert_every_line(out)
    assert got["health"] == "ok" and got["paused"] == "no"
    assert got["last tick"].startswith("#2 ok · ") and got["last tick"].endswith(" ago · primary/qwen3.5")
    assert got["last 24h"] == "2 ticks, 0 failed"
    assert got["inbox"] == "empty"
    assert got["approvals"].startswith("1 open, oldest ")
    assert got["primary"] == "qwen3.5: ok" and got["fallback"] == "qwen3.6: no answer recorded yet"
    assert got["spend"].startswith("0p of 10000p this month (")
    assert got["next tick"].endswith("(estimated from the last tick)")
    assert got["last digest"] == "none recorded" and got["last scribe"] == "none yet"
    assert got["logs"].endswith(" files") and not got["logs"].startswith("0 B")


def test_status_json_has_the_same_figures(root, capsys):
    assert root.tick() == 0
    rc, out, _ = run_status(root, capsys, "--json")
    data = json.loads(out)
    assert rc == 0 and data["healthy"] is True and data["problems"] == []
    assert data["ticks"]["last"]["n"] == 1 and data["ticks"]["last"]["outcome"] == "ok"
    assert [p["slot"] for p in data["providers"]] == ["primary", "fallback"]
    assert out.isascii()


def test_status_fresh_root_with_no_ticks_and_no_state_changes_nothing(tmp_path, ollama, openai, telegram, capsys):
    from conftest import Root

    root = Root(tmp_path / "fresh", ollama, openai, telegram)
    before = snapshot(root.path)
    rc, out, _ = run_status(root, capsys)
    assert rc == 0
    got = assert_every_line(out)
    assert got["last tick"] == "none yet (no logs/metrics.csv yet)"
    assert got["next tick"] == "unknown (no schedule yet: the supervisor has not run here)"
    assert snapshot(root.path) == before  # not even state/.mako/ was created


def test_status_torn_last_metrics_row_is_shown_as_unknown_not_failed(root, capsys):
    root.write_config(health={"alert_after_ticks": 10})
    root.ollama.push("/api/chat", *[Reply(500, {"error": "x"})] * 2)
    root.openai.push("/chat/completions", *[Reply(500, {"error": {"message": "y"}})] * 2)
    assert [root.tick() for _ in range(2)] == [1, 1]
    with open(root.p("logs/metrics.csv"), "a") as f:
        f.write(time.strftime("%Y-%m-%dT%H:%M:%S+00:00", time.gmtime()) + ",3,norm")
    rc, out, _ = run_status(root, capsys)
    got = assert_every_line(out)
    # Two failed ticks and one whose row a crash cut short: not "the last 3 ticks failed".
    assert rc == 0 and got["last tick"].startswith("#3 unknown · ")
    assert got["last 24h"] == "3 ticks, 2 failed"


def test_status_metrics_with_an_older_header_or_renamed_aside(root, capsys):
    assert root.tick() == 0
    metrics = root.p("logs/metrics.csv")
    now = time.strftime("%Y-%m-%dT%H:%M:%S+00:00", time.gmtime())
    metrics.write_text(f"ts,tick_n,mode,provider_used,outcome\n{now},7,normal,fallback,ok\n")
    rc, out, _ = run_status(root, capsys)
    got = assert_every_line(out)
    assert got["last tick"].startswith("#7 ok · ") and got["last tick"].endswith("fallback/-")
    # The next tick renames that file aside; until it runs there is no metrics.csv at all.
    metrics.rename(root.p("logs/metrics.20260101-000000.1.old.csv"))
    rc, out, _ = run_status(root, capsys)
    assert assert_every_line(out)["last tick"] == "none yet (no logs/metrics.csv yet)"
    assert root.tick() == 0 and root.p("logs/metrics.csv").exists()


@pytest.mark.parametrize("junk", [b"{not json", b"[1, 2]", b"\xff\xfe\x00", b""])
def test_status_corrupt_schedule_file_is_one_unknown_line(root, capsys, junk):
    assert root.tick() == 0
    root.p("state/.mako/schedule.json").write_bytes(junk)
    rc, out, _ = run_status(root, capsys)
    got = assert_every_line(out)
    assert rc == 0
    if junk:
        assert got["next scribe"].startswith("unknown (")


def test_status_missing_private_folder_and_junk_files(root, capsys):
    assert root.tick() == 0
    import shutil
    shutil.rmtree(root.p("state/.mako"))
    root.p("pending/pending_actions.jsonl").write_bytes(b'{"id": "q1", "queued_at": "x"\n\x00\x01junk\n')
    rc, out, _ = run_status(root, capsys)
    got = assert_every_line(out)
    assert rc == 0 and got["approvals"] == "0 open"


def test_status_degraded_when_the_primary_fails_for_three_ticks(root, capsys):
    root.ollama.push("/api/chat", *[Reply(500, {"error": "boom"})] * 3)
    for _ in range(3):
        assert root.tick() == 0
    rc, out, _ = run_status(root, capsys)
    got = assert_every_line(out)
    assert rc == 1
    assert got["health"] == "DEGRADED: the primary is failing (3 ticks)"
    assert got["primary"].startswith("qwen3.5: failing since ") and got["primary"].endswith(
        ", 3 ticks (last: http_500)")
    assert got["fallback"] == "qwen3.6: ok"


def test_status_degraded_when_the_last_three_ticks_failed(root, capsys):
    root.write_config(health={"alert_after_ticks": 10})
    root.ollama.push("/api/chat", *[Reply(200, {"message": {"role": "assistant", "content": "no json"},
                                                "done": True})] * 3)
    for _ in range(3):
        assert root.tick() == 1
    rc, out, _ = run_status(root, capsys)
    got = assert_every_line(out)
    assert rc == 1 and got["health"] == "DEGRADED: the last 3 ticks failed"
    assert got["last 24h"] == "3 ticks, 3 failed"


def test_status_degraded_when_no_tick_for_three_intervals_unless_paused(root, capsys):
    root.write_config(supervisor={"tick_interval_s": 60})
    assert root.tick() == 0
    metrics = root.p("logs/metrics.csv")
    old = time.strftime("%Y-%m-%dT%H:%M:%S+00:00", time.gmtime(time.time() - 200))
    lines = metrics.read_text().splitlines()
    lines[1] = old + lines[1][lines[1].index(","):]
    metrics.write_text("\n".join(lines) + "\n")
    rc, out, _ = run_status(root, capsys)
    assert rc == 1 and fields(out)["health"].startswith("DEGRADED: no tick for 3 min")
    root.p("state/PAUSED").write_text("moving hosts\n")
    rc, out, _ = run_status(root, capsys)
    got = assert_every_line(out)
    assert rc == 0 and got["paused"] == "yes: moving hosts (remove state/PAUSED to resume)"
    assert got["next tick"] == "paused" and got["next scribe"] == "paused"


def test_status_inbox_held_in_a_claim_after_a_failed_tick(root, capsys):
    root.p("state").mkdir(parents=True)
    root.p("state/INBOX.md").write_text("first message\n")
    root.ollama.push("/api/chat", Reply(500, {"error": "x"}))
    root.openai.push("/chat/completions", Reply(500, {"error": {"message": "y"}}))
    assert root.tick() == 1
    root.p("state/INBOX.md").write_text("second message\n")
    rc, out, _ = run_status(root, capsys)
    got = assert_every_line(out)
    assert got["inbox"] == ("waiting (15 B in state/INBOX.md) · held in a claim since tick #1 "
                            "(shown again until a tick succeeds)")


def test_status_cool_down_and_spend(root, capsys):
    root.ollama.push("/api/chat", ollama_usage_limit())
    root.openai.reply_content(reply(work_done="on the fallback", actions=[
        {"type": "spend", "amount_pence": 150, "reason": "domain"}]))
    assert root.tick() == 0
    rc, out, _ = run_status(root, capsys)
    got = assert_every_line(out)
    assert " · cool-down until " in got["primary"] and "(last: usage_limit)" in got["primary"]
    reason = got["primary"].split("cool-down until", 1)[1]
    assert "(HTTP 429 usage limit: you (mako) have reached your session usage limit" in reason
    assert reason.endswith(" chars])") and "…[truncated " in reason and len(reason) < 130
    assert got["spend"].startswith("150p of 10000p this month")


def test_status_model_reachable_text_is_made_visible(root, capsys):
    assert root.tick() == 0
    metrics = root.p("logs/metrics.csv")
    lines = metrics.read_text().splitlines()
    cells = lines[1].split(",")
    cells[5] = '"evil\x1b[2J\u202emodel"'  # model_used
    metrics.write_text("\n".join([lines[0], ",".join(cells)]) + "\n")
    root.p("state/PAUSED").write_text("stop \x1b]0;pwned\x07 now\u2028x\n")
    rc, out, _ = run_status(root, capsys)
    assert "\x1b" not in out and "\x07" not in out and "\u202e" not in out and "\u2028" not in out
    got = assert_every_line(out)
    assert got["last tick"].endswith("primary/evil\\x1b[2J\\u202emodel")
    assert "stop \\x1b]0;pwned\\x07 now x" in got["paused"]


def test_status_bad_config_exits_78_with_one_line(root, capsys):
    root.config_path.write_text("llm: {}\nsupervisor: {tick_interval_s: soon}\n")
    rc, out, err = run_status(root, capsys)
    assert rc == 78 and out == "" and err.count("\n") == 1 and "supervisor.tick_interval_s" in err


def test_status_as_a_subprocess_after_a_scribe_run(root):
    assert root.tick() == 0
    assert root.run("scribe.py").returncode in (0, 1)
    r = root.run("status.py")
    assert r.returncode == 0, r.stdout + r.stderr
    got = assert_every_line(r.stdout)
    assert got["last scribe"].startswith("#1 ") and got["last scribe"].endswith(" ago")


def test_status_never_blocks_on_a_fifo_or_folder_planted_in_place_of_a_file(root, capsys):
    assert root.tick() == 0
    for rel in ("logs/metrics.csv", "state/.mako/schedule.json", "state/INBOX.md", "state/.mako/health.json",
                "pending/pending_actions.jsonl", "state/.mako/cooldowns.json"):
        path = root.p(rel)
        path.unlink(missing_ok=True)
        os.mkfifo(path)
    root.p("state/.mako/spend.jsonl").mkdir()
    r = root.run("status.py", timeout=20)
    got = assert_every_line(r.stdout)
    assert got["last tick"] == "unknown (OSError: metrics.csv is not a regular file)"
    assert got["inbox"].startswith("unknown (") and got["spend"].startswith("unknown (")
    # The next tick moves the health history aside rather than block on it.
    root.p("state/.mako/health.jsonl").unlink()
    os.mkfifo(root.p("state/.mako/health.jsonl"))
    root.p("state/.mako/health.json").unlink()
    root.p("logs/metrics.csv").unlink()
    root.p("state/.mako/cooldowns.json").unlink()
    root.p("state/INBOX.md").unlink()
    root.p("pending/pending_actions.jsonl").unlink()
    assert root.tick() == 0
    assert root.p("state/.mako/health.jsonl").is_file()


def test_status_approvals_count_open_ids_and_the_oldest_age(root, capsys):
    assert root.tick() == 0
    now = time.time()
    queue, decisions = [], []
    for n, hours in ((1, 50), (2, 30), (3, 2)):
        action = {"type": "email_send", "to": f"a{n}@example.com", "subject": "s", "body": "b"}
        from mako.approvals import action_sha256
        queue.append({"id": f"q{n}", "queued_at": time.strftime("%Y-%m-%dT%H:%M:%S+00:00",
                                                                time.gmtime(now - hours * 3600)),
                      "tick": 1, "type": "email_send", "action": action, "sha256": action_sha256(action)})
    decisions.append({"id": "q1", "sha256": queue[0]["sha256"], "decision": "rejected", "by": "cli",
                      "at": time.strftime("%Y-%m-%dT%H:%M:%S+00:00", time.gmtime(now)), "note": "no",
                      "result": None})
    root.p("pending/pending_actions.jsonl").write_text("".join(json.dumps(q) + "\n" for q in queue))
    root.p("pending/decisions.jsonl").write_text("".join(json.dumps(d) + "\n" for d in decisions))
    rc, out, _ = run_status(root, capsys)
    assert assert_every_line(out)["approvals"] == "2 open, oldest 30h 00m"


def test_status_last_digest_is_the_date_digest_py_recorded(root, capsys):
    root.write_config(telegram={"digest_thread_id": 0})
    assert root.tick() == 0
    r = root.run("digest.py")
    assert r.returncode == 0, r.stderr
    rc, out, _ = run_status(root, capsys)
    got = assert_every_line(out)
    assert got["last digest"] == time.strftime("%Y-%m-%d")
    assert got["next digest"].startswith("in ") and "(" in got["next digest"]
