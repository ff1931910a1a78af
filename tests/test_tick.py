"""End-to-end worker ticks through tick.py against local fake providers and a fake Telegram."""

import hashlib
import json
import os
import time
from pathlib import Path

import pytest

from conftest import BOT_TOKEN, CHAT_ID, FALLBACK_KEY, PRIMARY_KEY, SECRETS, THREADS, reply
from fakes import Reply, ollama_thinking_only, ollama_usage_limit

from mako.logs import PAYLOAD_KEYS

STATE_FILES = ("STATE.md", "NEXT.md", "PERSONA.md", "JOURNAL.md", "LAST_RESULTS.md", "MISSION.md",
               "CAPABILITIES.md", "tick_counter.txt", "next_notes.json", "compact_pending.flag")


def snapshot(root):
    """Hash of every file under the root except logs (for 'nothing changed' checks)."""
    out = {}
    for rel, data in root.all_files_text(skip=()):
        if rel.startswith("logs/") or "/.mako/" in "/" + rel or rel.startswith("state/.mako"):
            continue
        out[rel] = hashlib.sha256(data).hexdigest()
    return out


def test_tick_normal_writes_every_record(root):
    root.ollama.reply_content(reply(
        work_done="Set up the plan.\nWrote notes.", state_md="Focus: plan the first post\n",
        next_md="Draft the outline.\n", persona_update={"mode": "append", "content": "Prefers short posts."},
        files=[{"path": "notes/plan.md", "content": "# Plan\n"}, {"path": "workdir/a.txt", "content": "x",
                                                                 "mode": "append"}],
        actions=[{"type": "shell", "cmd": "echo hello"}], request_notes=["plan.md"],
        telegram="Planned the first post."))
    assert root.tick() == 0
    assert root.read("state/STATE.md") == "Focus: plan the first post\n"
    assert root.read("state/NEXT.md") == "Draft the outline.\n"
    assert root.read("state/PERSONA.md").endswith("Prefers short posts.\n")
    assert root.read("notes/plan.md") == "# Plan\n"
    assert root.read("workdir/a.txt") == "x"
    last = root.read("state/LAST_RESULTS.md")
    assert last.startswith("# LAST_RESULTS — tick #1 (normal)")
    assert "✅ write notes/plan.md" in last and "echo hello" in last and "hello" in last
    journal = root.read("state/JOURNAL.md").splitlines()
    assert len(journal) == 1 and journal[0].startswith("#1 ") and journal[0].endswith(
        "— Set up the plan. / Wrote notes.")
    assert json.loads(root.read("state/next_notes.json")) == ["plan.md"]
    assert root.read("state/tick_counter.txt").strip() == "1"
    header = root.read("logs/metrics.csv").splitlines()[0]
    # SPEC §17, spelled out: this order is what operators' scripts and analyse read.
    assert header == ("ts,tick_n,mode,wall_s,provider_used,model_used,input_tokens_est,output_chars,"
                      "actions_count,actions_executed,actions_queued,parse_ok,drift_flag,compact_now,failures,"
                      "outcome,llm_wall_s,prompt_tokens,completion_tokens")
    (row,) = root.metrics()
    assert row["tick_n"] == "1" and row["mode"] == "normal" and row["outcome"] == "ok"
    assert row["provider_used"] == "primary" and row["model_used"] == "qwen3.5" and row["parse_ok"] == "true"
    assert row["actions_count"] == "1" and row["actions_executed"] == "1" and row["actions_queued"] == "0"
    assert row["ts"].endswith("+00:00")
    payload = root.payload(1)
    assert list(payload)[:len(PAYLOAD_KEYS)] == PAYLOAD_KEYS
    assert payload["outcome"] == "ok" and payload["llm_attempts"][0]["ok"] is True
    (post,) = root.telegram.messages
    assert post["message_thread_id"] == THREADS["log"] and post["chat_id"] == CHAT_ID
    first, text, counts = post["text"].split("\n")
    assert first.startswith("🦫 #1 · ") and first.endswith(" · primary/qwen3.5")
    assert text == "Planned the first post."
    assert counts.startswith("actions: 1 run · 0 queued · 0 failed")


def test_tick_requested_note_loaded_next_tick(root):
    root.ollama.reply_content(reply(files=[{"path": "notes/plan.md", "content": "PLAN-BODY"}],
                                    request_notes=["plan.md", "../config.yaml", "missing.md"]))
    assert root.tick() == 0
    assert root.tick() == 0
    msg = root.ollama.chat_requests()[1]["messages"][1]["content"]
    assert "## notes/plan.md" in msg and "PLAN-BODY" in msg
    assert "not under notes/" in root.read("state/LAST_RESULTS.md")
    assert "no such note" in root.read("state/LAST_RESULTS.md")


def _fail_primary(ollama, kind):
    if kind == "timeout":
        ollama.push("/api/chat", Reply(200, {"message": {"content": "late"}}, delay_s=8))
    elif kind == "429":
        ollama.push("/api/chat", ollama_usage_limit())
    elif kind == "500":
        ollama.push("/api/chat", Reply(500, {"error": "Internal Server Error"}))
    elif kind == "non_json":
        ollama.push("/api/chat", Reply(200, "this is not json"))
    elif kind == "html":
        ollama.push("/api/chat", Reply(502, mode="html"))
    elif kind == "empty":
        ollama.reply_content("")
    elif kind == "thinking":
        ollama.push("/api/chat", ollama_thinking_only())
    elif kind == "close":
        ollama.push("/api/chat", Reply(mode="close_early"))


@pytest.mark.parametrize("kind", ["timeout", "429", "500", "non_json", "html", "empty", "thinking", "close"])
def test_tick_fallback_answers_when_primary_fails(root, kind):
    if kind == "timeout":
        root.write_config(llm={"primary": {"timeout_s": 1}})
    _fail_primary(root.ollama, kind)
    root.openai.reply_content(reply(work_done="answered by the fallback"))
    assert root.tick() == 0
    payload = root.payload(1)
    assert [a["ok"] for a in payload["llm_attempts"]] == [False, True]
    assert payload["llm_attempts"][0]["kind"]
    (row,) = root.metrics()
    assert row["provider_used"] == "fallback" and row["model_used"] == "qwen3.6"
    assert "answered by the fallback" in root.read("state/JOURNAL.md")


def test_tick_primary_refused_connection_uses_fallback(root):
    root.write_config(llm={"primary": {"base_url": "http://127.0.0.1:9"}})
    root.openai.reply_content(reply(work_done="fallback"))
    assert root.tick() == 0
    assert root.payload(1)["llm_attempts"][0]["kind"] == "connection"


def test_tick_both_providers_fail_is_recorded_and_keeps_inbox(root):
    root.p("state").mkdir(parents=True, exist_ok=True)
    root.p("state/INBOX.md").write_text("Please draft the first post.\n")
    root.ollama.push("/api/chat", Reply(500, {"error": "Internal Server Error"}))
    root.openai.push("/chat/completions", Reply(503, {"error": {"message": "overloaded"}}))
    assert root.tick() == 1
    assert root.p("logs/error-1.log").exists()
    assert "Traceback" in root.read("logs/error-1.log")
    (row,) = root.metrics()
    assert row["outcome"] == "provider_error" and row["parse_ok"] == ""
    payload = root.payload(1)
    assert len(payload["llm_attempts"]) == 2 and payload["outcome"] == "provider_error"
    assert root.telegram.messages[-1]["text"].startswith("🦫 #1 FAIL · AllProvidersFailed")
    assert not list(root.p("archive").glob("inbox-*"))
    # The next tick sees the same message, acknowledges it, and archives it once.
    root.ollama.reply_content(reply(work_done="Drafting as asked."))
    assert root.tick() == 0
    assert "Please draft the first post." in root.ollama.chat_requests()[-1]["messages"][1]["content"]
    archived = list(root.p("archive").glob("inbox-*.md"))
    assert len(archived) == 1 and archived[0].read_text() == "Please draft the first post.\n"


REFUSED_PATHS = [
    "/etc/passwd", "../outside.txt", "state/../../outside.txt", "config.yaml", "tick.py", "mako/worker.py",
    "prompts/system.md", "state/MISSION.md", "state/CAPABILITIES.md", "state/INBOX.md",
    "state/tick_counter.txt", "state/next_notes.json", "state/compact_pending.flag", "state/JOURNAL.md",
    "pending/pending_actions.jsonl", "pending/decisions.jsonl", "archive/inbox-20260101-000000.md",
    "state/.mako/tick.lock", "state/.mako/approvals.db",
    "seed/MISSION.md", "logs/metrics.csv", "README.md", "state/PAUSED", "state/PAUSED/reason.md",
]


@pytest.mark.parametrize("path", REFUSED_PATHS)
def test_tick_refuses_protected_and_escaping_paths(root, path):
    root.layout()
    target = (root.path / path) if not path.startswith("/") else Path(path)
    before = target.read_bytes() if target.is_file() else None
    root.ollama.reply_content(reply(files=[{"path": path, "content": "PWNED"}],
                                    actions=[{"type": "write_file", "path": path, "content": "PWNED"}]))
    assert root.tick() == 0
    after = target.read_bytes() if target.is_file() else None
    wrapper_managed = path in ("state/tick_counter.txt", "state/next_notes.json", "state/JOURNAL.md",
                               "logs/metrics.csv", "state/.mako/tick.lock", "state/.mako/approvals.db")
    assert after == before or (wrapper_managed and b"PWNED" not in (after or b""))
    payload = root.payload(1)
    assert payload["files_written"][0]["ok"] is False and payload["files_written"][0]["status"] == "refused"
    assert payload["actions"][0]["ok"] is False
    assert "❌" in root.read("state/LAST_RESULTS.md")


def test_tick_refuses_symlinks_out_of_root_and_into_prompts(root, tmp_path):
    root.layout()
    outside = tmp_path / "outside.txt"
    outside.write_text("original")
    os.symlink(outside, root.p("notes/escape.md"))
    os.symlink(root.path / "tick.py", root.p("workdir/code.py"))  # dangling is fine: resolves to root/tick.py
    os.symlink(Path(__file__).resolve().parent.parent / "prompts", root.p("notes/prompts"))
    root.ollama.reply_content(reply(files=[
        {"path": "notes/escape.md", "content": "PWNED"},
        {"path": "notes/prompts/system.md", "content": "PWNED"},
        {"path": "workdir/code.py", "content": "PWNED"},
    ]))
    assert root.tick() == 0
    assert outside.read_text() == "original"
    prompt = Path(__file__).resolve().parent.parent / "prompts" / "system.md"
    assert "PWNED" not in prompt.read_text()
    assert not (root.path / "tick.py").exists()
    assert [w["status"] for w in root.payload(1)["files_written"]] == ["refused"] * 3


def test_tick_refuses_path_outside_writable_paths(root):
    root.write_config(guardrails={"writable_paths": ["notes"]})
    root.ollama.reply_content(reply(files=[{"path": "workdir/x.txt", "content": "x"},
                                           {"path": "notes/ok.md", "content": "ok"}]))
    assert root.tick() == 0
    assert not root.p("workdir/x.txt").exists() and root.read("notes/ok.md") == "ok"


BAD_REPLIES = [
    ("bad mode", reply(files=[{"path": "notes/a.md", "content": "x", "mode": "truncate"}])),
    ("content not a string", reply(files=[{"path": "notes/a.md", "content": 42}])),
    ("work_done not a string", reply(work_done=["a"])),
    ("state_md wrong type", reply(state_md={"x": 1})),
    ("actions not a list", reply(actions={"type": "shell"})),
    ("action type missing", reply(actions=[{"cmd": "echo hi"}])),
    ("compact_now not bool", reply(compact_now="yes")),
    ("request_notes wrong", reply(request_notes="plan.md")),
    ("persona bad mode", reply(persona_update={"mode": "replace", "content": "x"})),
    ("nested object only", 'Sure: {"reply": {"work_done": "inner", "actions": [{"type": "shell", "cmd": '
                           '"touch PWNED"}]}}'),
    ("nested in a broken object", '{"oops": , "inner": {"work_done": "inner", "actions": [{"type": "shell", '
                                  '"cmd": "touch PWNED"}]}}'),
    ("parse error", "PARSE_ERROR: I could not decide"),
    ("blank work_done", reply(work_done="   ")),
]


@pytest.mark.parametrize("name,text", BAD_REPLIES, ids=[b[0] for b in BAD_REPLIES])
def test_tick_invalid_reply_changes_nothing(root, name, text):
    root.layout()
    root.p("state/INBOX.md").write_text("operator message\n")
    if "actions" not in text:
        text = text.replace('"work_done"', '"actions": [{"type": "shell", "cmd": "touch PWNED"}], "work_done"', 1)
    before = snapshot(root)
    root.ollama.reply_content(text)
    assert root.tick() == 1
    after = snapshot(root)
    changed = {k for k in set(before) | set(after) if before.get(k) != after.get(k)}
    # Only the counter, the LAST_RESULTS failure note and the INBOX claim move; no state file, no action.
    assert changed <= {"state/tick_counter.txt", "state/LAST_RESULTS.md", "state/INBOX.md"}, changed
    assert not root.p("workdir/PWNED").exists()
    (row,) = root.metrics()
    assert row["outcome"] == "parse_error" and row["parse_ok"] == "false"
    assert "PARSE_ERROR" in root.telegram.messages[-1]["text"]
    assert root.payload(1)["parsed_response"] is None


@pytest.mark.parametrize("junk", ['{"not": "a list"}', "not json at all", '[1, 2, {"x": 1}]', ""])
def test_tick_malformed_next_notes_never_wedges(root, junk):
    root.layout()
    root.p("state/next_notes.json").write_text(junk)
    root.ollama.reply_content(reply())
    assert root.tick() == 0


@pytest.mark.parametrize("junk", ["garbage", "", "-5", "9" * 40, "\x00\x01"])
def test_tick_corrupt_counter_never_reuses_a_number(root, junk):
    root.ollama.reply_content(reply())
    root.ollama.reply_content(reply())
    assert root.tick() == 0 and root.tick() == 0
    root.p("state/tick_counter.txt").write_text(junk)
    (root.p("state/.mako/tick_counter")).write_text(junk)
    root.ollama.reply_content(reply())
    assert root.tick() == 0
    assert [r["tick_n"] for r in root.metrics()] == ["1", "2", "3"]
    assert root.p("logs/ticks/00000003.json").exists()


def test_tick_inbox_shown_once_and_archived_once(root):
    root.layout()
    root.p("state/INBOX.md").write_text("Stop researching, draft the first post.\n")

    def write_during_call(req):
        # The operator writes again while the tick waits on the provider: that goes to the next tick.
        root.p("state/INBOX.md").write_text("Second message.\n")
        return {"model": "qwen3.5", "message": {"role": "assistant",
                "content": reply(work_done="Acknowledged: drafting.")}, "done": True, "done_reason": "stop"}

    root.ollama.push("/api/chat", Reply(200, write_during_call))
    assert root.tick() == 0
    root.ollama.reply_content(reply(work_done="Acknowledged the second message."))
    assert root.tick() == 0
    root.ollama.reply_content(reply(work_done="Nothing new."))
    assert root.tick() == 0
    users = [r["messages"][1]["content"] for r in root.ollama.chat_requests()]
    assert "draft the first post" in users[0] and "Second message." not in users[0]
    assert "Second message." in users[1] and "draft the first post" not in users[1]
    assert "INBOX" not in users[2]
    assert users[0].index("## INBOX") < users[0].index("## CAPABILITIES")
    assert users[0].index("## MISSION") < users[0].index("## INBOX")
    archived = sorted(p.read_text() for p in root.p("archive").glob("inbox-*.md"))
    assert archived == ["Second message.\n", "Stop researching, draft the first post.\n"]
    assert not root.p("state/INBOX.md").exists()


def test_tick_two_gated_actions_get_distinct_ids(root):
    root.ollama.reply_content(reply(actions=[
        {"type": "email_send", "to": "a@example.com", "subject": "Hello", "body": "x"},
        {"type": "http_post", "url": "https://example.com/api", "body": {"a": 1}},
        {"type": "shell", "cmd": "echo run", "needs_approval": True},
    ]))
    assert root.tick() == 0
    lines = root.read("pending/pending_actions.jsonl").splitlines()
    entries = [json.loads(line) for line in lines]
    assert [e["id"] for e in entries] == ["q1", "q2", "q3"]
    for e in entries:
        assert set(e) >= {"id", "queued_at", "tick", "type", "action", "sha256"}
        canon = json.dumps(e["action"], sort_keys=True, separators=(",", ":"), ensure_ascii=False)
        assert e["sha256"] == hashlib.sha256(canon.encode()).hexdigest()
    approvals = root.telegram.texts(THREADS["approvals"])
    assert len(approvals) == 3 and "q1" in approvals[0] and "a@example.com" in approvals[0]
    (row,) = root.metrics()
    assert row["actions_queued"] == "3" and row["actions_executed"] == "0"
    assert "⏸" in root.read("state/LAST_RESULTS.md")


def test_tick_secrets_never_leak(root):
    root.write_config(telegram={"api_base_url": "http://127.0.0.1:9"})  # Telegram unreachable
    root.ollama.reply_content(reply(
        work_done=f"my key is {PRIMARY_KEY}", telegram=f"token {BOT_TOKEN}",
        actions=[{"type": "read_file", "path": "config.yaml"}, {"type": "shell", "cmd": "cat ../config.yaml"},
                 {"type": "shell", "cmd": f"echo {FALLBACK_KEY}"},
                 {"type": "http_get", "url": f"http://127.0.0.1:9/bot{BOT_TOKEN}/getMe"}],
        files=[{"path": "notes/leak.md", "content": f"{PRIMARY_KEY} {FALLBACK_KEY}"}]))
    assert root.tick() == 0
    root.write_config()
    root.ollama.reply_content(reply())
    assert root.tick() == 0
    for rel, data in root.all_files_text():
        for secret in SECRETS:
            assert secret.encode() not in data, (rel, secret)
    for msg in root.telegram.messages:
        assert not any(s in msg["text"] for s in SECRETS)
    for req in root.ollama.requests + root.openai.requests:
        assert not any(s.encode() in req.body for s in SECRETS)
    assert "<redacted>" in root.read("state/LAST_RESULTS.md") or "<redacted>" in root.read("state/JOURNAL.md")


def test_tick_shell_background_child_and_timeout(root):
    root.write_config(tick={"shell_timeout_s": 2})
    root.ollama.reply_content(reply(actions=[
        {"type": "shell", "cmd": "sleep 30 & echo started"},
        {"type": "shell", "cmd": "sh -c 'sleep 60; touch late' & sleep 60"},
    ]))
    start = time.monotonic()
    assert root.tick() == 0
    assert time.monotonic() - start < 20
    actions = root.payload(1)["actions"]
    assert actions[0]["ok"] is True and "started" in actions[0]["stdout"]
    assert actions[1]["ok"] is False and actions[1]["timed_out"] is True


def test_tick_dry_run_changes_nothing(root, capsys):
    root.layout()
    root.p("state/INBOX.md").write_text("hello operator\n")
    before = snapshot(root)
    logs_before = sorted(os.listdir(root.p("logs")))
    assert root.tick("--dry-run") == 0
    out = capsys.readouterr().out
    assert "## MISSION" in out and "hello operator" in out and "total:" in out
    assert snapshot(root) == before and sorted(os.listdir(root.p("logs"))) == logs_before
    assert not root.ollama.requests and not root.telegram.messages
    assert not root.p("state/tick_counter.txt").exists()
    # The printed per-block estimates are the ones a tick records.
    root.ollama.reply_content(reply(work_done="ack"))
    assert root.tick() == 0
    sizes = root.payload(1)["sizes"]
    for key, tokens in sizes["blocks"].items():
        assert f"{key}: {tokens}" in out


def test_tick_dry_run_on_a_new_root_creates_nothing(tmp_path, ollama, capsys):
    import tick
    import yaml
    rootdir = tmp_path / "new-root"
    config = tmp_path / "config.yaml"
    config.write_text(yaml.safe_dump({
        "paths": {"root": str(rootdir)},
        "llm": {"primary": {"base_url": ollama.url, "api_key": PRIMARY_KEY}, "fallback": {"base_url": ""}}}))
    assert tick.main(["--config", str(config), "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert out.startswith(f"=== note: {rootdir} does not exist yet; read as a fresh root (a tick creates it)\n")
    seed_mission = (Path(__file__).resolve().parent.parent / "seed" / "MISSION.md").read_text()
    assert seed_mission.strip() in out
    assert sorted(os.listdir(tmp_path)) == ["config.yaml"] and not ollama.requests
    # The estimates printed are the ones the first real tick records.
    ollama.reply_content(reply(work_done="first"))
    assert tick.main(["--config", str(config)]) == 0
    payload = json.loads((rootdir / "logs/ticks/00000001.json").read_text())
    for key, tokens in payload["sizes"]["blocks"].items():
        assert f"{key}: {tokens}" in out


def test_tick_dry_run_reads_a_missing_state_file_as_its_seed(root, capsys):
    root.layout()
    root.p("state/STATE.md").unlink()
    before = snapshot(root)
    assert root.tick("--dry-run") == 0
    out = capsys.readouterr().out
    assert "=== note: state/STATE.md is missing; shown from seed/ (a tick seeds it)" in out
    assert snapshot(root) == before and not root.p("state/STATE.md").exists()


def test_tick_bad_config_exits_78_with_one_line(root):
    root.config_path.write_text("llm: {}\ntick:\n  max_actions: lots\n")
    proc = root.run("tick.py")
    assert proc.returncode == 78
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "tick.max_actions" in lines[0] and "config.yaml" in lines[0]


def test_tick_lock_held_exits_75(root):
    from mako.fileio import FileLock
    root.layout()
    lock = FileLock(root.p("state/.mako/tick.lock"))
    assert lock.acquire()
    try:
        proc = root.run("tick.py")
        assert proc.returncode == 75
    finally:
        lock.release()
    assert not root.p("logs/metrics.csv").exists()


def test_tick_fresh_root_with_only_config(tmp_path, ollama):
    """As a new user would: a folder holding only config.yaml aimed at a local Ollama-compatible server."""
    import subprocess
    import sys
    import yaml
    rootdir = tmp_path / "fresh"
    rootdir.mkdir()
    (rootdir / "config.yaml").write_text(yaml.safe_dump({
        "paths": {"root": str(rootdir)},
        "llm": {"primary": {"base_url": ollama.url, "api_key": PRIMARY_KEY}, "fallback": {"base_url": ""}}}))
    ollama.reply_content(reply(work_done="first tick", state_md="Focus: hello\n"))
    repo = Path(__file__).resolve().parent.parent
    proc = subprocess.run([sys.executable, str(repo / "tick.py"), "--config", str(rootdir / "config.yaml")],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    for rel in ("state/STATE.md", "state/NEXT.md", "state/MISSION.md", "state/CAPABILITIES.md",
                "state/PERSONA.md", "state/JOURNAL.md", "state/LAST_RESULTS.md", "state/tick_counter.txt",
                "notes/INDEX.md", "logs/metrics.csv", "logs/ticks/00000001.json", "state/outbox/blog/drafts",
                "workdir", "archive", "pending"):
        assert (rootdir / rel).exists(), rel


def test_tick_compaction_archives_journal_and_clears_flag(root):
    root.ollama.reply_content(reply(compact_now=True, work_done="first"))
    assert root.tick() == 0
    assert root.p("state/compact_pending.flag").exists()
    root.ollama.reply_content(reply(work_done="compacted", files=[
        {"path": "state/JOURNAL.md", "content": "#summary of everything\n"}],
        actions=[{"type": "shell", "cmd": "touch ran"}]))
    assert root.tick() == 0
    assert root.payload(2)["mode"] == "compact"
    assert not root.p("workdir/ran").exists()
    archived = list(root.p("archive").glob("journal-*.md"))
    assert len(archived) == 1 and "— first" in archived[0].read_text()
    journal = root.read("state/JOURNAL.md")
    assert journal.startswith("#summary of everything\n") and "— compacted" in journal
    assert not root.p("state/compact_pending.flag").exists()
    system = root.ollama.chat_requests()[1]["messages"][0]["content"]
    assert system == (Path(__file__).resolve().parent.parent / "prompts" / "compact.md").read_text()


def test_tick_over_cap_context_is_shrunk_and_flags_compaction(root):
    root.write_config(context={"max_input_tokens": 3000})
    root.layout()
    root.p("state/PERSONA.md").write_text("persona line\n" * 2000)
    root.ollama.reply_content(reply())
    assert root.tick() == 0
    sizes = root.payload(1)["sizes"]
    assert sizes["total"] <= 3000 and sizes["over_cap"] and "PERSONA" in sizes["truncated"]
    assert "…[truncated" in root.ollama.chat_requests()[0]["messages"][1]["content"]
    assert root.p("state/compact_pending.flag").exists()


def test_tick_max_actions_skips_the_rest(root):
    root.write_config(tick={"max_actions": 2})
    root.ollama.reply_content(reply(actions=[{"type": "shell", "cmd": f"echo {i}"} for i in range(5)]))
    assert root.tick() == 0
    statuses = [a["status"] for a in root.payload(1)["actions"]]
    assert statuses == ["ok", "ok", "skipped", "skipped", "skipped"]
    assert root.read("state/LAST_RESULTS.md").count("max_actions") == 3


def test_tick_three_failed_compactions_fall_back_to_normal(root):
    root.ollama.reply_content(reply(compact_now=True))
    assert root.tick() == 0
    for _ in range(3):
        root.ollama.reply_content("PARSE_ERROR: no")
        assert root.tick() == 1
    assert [r["mode"] for r in root.metrics()] == ["normal", "compact", "compact", "compact"]
    root.ollama.reply_content(reply(actions=[{"type": "shell", "cmd": "echo back"}]))
    assert root.tick() == 0
    payload = root.payload(5)
    assert payload["mode"] == "normal" and payload["actions"][0]["ok"] is True
    assert any("compaction failed 3 ticks in a row" in e for e in payload["errors"])
    assert any("compaction failed 3 ticks" in m["text"] for m in root.telegram.messages)
    assert not root.p("state/compact_pending.flag").exists()


def test_tick_sigterm_mid_action_records_itself_and_kills_the_command(root):
    import signal
    import subprocess
    import sys
    root.ollama.reply_content(reply(actions=[{"type": "shell", "cmd": "echo $$ > shell.pid; sleep 30"}]))
    proc = subprocess.Popen([sys.executable, str(Path(__file__).resolve().parent.parent / "tick.py"),
                             "--config", str(root.config_path)], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    pidfile = root.p("workdir/shell.pid")
    deadline = time.monotonic() + 20
    while not (pidfile.exists() and pidfile.read_text().strip()) and time.monotonic() < deadline:
        time.sleep(0.05)
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=20) == 1
    shell_pid = int(pidfile.read_text())
    time.sleep(0.2)
    with pytest.raises(ProcessLookupError):
        os.kill(shell_pid, 0)
    (row,) = root.metrics()
    assert row["outcome"] == "terminated"
    assert root.payload(1)["outcome"] == "terminated"
    assert root.telegram.messages[-1]["text"].startswith("🦫 #1 FAIL · Terminated")
    # The command had started: the next tick must learn that it may have run.
    note = "stopped while running action 1 of 1 (shell); it may have run"
    results = root.read("state/LAST_RESULTS.md")
    assert "## Actions\n(none)" not in results
    assert f"❌ {note}" in results and "cmd: echo $$ > shell.pid; sleep 30" in results
    (action,) = root.payload(1)["actions"]
    assert (action["type"], action["status"], action["summary"]) == ("shell", "stopped", note)


def test_tick_summary_cut_with_visible_marker_and_drift_flag(root):
    root.ollama.reply_content(reply(telegram="word " * 1000, drift_flag="chasing a side project"))
    assert root.tick() == 0
    (post,) = root.telegram.messages
    lines = post["text"].split("\n")
    assert len(lines[1]) == 1000 and lines[1].endswith("chars]") and "…[truncated " in lines[1]
    assert lines[2].endswith("⚠️ drift: chasing a side project")
    (row,) = root.metrics()
    assert row["drift_flag"] == "chasing a side project"


def test_tick_clears_stale_temp_files_only(root):
    root.layout()
    old, fresh = root.p("state/.STATE.md.123.tmp"), root.p("state/.NEXT.md.456.tmp")
    old.write_text("x")
    fresh.write_text("y")
    os.utime(old, (time.time() - 7200, time.time() - 7200))
    root.ollama.reply_content(reply())
    assert root.tick() == 0
    assert not old.exists() and fresh.exists()


def test_tick_sweeps_for_temp_files_once_an_hour(root):
    root.layout()
    stamp, litter = root.p("state/.mako/temp_sweep"), root.p("notes/.plan.md.9.tmp")
    root.ollama.reply_content(reply())
    assert root.tick() == 0 and stamp.is_file()  # the first tick sweeps
    litter.write_text("x")
    os.utime(litter, (time.time() - 7200, time.time() - 7200))
    root.ollama.reply_content(reply())
    assert root.tick() == 0 and litter.exists()  # swept 0 s ago: not again
    os.utime(stamp, (time.time() - 3700, time.time() - 3700))
    root.ollama.reply_content(reply())
    assert root.tick() == 0 and not litter.exists()
    stamp.unlink()
    stamp.mkdir()  # whatever is planted at the stamp makes the sweep due and is moved aside
    litter.write_text("x")
    os.utime(litter, (time.time() - 7200, time.time() - 7200))
    root.ollama.reply_content(reply())
    assert root.tick() == 0 and not litter.exists() and stamp.is_file()


def test_tick_compaction_of_a_journal_over_the_cap_clears_the_flag(root):
    root.write_config(context={"max_input_tokens": 4000})
    root.layout()
    root.p("state/JOURNAL.md").write_text("".join(f"#{i} 2026-01-01T00:00:00+00:00 — did thing {i}\n"
                                                  for i in range(5000)))
    root.p("state/compact_pending.flag").write_text("x\n")
    root.ollama.reply_content(reply(work_done="compacted", files=[
        {"path": "state/JOURNAL.md", "content": "#summary\n"}]))
    assert root.tick() == 0
    payload = root.payload(1)
    assert payload["mode"] == "compact" and payload["sizes"]["total"] <= 4000
    assert "did thing 4999" in payload["user_message"] and "did thing 0\n" not in payload["user_message"]
    assert not root.p("state/compact_pending.flag").exists()
    assert len(list(root.p("archive").glob("journal-*.md"))) == 1


def test_tick_telegram_off_posts_are_skipped_not_failed(root):
    root.write_config(telegram={"bot_token": ""})
    root.ollama.reply_content(reply(actions=[{"type": "telegram_post", "text": "hello"},
                                             {"type": "ask_chris", "text": "may I?"},
                                             {"type": "shell", "cmd": "true"}]))
    assert root.tick() == 0
    actions = root.payload(1)["actions"]
    assert [(a["type"], a["status"], a["summary"]) for a in actions[:2]] == [
        ("telegram_post", "skipped", "skipped (Telegram off)"), ("ask_chris", "skipped", "skipped (Telegram off)")]
    (row,) = root.metrics()
    assert (row["failures"], row["actions_executed"], row["outcome"]) == ("0", "1", "ok")
    results = root.read("state/LAST_RESULTS.md")
    assert "⏭ telegram_post: skipped (Telegram off)" in results and "❌" not in results
    assert root.telegram.messages == []


def test_tick_unusable_root_is_one_line_not_a_traceback(root, tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder\n")
    root.write_config(paths={"root": str(blocker)})
    proc = root.run("tick.py")
    assert proc.returncode == 1
    assert proc.stderr.splitlines() == [proc.stderr.strip()] and "Traceback" not in proc.stderr
    assert proc.stderr.startswith("tick: failed before it could record itself (preparing the layout): ")
    assert str(blocker) in proc.stderr
    dry = root.run("tick.py", "--dry-run")
    assert dry.returncode == 1 and dry.stdout == ""
    assert dry.stderr == f"tick: cannot use the root {blocker}: Not a directory\n"


def test_tick_dry_run_into_a_closed_pipe_ends_quietly(root):
    import shlex
    import subprocess
    import sys
    root.layout()
    # Long enough to overflow the pipe and any buffer: the reader has gone before the writer is done.
    root.p("state/STATE.md").write_text("state line\n" * 20000)
    cmd = " ".join(shlex.quote(a) for a in [sys.executable, str(Path(__file__).resolve().parent.parent / "tick.py"),
                                          "--config", str(root.config_path), "--dry-run"])
    proc = subprocess.run(["bash", "-c", f"set -o pipefail; {cmd} | head -1"], capture_output=True, text=True,
                          timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert "Traceback" not in proc.stderr and "BrokenPipe" not in proc.stderr
    assert len(proc.stdout.splitlines()) == 1


def test_tick_hanging_primary_still_leaves_the_fallback_its_turn(root):
    root.write_config(supervisor={"tick_timeout_s": 14}, llm={"primary": {"timeout_s": 180},
                                                             "fallback": {"timeout_s": 120}})
    root.ollama.push("/api/chat", Reply(mode="hang"))
    root.openai.reply_content(reply(work_done="answered by the fallback"))
    start = time.monotonic()
    assert root.tick() == 0
    assert time.monotonic() - start < 14
    payload = root.payload(1)
    assert [(a["slot"], a["kind"]) for a in payload["llm_attempts"]] == [("primary", "timeout"), ("fallback", None)]
    assert root.metrics()[0]["provider_used"] == "fallback"
