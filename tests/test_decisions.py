"""Approvals that close (§19): approve.py list/show/yes/no/done, the binding to the record, the index, the
tick lock, dedupe at queue time and the APPROVALS block the next tick reads."""

import json
import logging
import os
import re
import sqlite3
import subprocess
import sys
import threading
import time

import pytest
from conftest import BOT_TOKEN, REPO, THREADS, reply

import approve
from mako import decisions
from mako.approvals import ApprovalQueue, action_sha256
from mako.fileio import FileLock
from mako.paths import ensure_layout
from mako.redact import Redactor
from mako.telegram import TelegramClient

APPROVALS = THREADS["approvals"]


@pytest.fixture(autouse=True)
def no_stale_log_handler():
    # An earlier in-process main() left logging pointed at a captured stream that is gone now.
    logging.getLogger().handlers.clear()


def queue(root, *actions, tick=1):
    """Queue actions as a tick would; returns their ids."""
    cfg = root.cfg()
    ensure_layout(cfg)
    redactor = Redactor(cfg.secrets())
    q = ApprovalQueue(cfg, redactor, TelegramClient(cfg.telegram, redactor))
    return [q.enqueue(a, tick) for a in actions]


def run(root, capsys, *args):
    """approve.main in-process: (exit code, stdout, stderr)."""
    code = approve.main(["--config", str(root.config_path), *args])
    out, err = capsys.readouterr()
    return code, out, err


def decision_lines(root):
    path = root.p("pending/decisions.jsonl")
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines()]  # every line must parse


def marker_shell(root, tag):
    """A shell action (gated by needs_approval) that leaves one line per run in workdir/ran.txt."""
    return {"type": "shell", "cmd": f"echo {tag} >> ran.txt", "needs_approval": True}


def runs(root, tag):
    path = root.p("workdir/ran.txt")
    return path.read_text().split().count(tag) if path.exists() else 0


# -- list and show -----------------------------------------------------------------------------------------

def test_approve_list_shows_open_items_with_age_type_summary_and_hash(root, capsys):
    a = {"type": "email_send", "to": "ed@example.com", "subject": "Draft ready", "body": "see drafts"}
    b = {"type": "http_post", "url": "https://example.com/hook", "body": {"x": 1}}
    assert queue(root, a, b) == ["q1", "q2"]
    code, out, _ = run(root, capsys)
    assert code == 0
    lines = out.splitlines()
    assert len(lines) == 2
    assert lines[0].startswith("q1") and "email_send" in lines[0] and "to: ed@example.com" in lines[0]
    assert "subject: Draft ready" in lines[0] and lines[0].endswith(action_sha256(a)[:8])
    assert lines[1].startswith("q2") and "http_post" in lines[1] and "url: https://example.com/hook" in lines[1]
    assert "0s" in lines[0] or "1s" in lines[0]


def test_approve_list_all_adds_decided_items_with_their_decision(root, capsys):
    queue(root, marker_shell(root, "a"), marker_shell(root, "b"))
    assert run(root, capsys, "no", "q1", "--reason", "not needed")[0] == 0
    code, out, _ = run(root, capsys, "list")
    assert [line.split()[0] for line in out.splitlines()] == ["q2"]
    code, out, _ = run(root, capsys, "list", "--all")
    lines = out.splitlines()
    assert lines[0].startswith("q1") and lines[0].endswith("[rejected]")
    assert lines[1].startswith("q2") and lines[1].endswith("[open]")


def test_approve_show_prints_the_record_and_its_decisions(root, capsys):
    queue(root, marker_shell(root, "a"), tick=7)
    code, out, _ = run(root, capsys, "show", "q1")
    assert code == 0
    assert "q1 · shell · queued" in out and "by tick #7" in out and "matches the record" in out
    assert '"cmd": "echo a >> ran.txt"' in out and "decision: none yet (open)" in out
    run(root, capsys, "yes", "q1", "--note", "fine")
    code, out, _ = run(root, capsys, "show", "q1")
    assert "approved by cli · started" in out and "approved by cli · ok: $ echo a >> ran.txt → exit 0" in out


# -- yes / no / done ---------------------------------------------------------------------------------------

def test_approve_yes_runs_once_records_started_then_result_and_posts(root, capsys):
    queue(root, marker_shell(root, "a"))
    code, out, _ = run(root, capsys, "yes", "q1", "--note", "go")
    assert code == 0
    assert out.strip() == "✅ q1 approved · shell · ok: $ echo a >> ran.txt → exit 0"
    assert runs(root, "a") == 1
    started, done = decision_lines(root)
    sha = action_sha256(marker_shell(root, "a"))
    assert started == {"id": "q1", "sha256": sha, "decision": "approved", "by": "cli", "at": started["at"],
                       "note": "go", "result": None, "status": "started"}
    assert done["result"]["ok"] is True and done["result"]["status"] == "ok" and "status" not in done
    assert set(done["result"]) == {"ok", "status", "summary", "output"}
    assert root.telegram.texts(APPROVALS)[-1] == out.strip()
    # Decided: a second yes is refused and nothing runs again.
    code, _, err = run(root, capsys, "yes", "q1")
    assert code == 1 and err.strip().startswith("q1 was already approved (ok) at ")
    assert runs(root, "a") == 1 and len(decision_lines(root)) == 2


def test_approve_no_and_done_record_without_running_and_post(root, capsys):
    queue(root, marker_shell(root, "a"), marker_shell(root, "b"), marker_shell(root, "c"))
    assert run(root, capsys, "no", "q1", "--reason", "too risky")[1].strip() == "🚫 q1 rejected: too risky"
    assert run(root, capsys, "done", "q2", "--note", "ran it myself")[1].strip() == "☑️ q2 done: ran it myself"
    assert run(root, capsys, "no", "q3")[1].strip() == "🚫 q3 rejected: (no reason given)"
    assert runs(root, "a") == runs(root, "b") == runs(root, "c") == 0
    lines = decision_lines(root)
    assert [(d["id"], d["decision"], d["note"], d["result"]) for d in lines] == [
        ("q1", "rejected", "too risky", None), ("q2", "done", "ran it myself", None), ("q3", "rejected", "", None)]
    assert root.telegram.texts(APPROVALS)[-3:] == ["🚫 q1 rejected: too risky", "☑️ q2 done: ran it myself",
                                                   "🚫 q3 rejected: (no reason given)"]
    code, _, err = run(root, capsys, "done", "q1")
    assert code == 1 and "q1 was already rejected" in err


@pytest.mark.parametrize("bad", ["q", "q-1", "12", "q1; rm -rf /", "Q1x", "q1 2", "q٣", "q1\n", "q01"])
def test_approve_malformed_id_is_one_line_exit_1_nothing_run(root, capsys, bad):
    queue(root, marker_shell(root, "a"))
    code, out, err = run(root, capsys, "yes", bad)
    assert code == 1 and out == "" and err.count("\n") == 1 and "is not an item id" in err
    assert runs(root, "a") == 0 and decision_lines(root) == []
    outcome = decisions.decide(root.cfg(), bad, "approved", "cli")
    assert (outcome.ok, outcome.code) == (False, 1) and "is not an item id" in outcome.message


def test_approve_unknown_id_is_refused(root, capsys):
    queue(root, marker_shell(root, "a"))
    code, _, err = run(root, capsys, "yes", "q9")
    assert code == 1 and err.strip() == "q9: no such item in pending/pending_actions.jsonl"
    assert run(root, capsys, "show", "q9")[0] == 1


def test_approve_usage_errors_exit_2(root, capsys):
    for args in (["yes"], ["list", "q1"], ["no", "q1", "--note", "x"], ["done", "q1", "--again"], ["frob"],
                 ["show", "q1", "--all"]):
        with pytest.raises(SystemExit) as e:
            approve.main(["--config", str(root.config_path), *args])
        assert e.value.code == 2, args
    capsys.readouterr()


def test_approve_bad_config_exits_78(root, capsys):
    root.config_path.write_text("llm: [1, 2\n")
    assert run(root, capsys, "list")[0] == 78


# -- bound to what was shown -------------------------------------------------------------------------------

def test_approve_refuses_a_record_edited_after_queueing(root, capsys):
    queue(root, marker_shell(root, "a"), marker_shell(root, "b"))
    path = root.p("pending/pending_actions.jsonl")
    path.write_text(path.read_text().replace("echo b >> ran.txt", "echo EVIL >> ran.txt"))
    code, _, err = run(root, capsys, "yes", "q2")
    assert code == 1 and "q2: the record changed since it was queued" in err and "nothing run" in err
    assert runs(root, "EVIL") == 0 and runs(root, "b") == 0
    # The untouched item beside it runs: the refusal is about the edit, not the file.
    assert run(root, capsys, "yes", "q1")[0] == 0 and runs(root, "a") == 1
    # Rejecting the edited record is allowed; nothing runs.
    assert run(root, capsys, "no", "q2", "--reason", "edited")[0] == 0


def test_decide_bound_to_the_hash_the_post_showed(root):
    queue(root, marker_shell(root, "a"))
    sha8 = action_sha256(marker_shell(root, "a"))[:8]
    out = decisions.decide(root.cfg(), "q1", "approved", "telegram:42", expect_sha8="deadbeef")
    assert (out.ok, out.code) == (False, 1) and "not the deadbeef that was shown" in out.message
    assert runs(root, "a") == 0
    out = decisions.decide(root.cfg(), "q1", "approved", "telegram:42", expect_sha8=sha8)
    assert (out.ok, out.code, out.qid) == (True, 0, "q1") and out.result["ok"] is True
    assert runs(root, "a") == 1 and decision_lines(root)[-1]["by"] == "telegram:42"


def test_approve_started_without_result_needs_again(root, capsys):
    queue(root, marker_shell(root, "a"))
    sha = action_sha256(marker_shell(root, "a"))
    with open(root.p("pending/decisions.jsonl"), "a") as f:  # what a kill mid-run leaves
        f.write(json.dumps({"id": "q1", "sha256": sha, "decision": "approved", "by": "cli",
                            "at": "2026-01-01T00:00:00+00:00", "note": "", "result": None, "status": "started"}) + "\n")
    code, _, err = run(root, capsys, "yes", "q1")
    assert code == 1 and "started at" in err and "--again" in err and runs(root, "a") == 0
    code, out, _ = run(root, capsys, "list")  # not open, but waiting for the operator all the same
    assert out.startswith("q1 ") and out.rstrip().endswith("[started, no result: check, then yes --again, or done]")
    assert run(root, capsys, "yes", "q1", "--again")[0] == 0 and runs(root, "a") == 1
    assert run(root, capsys, "yes", "q1", "--again")[0] == 1 and runs(root, "a") == 1  # ok results stay put


def test_approve_failed_result_can_be_run_again_only_with_again(root, capsys):
    queue(root, {"type": "shell", "cmd": "echo x >> ran.txt; exit 3", "needs_approval": True})
    code, _, err = run(root, capsys, "yes", "q1")
    assert code == 1 and err.startswith("✅ q1 approved · shell · failed: ")
    assert run(root, capsys, "yes", "q1")[0] == 1 and runs(root, "x") == 1
    assert run(root, capsys, "yes", "q1", "--again")[0] == 1 and runs(root, "x") == 2


def test_approve_two_concurrent_yes_run_it_once(root):
    queue(root, {"type": "shell", "cmd": "sleep 0.5; echo a >> ran.txt", "needs_approval": True})
    procs = [root_popen(root, "yes", "q1") for _ in range(2)]
    results = sorted((p.wait(60), p.stdout.read() + p.stderr.read()) for p in procs)
    assert [r[0] for r in results] == [0, 1], results
    assert "already approved" in results[1][1]
    assert runs(root, "a") == 1
    assert [d.get("status") for d in decision_lines(root)] == ["started", None]


def root_popen(root, *args):
    return subprocess.Popen([sys.executable, str(REPO / "approve.py"), "--config", str(root.config_path), *args],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def test_approve_waits_for_the_tick_lock_then_gives_up_with_75(root):
    queue(root, marker_shell(root, "a"))
    cfg = root.cfg()
    lock = FileLock(cfg.paths.private / "tick.lock")
    assert lock.acquire()
    try:
        started = time.monotonic()
        out = decisions.decide(cfg, "q1", "approved", "cli", lock_wait_s=0.5)
        assert (out.ok, out.code) == (False, 75) and "tick.lock" in out.message
        assert time.monotonic() - started >= 0.5
        assert runs(root, "a") == 0 and decision_lines(root) == []
        # Released while the approval waits: it goes ahead.
        threading.Timer(0.3, lock.release).start()
        out = decisions.decide(cfg, "q1", "approved", "cli", lock_wait_s=5)
        assert out.code == 0 and runs(root, "a") == 1
    finally:
        lock.release()


def test_approve_a_tick_cannot_start_while_an_approval_runs(root):
    queue(root, {"type": "shell", "cmd": "sleep 1; echo a >> ran.txt", "needs_approval": True})
    proc = root_popen(root, "yes", "q1")
    deadline = time.monotonic() + 10
    while not root.p("pending/decisions.jsonl").exists() and time.monotonic() < deadline:
        time.sleep(0.02)
    assert root.tick() == 75
    assert proc.wait(30) == 0 and runs(root, "a") == 1


# -- files in bad shape ------------------------------------------------------------------------------------

def test_approve_torn_last_lines_are_tolerated_and_kept_valid(root, capsys):
    queue(root, marker_shell(root, "a"), marker_shell(root, "b"))
    assert run(root, capsys, "no", "q1")[0] == 0
    with open(root.p("pending/pending_actions.jsonl"), "ab") as f:
        f.write(b'{"id":"q3","queued_at":"2026-')
    with open(root.p("pending/decisions.jsonl"), "ab") as f:
        f.write(b'{"id":"q2","decision":"appr')
    code, out, _ = run(root, capsys, "list")
    assert code == 0 and [line.split()[0] for line in out.splitlines()] == ["q2"]
    assert run(root, capsys, "yes", "q2")[0] == 0 and runs(root, "b") == 1
    assert [d["id"] for d in decision_lines(root)] == ["q1", "q2", "q2"]  # the torn fragment was cut aside
    assert root.p("pending/decisions.jsonl.torn").read_text() == '{"id":"q2","decision":"appr\n'


def test_approve_decisions_file_deleted_while_items_are_open(root, capsys):
    queue(root, marker_shell(root, "a"), marker_shell(root, "b"))
    assert run(root, capsys, "yes", "q1")[0] == 0
    root.p("pending/decisions.jsonl").unlink()
    code, _, err = run(root, capsys, "yes", "q1")
    assert code == 1 and "pending/decisions.jsonl is missing" in err and err.count("\n") == 1
    assert run(root, capsys, "yes", "q2")[0] == 1
    assert runs(root, "a") == 1 and runs(root, "b") == 0
    _, out, err = run(root, capsys, "list")
    assert "decisions.jsonl is missing" in err
    # The operator starts afresh on purpose: then the files are the truth again.
    root.p("pending/decisions.jsonl").touch()
    assert run(root, capsys, "yes", "q2")[0] == 0 and runs(root, "b") == 1


def test_index_is_rebuilt_when_missing_or_replaced(root, capsys):
    queue(root, marker_shell(root, "a"), marker_shell(root, "b"))
    run(root, capsys, "done", "q1")
    cfg = root.cfg()
    assert decisions.open_summary(cfg)[0] == 1
    (cfg.paths.private / "approvals.db").unlink()
    assert decisions.open_summary(cfg)[0] == 1
    (cfg.paths.private / "approvals.db").write_bytes(b"garbage, not a database" * 10)
    assert decisions.open_summary(cfg)[0] == 1
    # A queue file replaced by another (new inode): read afresh.
    path = root.p("pending/pending_actions.jsonl")
    first = path.read_text().splitlines()[0]
    tmp = path.with_name("x")
    tmp.write_text(first + "\n")
    os.replace(tmp, path)
    assert [r["id"] for r in decisions.open_items(cfg)] == []
    record, lines = decisions.find(cfg, "q1")
    assert record["id"] == "q1" and [d["decision"] for d in lines] == ["done"]


# -- executors and refusals --------------------------------------------------------------------------------

def test_approve_type_without_executor_says_do_it_by_hand(root, capsys):
    queue(root, {"type": "email_send", "to": "a@example.com", "subject": "s", "body": "b"},
          {"type": "teleport", "where": "mars", "needs_approval": True})
    code, _, err = run(root, capsys, "yes", "q1")
    assert code == 1 and err.strip() == ("q1 (email_send): no email executor configured (email.smtp_host and "
                                         "email.from are empty); do it by hand, then approve.py done q1")
    code, _, err = run(root, capsys, "yes", "q2")
    assert code == 1 and "no executor for type 'teleport'" in err and "approve.py done q2" in err
    assert decision_lines(root) == []
    assert run(root, capsys, "done", "q1", "--note", "sent from my laptop")[0] == 0


def test_approve_spend_goes_to_the_ledger_and_respects_the_ceiling(root, capsys):
    root.write_config(tick={"approval_threshold_pence": 100, "budget_ceiling_pence_month": 1000})
    queue(root, {"type": "spend", "amount_pence": 600, "reason": "VPS"},
          {"type": "spend", "amount_pence": 500, "reason": "domain"})
    assert run(root, capsys, "yes", "q1")[0] == 0
    code, _, err = run(root, capsys, "yes", "q2")
    assert code == 1 and "over the 1000p monthly ceiling" in err and "--over-budget" in err
    assert [d["id"] for d in decision_lines(root)] == ["q1", "q1"]
    code, out, _ = run(root, capsys, "yes", "q2", "--over-budget")
    assert code == 0 and "recorded 500p" in out
    ledger = [json.loads(line) for line in root.read("state/.mako/spend.jsonl").splitlines()]
    assert [e["amount_pence"] for e in ledger] == [600, 500]


# -- dedupe, the post, the next tick -----------------------------------------------------------------------

def test_tick_dedupes_an_identical_open_action(root):
    action = {"type": "http_post", "url": "https://example.com/hook", "body": {"a": 1}}
    for _ in range(2):
        root.ollama.reply_content(reply(actions=[action]))
        assert root.tick() == 0
    lines = root.read("pending/pending_actions.jsonl").splitlines()
    assert len(lines) == 1
    second = root.payload(2)["actions"][0]
    assert second["status"] == "waiting" and second["id"] == "q1"
    assert "already waiting as q1" in second["summary"]
    assert "already waiting as q1" in root.read("state/LAST_RESULTS.md")
    posts = [t for t in root.telegram.texts(APPROVALS) if "queued" in t]
    assert len(posts) == 1 and "q1 queued · http_post" in posts[0]
    assert root.metrics()[1]["actions_queued"] == "0"
    # Once decided, the same request is a new item again.
    decisions.decide(root.cfg(), "q1", "rejected", "cli", "no")
    root.ollama.reply_content(reply(actions=[action]))
    assert root.tick() == 0
    assert root.payload(3)["actions"][0]["id"] == "q2"


def test_queue_post_shows_short_hash_and_how_to_decide(root):
    action = {"type": "cf_api", "method": "POST", "path": "/zones", "body": {"name": "x.dev"}}
    queue(root, action)
    text = root.telegram.texts(APPROVALS)[-1]
    assert f"sha256 {action_sha256(action)[:8]}" in text
    assert "approve.py yes q1 | approve.py no q1" in text and "reply" not in text
    params = root.telegram.delivered[-1][0]
    assert "reply_markup" not in params


def test_queue_post_carries_buttons_when_inbound_is_on(root):
    root.write_config(telegram={"inbound": {"enabled": True, "allowed_user_ids": [42]}})
    action = {"type": "http_delete", "url": "https://example.com/x"}
    queue(root, action)
    params = root.telegram.delivered[-1][0]
    sha8 = action_sha256(action)[:8]
    assert params["reply_markup"] == {"inline_keyboard": [[
        {"text": "Approve", "callback_data": f"a:q1:{sha8}"}, {"text": "Reject", "callback_data": f"r:q1:{sha8}"}]]}
    assert "or reply: approve q1 / reject q1" in params["text"]


def _block(message):
    start = message.index("## APPROVALS")
    end = message.index("\n## ", start + 1)
    return message[start:end]


def test_next_tick_reads_decisions_and_open_items_once(root, capsys):
    root.ollama.reply_content(reply(actions=[
        {"type": "shell", "cmd": "echo a >> ran.txt", "needs_approval": True},
        {"type": "email_send", "to": "a@example.com", "subject": "s", "body": "b"},
        {"type": "http_put", "url": "https://example.com/p", "body": "x"},
        {"type": "spend", "amount_pence": 900, "reason": "a GPU hour"}]))
    assert root.tick() == 0
    assert "## APPROVALS" not in root.payload(1)["user_message"]
    run(root, capsys, "yes", "q1")
    run(root, capsys, "no", "q2", "--reason", "wrong address")
    run(root, capsys, "done", "q3", "--note", "did it with curl")
    root.ollama.reply_content(reply())
    assert root.tick() == 0
    message = root.payload(2)["user_message"]
    block = _block(message)
    assert "- q1 shell · approved · ok: $ echo a >> ran.txt → exit 0" in block
    assert "- q2 email_send · rejected: wrong address" in block
    assert "- q3 http_put · done by the operator: did it with curl" in block
    assert "Waiting for the operator (1 open, oldest queued " in block and "): q4 spend." in block
    # After LAST_RESULTS, before PERSONA; the next tick is not told the same decisions again.
    assert message.index("## LAST_RESULTS") < message.index("## APPROVALS") < message.index("## PERSONA")
    root.ollama.reply_content(reply())
    assert root.tick() == 0
    block = _block(root.payload(3)["user_message"])
    assert "q1" not in block and "q4 spend" in block


def test_failed_tick_shows_the_decisions_again(root, capsys):
    queue(root, marker_shell(root, "a"))
    run(root, capsys, "no", "q1", "--reason", "later")
    root.ollama.reply_content("not json at all")
    root.openai.reply_content("not json either")
    assert root.tick() == 1
    root.ollama.reply_content(reply())
    assert root.tick() == 0
    assert "- q1 shell · rejected: later" in _block(root.payload(2)["user_message"])


def test_approvals_block_shrinks_after_the_journal():
    from mako.context import SHRINK_ORDER, Block, build
    assert SHRINK_ORDER.index("JOURNAL") < SHRINK_ORDER.index("APPROVALS") < SHRINK_ORDER.index("LAST_RESULTS")
    blocks = [Block("MISSION", "MISSION", "m"), Block("JOURNAL", "JOURNAL", "j\n" * 2000, keep="tail"),
              Block("LAST_RESULTS", "LAST_RESULTS", "r" * 100), Block("APPROVALS", "APPROVALS", "a" * 2000)]
    message, sizes = build("", blocks, 1200)  # 4,800 chars: the journal must give way, the approvals need not
    assert "a" * 2000 in message and sizes["truncated"].keys() == {"JOURNAL"}
    message, sizes = build("", blocks, 400)  # 1,600 chars: the journal is spent, then the approvals shrink
    assert sizes["truncated"]["APPROVALS"] > 0 and "r" * 100 in message and len(message) <= 1600


def test_dry_run_shows_the_block_and_changes_nothing(root, capsys):
    queue(root, marker_shell(root, "a"))
    db = root.p("state/.mako/approvals.db")
    db.unlink()
    assert root.tick("--dry-run") == 0
    assert "q1 shell" in capsys.readouterr().out
    assert not db.exists()


def test_secrets_of_the_executors_never_leave_config(root, capsys):
    root.write_config(email={"smtp_host": "127.0.0.1", "smtp_port": 1, "username": "u",
                             "password": "smtp-password-0123456789", "from": "mako@example.com"},
                      cloudflare={"api_token": "cf-token-abcdef0123456789"})
    # The output carries them (the config is under the root); every record of the run must not.
    queue(root, {"type": "shell", "cmd": "cat ../config.yaml", "needs_approval": True})
    code, out, err = run(root, capsys, "yes", "q1")
    assert code == 0, err
    assert "password: <redacted>" in decision_lines(root)[-1]["result"]["output"]
    for rel, data in root.all_files_text():
        assert b"smtp-password-0123456789" not in data and b"cf-token-abcdef0123456789" not in data, rel
    for text in root.telegram.texts():
        assert "smtp-password" not in text and "cf-token-abcdef" not in text
    assert BOT_TOKEN.encode() not in root.p("pending/decisions.jsonl").read_bytes()


# -- digest and analyse ------------------------------------------------------------------------------------

def test_analyse_reports_open_approvals_and_decisions_in_the_span(root, capsys):
    import analyse
    queue(root, marker_shell(root, "a"), marker_shell(root, "b"), marker_shell(root, "c"))
    with open(root.p("pending/decisions.jsonl"), "a") as f:  # decided two days ago: before the span
        f.write(json.dumps({"id": "q1", "sha256": "0" * 64, "decision": "rejected", "by": "cli",
                            "at": "2020-01-01T00:00:00+00:00", "note": "", "result": None}) + "\n")
    root.ollama.reply_content(reply())
    assert root.tick() == 0
    run(root, capsys, "done", "q2")
    root.ollama.reply_content(reply())
    assert root.tick() == 0
    assert analyse.main(["--config", str(root.config_path)]) == 0
    out = capsys.readouterr().out
    section = out[out.index("\nApprovals\n"):out.index("\nRecent failures")]
    assert re.fullmatch(r"\nApprovals\n  open now: 1, the oldest waiting [0-9]s\n  decided within the span: 1\n",
                        section), section


def test_approve_as_an_operator_runs_it(root):
    """Real subprocesses, as in the README's transcript."""
    queue(root, marker_shell(root, "a"))
    listed = root.run("approve.py")
    assert listed.returncode == 0 and listed.stdout.startswith("q1 ") and listed.stderr == ""
    done = root.run("approve.py", "yes", "q1", "--note", "fine")
    assert done.returncode == 0 and done.stdout.startswith("✅ q1 approved · shell · ok:")
    again = root.run("approve.py", "yes", "q1")
    assert again.returncode == 1 and again.stdout == "" and again.stderr.startswith("q1 was already approved")
    assert root.run("approve.py", "list").stdout == "no open items (approve.py list --all shows decided ones)\n"


def test_index_path_replaced_by_a_folder_or_link_is_moved_aside(root, capsys):
    queue(root, marker_shell(root, "a"))
    db = root.p("state/.mako/approvals.db")
    db.unlink()
    db.mkdir()
    (db / "x").write_text("planted")
    code, out, _ = run(root, capsys, "list")
    assert code == 0 and out.startswith("q1 ")
    assert db.is_file() and any(p.name.startswith("approvals.db.displaced-") for p in db.parent.iterdir())
    outside = root.path.parent / "elsewhere.db"
    db.unlink()
    db.symlink_to(outside)
    root.ollama.reply_content(reply())
    assert root.tick() == 0
    assert "q1 shell" in _block(root.payload(1)["user_message"]) and not outside.exists()


def test_unreadable_index_costs_neither_the_tick_nor_the_queue(root, capsys, monkeypatch):
    from mako import approval_index

    def broken(self, write):
        raise sqlite3.OperationalError("disk I/O error")
    monkeypatch.setattr(approval_index.Index, "_connect", broken)
    root.ollama.reply_content(reply(actions=[{"type": "http_post", "url": "https://example.com/h"}]))
    assert root.tick() == 0
    assert root.payload(1)["actions"][0]["status"] == "queued"  # queued, without the duplicate check
    assert "The approvals could not be read this tick (OperationalError: disk I/O error)" in \
        root.payload(1)["user_message"]
    out = decisions.decide(root.cfg(), "q1", "rejected", "cli")
    assert (out.ok, out.code) == (False, 1) and "disk I/O error; nothing decided" in out.message
    code, _, err = run(root, capsys, "list")
    assert code == 1 and err.splitlines()[-1].startswith("approve: cannot read the approvals: OperationalError")


def test_approve_list_and_show_never_print_control_or_bidi_characters(root, capsys):
    sneaky = "ed@example.com\x1b]0;owned\x07\u202egpj.exe\u200b\x9b2J"
    queue(root, {"type": "email_send", "to": sneaky, "subject": "hi\x1b[2J", "body": "b"})
    code, out, _ = run(root, capsys, "list")
    assert code == 0 and "\\x1b]0;owned\\x07\\u202egpj.exe\\u200b\\x9b2J" in out
    code, out2, _ = run(root, capsys, "show", "q1")
    for text in (out, out2):
        assert not any(c in text for c in "\x1b\x07\u202e\u200b\x9b")


def test_reject_while_the_approval_runs_waits_for_its_result(root):
    queue(root, {"type": "shell", "cmd": "sleep 1; echo a >> ran.txt", "needs_approval": True})
    proc = root_popen(root, "yes", "q1")
    deadline = time.monotonic() + 10
    while not root.p("pending/decisions.jsonl").exists() and time.monotonic() < deadline:
        time.sleep(0.02)
    out = decisions.decide(root.cfg(), "q1", "rejected", "cli", "changed my mind")
    assert (out.ok, out.code) == (False, 1) and "q1 was already approved (ok)" in out.message
    assert proc.wait(30) == 0 and runs(root, "a") == 1
    # With nothing running, a started item without a result may be closed by hand.
    queue(root, marker_shell(root, "b"))
    with open(root.p("pending/decisions.jsonl"), "a") as f:
        f.write(json.dumps({"id": "q2", "sha256": action_sha256(marker_shell(root, "b")), "decision": "approved",
                            "by": "cli", "at": "2026-01-01T00:00:00+00:00", "note": "", "result": None,
                            "status": "started"}) + "\n")
    assert decisions.decide(root.cfg(), "q2", "done", "cli", "checked: it ran").code == 0


def test_fifo_or_folder_planted_over_the_decisions_file_never_blocks(root, capsys):
    queue(root, marker_shell(root, "a"), marker_shell(root, "b"))
    assert run(root, capsys, "no", "q1")[0] == 0
    path = root.p("pending/decisions.jsonl")
    path.rename(path.with_name("kept.jsonl"))
    os.mkfifo(path)
    root.ollama.reply_content(reply())
    proc = root.run("tick.py", timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert "pending/decisions.jsonl is missing or not a regular file" in root.payload(1)["user_message"]
    code, _, err = run(root, capsys, "yes", "q2")
    assert code == 1 and "not a regular file" in err and runs(root, "b") == 0
    if path.exists():  # the tick moves aside what stands on a wrapper path
        path.unlink()
    path.mkdir()
    code, _, err = run(root, capsys, "no", "q2")
    assert code == 1 and "not a regular file" in err
    path.rmdir()
    path.with_name("kept.jsonl").rename(path)  # restored: decisions go on
    assert run(root, capsys, "yes", "q2")[0] == 0 and runs(root, "b") == 1
    assert run(root, capsys, "yes", "q1")[0] == 1  # still rejected


def test_wrapper_files_of_the_approvals_replaced_by_folders(root, capsys):
    queue(root, marker_shell(root, "a"))
    private = root.p("state/.mako")
    for name in ("decisions.lock", "approvals_seen.json", "approvals.db-journal"):
        (private / name).mkdir()
    assert run(root, capsys, "no", "q1", "--reason", "r")[0] == 0
    root.ollama.reply_content(reply())
    assert root.tick() == 0
    assert "- q1 shell · rejected: r" in _block(root.payload(1)["user_message"])
    root.ollama.reply_content(reply())
    assert root.tick() == 0
    assert "q1" not in root.payload(2)["user_message"]


@pytest.mark.parametrize("threads,expected", [({}, THREADS["approvals"]),
                                              ({"approvals_thread_id": 0}, THREADS["requests"]),
                                              ({"approvals_thread_id": 0, "requests_thread_id": 0}, THREADS["log"])])
def test_decision_post_goes_to_approvals_else_requests_else_log(root, capsys, threads, expected):
    root.write_config(telegram=threads)
    queue(root, marker_shell(root, "a"))
    assert run(root, capsys, "done", "q1", "--note", "by hand")[0] == 0
    assert root.telegram.texts(expected)[-1] == "☑️ q1 done: by hand"


def test_digest_reads_the_approvals_without_writing(root):
    from mako.digest import build_digest
    queue(root, marker_shell(root, "a"))
    db = root.p("state/.mako/approvals.db")
    db.unlink()
    assert "Approvals: 1 open (oldest " in build_digest(root.cfg())
    assert not db.exists()
