"""The approval queue and spend ledger (§13): ids, JSON Lines under crashes and concurrency, the ceiling."""

import hashlib
import json
import multiprocessing
import os
from datetime import datetime, timezone

import pytest
from conftest import CHAT_ID, PRIMARY_KEY, THREADS, Recorder

from mako.approvals import ApprovalQueue, read_queue
from mako.ledger import SpendLedger
from mako.paths import ensure_layout
from mako.redact import Redactor


def make_queue(root, client=None, **overrides):
    # chat_id as a string: the config loader currently refuses a negative (group) chat id as an integer.
    overrides.setdefault("telegram", {})["chat_id"] = str(CHAT_ID)
    root.write_config(**overrides)
    cfg = root.cfg()
    ensure_layout(cfg)
    return ApprovalQueue(cfg, Redactor(cfg.secrets()), client or Recorder())


@pytest.fixture
def queue(root):
    return make_queue(root)


@pytest.fixture
def ledger(queue):
    return SpendLedger(queue.cfg, queue.redactor)


def queue_lines(queue):
    return queue.queue_path.read_bytes().decode("utf-8").splitlines()


def canonical_sha(action):
    text = json.dumps(action, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def test_queue_two_actions_get_distinct_ids_and_valid_lines(queue):
    a = {"type": "email_send", "to": "a@example.com", "subject": "Grüße", "body": "hi"}
    b = {"type": "cf_api", "method": "POST", "path": "/zones", "body": {"name": "x.dev"}}
    assert queue.enqueue(a, 3) == "q1"
    assert queue.enqueue(b, 4) == "q2"
    lines = queue_lines(queue)
    assert len(lines) == 2
    entries = [json.loads(line) for line in lines]
    for entry, action, tick in zip(entries, (a, b), (3, 4)):
        assert set(entry) == {"id", "queued_at", "tick", "type", "action", "sha256"}
        assert entry["action"] == action and entry["type"] == action["type"] and entry["tick"] == tick
        assert entry["sha256"] == canonical_sha(action)
        assert datetime.fromisoformat(entry["queued_at"]).utcoffset().total_seconds() == 0
    assert "Grüße" in lines[0]  # stored as UTF-8, not \\u escapes, to match the hashed form


def test_queue_sequence_survives_deleting_the_queue_file(queue):
    assert queue.enqueue({"type": "http_post", "url": "https://e.com/1"}, 1) == "q1"
    assert queue.enqueue({"type": "http_post", "url": "https://e.com/2"}, 1) == "q2"
    queue.queue_path.unlink()
    assert queue.enqueue({"type": "http_post", "url": "https://e.com/3"}, 2) == "q3"
    assert [e["id"] for e in read_queue(queue.queue_path)] == ["q3"]


def test_queue_sequence_lost_falls_back_above_the_highest_queued_id(queue):
    queue.enqueue({"type": "email_send", "to": "a"}, 1)
    queue.enqueue({"type": "email_send", "to": "b"}, 1)
    queue.seq_path.write_text("garbage")
    assert queue.enqueue({"type": "email_send", "to": "c"}, 2) == "q3"
    queue.seq_path.unlink()
    assert queue.enqueue({"type": "email_send", "to": "d"}, 2) == "q4"


def test_queue_bump_without_append_skips_the_number(queue):
    # A crash between the sequence bump and the append loses that number, never reuses it.
    queue.seq_path.parent.mkdir(parents=True, exist_ok=True)
    queue.seq_path.write_text("5\n")
    assert queue.enqueue({"type": "email_send"}, 1) == "q6"


def test_queue_repairs_a_torn_last_line(queue):
    queue.enqueue({"type": "email_send", "to": "a"}, 1)
    with open(queue.queue_path, "ab") as f:
        f.write(b'{"id":"q2","queued_at":"2025-')  # a crash mid-append
    queue.seq_path.write_text("2\n")
    assert queue.enqueue({"type": "email_send", "to": "b"}, 2) == "q3"
    lines = queue_lines(queue)
    assert [json.loads(line)["id"] for line in lines] == ["q1", "q3"]  # still valid JSON Lines
    torn = queue.queue_path.with_name("pending_actions.jsonl.torn").read_text()
    assert torn == '{"id":"q2","queued_at":"2025-\n'
    assert [e["id"] for e in read_queue(queue.queue_path)] == ["q1", "q3"]


def test_read_queue_tolerates_missing_file_and_blank_lines(tmp_path):
    path = tmp_path / "pending_actions.jsonl"
    assert read_queue(path) == []
    path.write_text('{"id":"q1"}\n\n[1,2]\n{"id":"q2"}\n{"id":')
    assert [e["id"] for e in read_queue(path)] == ["q1", "q2"]


def test_queue_scrubs_secrets_and_hashes_what_it_stores(queue):
    action = {"type": "http_post", "url": "https://api.example.com", "body": f"token={PRIMARY_KEY}"}
    queue.enqueue(action, 1)
    raw = queue.queue_path.read_text()
    assert PRIMARY_KEY not in raw
    entry = read_queue(queue.queue_path)[0]
    assert entry["action"]["body"] == "token=<redacted>"
    assert entry["sha256"] == canonical_sha(entry["action"])
    assert PRIMARY_KEY not in queue.telegram.sent[0][0]


def _enqueue_many(cfg_path, n, out):
    from mako.config import load_config
    cfg = load_config(cfg_path)
    q = ApprovalQueue(cfg, Redactor(cfg.secrets()), Recorder())
    out.put([q.enqueue({"type": "email_send", "to": f"x{i}", "subject": str(os.getpid())}, i) for i in range(n)])


def test_queue_concurrent_writers_never_share_an_id(queue, root):
    ctx = multiprocessing.get_context("fork")
    out = ctx.Queue()
    procs = [ctx.Process(target=_enqueue_many, args=(root.config_path, 15, out)) for _ in range(4)]
    for p in procs:
        p.start()
    ids = [i for _ in procs for i in out.get(timeout=30)]
    for p in procs:
        p.join(10)
    assert len(ids) == 60 and len(set(ids)) == 60
    lines = queue_lines(queue)
    assert len(lines) == 60
    assert sorted(json.loads(line)["id"] for line in lines) == sorted(ids)


# -- the ping ----------------------------------------------------------------------------------------------

@pytest.mark.parametrize("action,expected", [
    ({"type": "email_send", "to": "a@b.c", "subject": "Hi", "body": "secret plans"},
     ["⏸ q1 queued · email_send", "to: a@b.c", "subject: Hi"]),
    ({"type": "cf_api", "method": "DELETE", "path": "/zones/1", "body": {}},
     ["⏸ q1 queued · cf_api", "method: DELETE", "path: /zones/1"]),
    ({"type": "http_put", "url": "https://e.com/x", "body": "b"},
     ["⏸ q1 queued · http_put", "url: https://e.com/x"]),
    ({"type": "spend", "amount_pence": 999, "reason": "VPS upgrade"},
     ["⏸ q1 queued · spend", "amount_pence: 999", "reason: VPS upgrade"]),
    ({"type": "shell", "cmd": "apt-get install nginx", "needs_approval": True},
     ["⏸ q1 queued · shell", "cmd: apt-get install nginx"]),
])
def test_queue_ping_names_id_type_and_key_fields(queue, action, expected):
    queue.enqueue(action, 1)
    text, thread = queue.telegram.sent[0]
    assert text.splitlines()[:len(expected)] == expected
    assert "secret plans" not in text
    assert thread == THREADS["approvals"]


def test_queue_ping_cuts_long_fields(queue):
    queue.enqueue({"type": "email_send", "to": "a@b.c", "subject": "s" * 5000}, 1)
    subject = queue.telegram.sent[0][0].splitlines()[2]
    assert subject == "subject: " + "s" * 200 + "…[4800 more chars; see: approve.py show q1]"


@pytest.mark.parametrize("threads,expected", [
    ({"approvals_thread_id": 0}, THREADS["requests"]),
    ({"approvals_thread_id": 0, "requests_thread_id": 0}, THREADS["log"]),
    ({"approvals_thread_id": 0, "requests_thread_id": 0, "log_thread_id": 0}, "log"),
])
def test_queue_ping_falls_back_to_requests_then_log(root, threads, expected):
    queue = make_queue(root, telegram=threads)
    queue.enqueue({"type": "email_send", "to": "x"}, 1)
    assert queue.telegram.sent[0][1] == expected


def test_queue_keeps_the_line_when_the_ping_fails(root):
    queue = make_queue(root, client=Recorder(fail=True))
    assert queue.enqueue({"type": "email_send", "to": "x"}, 1) == "q1"
    assert [e["id"] for e in read_queue(queue.queue_path)] == ["q1"]


# -- the spend ledger --------------------------------------------------------------------------------------

def test_spend_ledger_records_and_sums_the_month(ledger):
    assert ledger.record_spend(120, "domain renewal", 5)[0] is True
    ok, message = ledger.record_spend(80, "dns", 6)
    assert ok is True and "200p" in message
    assert ledger.month_spend() == 200
    entries = [json.loads(line) for line in ledger.ledger_path.read_text().splitlines()]
    month = datetime.now(timezone.utc).strftime("%Y-%m")
    assert [(e["month"], e["amount_pence"], e["reason"], e["tick"]) for e in entries] == \
        [(month, 120, "domain renewal", 5), (month, 80, "dns", 6)]
    assert all(datetime.fromisoformat(e["ts"]).utcoffset().total_seconds() == 0 for e in entries)


def test_spend_ledger_refuses_past_the_monthly_ceiling(root):
    queue = make_queue(root, tick={"budget_ceiling_pence_month": 500})
    ledger = SpendLedger(queue.cfg, queue.redactor)
    assert ledger.record_spend(300, "a", 1)[0] is True
    ok, message = ledger.record_spend(201, "b", 2)
    assert ok is False and "ceiling" in message and "500p" in message
    assert ledger.check_spend(200) == (True, "within the monthly ceiling")
    assert ledger.check_spend(201)[0] is False and ledger.month_spend() == 300
    assert ledger.record_spend(200, "c", 3)[0] is True  # exactly at the ceiling is allowed
    assert ledger.month_spend() == 500


def test_spend_ledger_ignores_other_months(ledger):
    ledger.ledger_path.parent.mkdir(parents=True, exist_ok=True)
    ledger.ledger_path.write_text('{"ts":"2001-01-01T00:00:00+00:00","month":"2001-01","amount_pence":9999,'
                                 '"reason":"old","tick":1}\n{"month":')
    assert ledger.month_spend() == 0
    assert ledger.record_spend(10, "new", 2)[0] is True
    assert ledger.month_spend() == 10


def test_spend_ledger_reads_back_only_to_the_month(ledger):
    import tracemalloc
    month = datetime.now(timezone.utc).strftime("%Y-%m")
    ledger.ledger_path.parent.mkdir(parents=True, exist_ok=True)
    with open(ledger.ledger_path, "wb") as f:
        f.seek(64 * 1024 * 1024)  # 64 MB of older history (sparse), never to be read again
        f.write(b'\n{"month":"2001-01","amount_pence":9999,"reason":"old","tick":1}\n')
        f.write(f'{{"month":"{month}","amount_pence":120,"reason":"a","tick":2}}\n'.encode())
    assert ledger.record_spend(80, "b", 3)[0] is True
    tracemalloc.start()
    try:
        spent = ledger.month_spend()
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert spent == 200 and peak < 1024 * 1024


@pytest.mark.parametrize("amount", [True, -5, 2.5, "10", None])
def test_spend_ledger_rejects_bad_amounts(ledger, amount):
    ok, message = ledger.record_spend(amount, "x", 1)
    assert ok is False and "non-negative integer" in message
    assert not ledger.ledger_path.exists()
