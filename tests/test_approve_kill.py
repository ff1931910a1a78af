"""`approve.py yes` killed with SIGKILL at random moments, 50 times (§19): the decisions file stays valid
JSON Lines, nothing runs twice without `--again`, every item is open or decided, and the next tick's
APPROVALS block tells the truth."""

import json
import logging
import random
import subprocess
import sys
import time
from collections import Counter

import pytest
from conftest import REPO, Recorder, reply

from mako import decisions
from mako.approvals import ApprovalQueue
from mako.paths import ensure_layout
from mako.redact import Redactor

ITEMS = 8
KILLS = 50


def yes(root, qid, again):
    args = [sys.executable, str(REPO / "approve.py"), "--config", str(root.config_path), "yes", qid]
    return subprocess.Popen(args + (["--again"] if again else []), stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)


@pytest.mark.slow
def test_approve_yes_killed_at_random_moments(root):
    logging.getLogger().handlers.clear()
    cfg = root.cfg()
    ensure_layout(cfg)
    q = ApprovalQueue(cfg, Redactor(cfg.secrets()), Recorder())
    # Each run leaves one line in ran.txt; the short sleep widens the window in which a kill lands mid-run.
    ids = [q.enqueue({"type": "shell", "cmd": f"sleep 0.05; echo t{i} >> ran.txt", "needs_approval": True}, 1)
           for i in range(ITEMS)]
    # How long one uninterrupted approval takes here, to spread the kills across all of it; the estimate
    # follows the machine's load (a run that finished before its kill shrinks it, a kill mid-run grows it).
    started = time.monotonic()
    assert yes(root, ids[0], False).wait(60) == 0
    span = time.monotonic() - started
    rng = random.Random(1234)
    again_used = Counter()
    killed_while_running = attempts = 0
    while killed_while_running < KILLS and attempts < 4 * KILLS:
        attempts += 1
        qid = rng.choice(ids[1:])
        again = rng.random() < 0.3
        again_used[qid] += again
        proc = yes(root, qid, again)
        time.sleep(rng.uniform(0, span))
        if proc.poll() is None:
            killed_while_running += 1
            span *= 1.05
        else:
            span *= 0.8
        proc.kill()
        proc.wait(30)
    time.sleep(0.5)  # a shell orphaned by a kill finishes its line
    assert killed_while_running == KILLS  # every kill really landed inside a run

    raw = root.p("pending/decisions.jsonl").read_bytes()
    assert raw.endswith(b"\n")
    lines = [json.loads(line) for line in raw.decode().splitlines()]  # every line valid JSON
    ran = Counter(root.read("workdir/ran.txt").split())
    started_lines = Counter(d["id"] for d in lines if d.get("status") == "started")
    result_lines = Counter(d["id"] for d in lines if d.get("result") is not None)
    outcomes = {"never started": 0, "started, no result": 0, "ran": 0}
    for i, qid in enumerate(ids):
        runs = ran[f"t{i}"]
        # Each run needs a "started" line first; a second one only ever follows --again.
        assert runs <= started_lines[qid], (qid, runs, started_lines[qid])
        assert started_lines[qid] <= 1 + again_used[qid], qid
        assert result_lines[qid] <= started_lines[qid] and (result_lines[qid] == 0 or runs >= 1)
        outcomes["never started" if not started_lines[qid] else
                 "ran" if result_lines[qid] else "started, no result"] += 1

    # Every item is open or decided, as the files say.
    cfg = root.cfg()
    last = {}
    for d in lines:
        last[d["id"]] = d
    open_ids = [r["id"] for r in decisions.open_items(cfg)]
    assert open_ids == [qid for qid in ids if qid not in last]
    assert decisions.open_summary(cfg)[0] == len(open_ids)

    # The next tick's context tells the truth about every item.
    root.ollama.reply_content(reply())
    assert root.tick() == 0
    message = root.payload(1)["user_message"]
    block = message[message.index("## APPROVALS"):message.index("## PERSONA")]
    for qid in ids:
        d = last.get(qid)
        if d is None:
            assert f"{qid} shell" in block.split("Waiting for the operator")[1]
        elif d.get("status") == "started":
            assert f"- {qid} shell · approved, started at" in block
        else:
            word = "ok" if d["result"]["ok"] else "failed"
            assert f"- {qid} shell · approved · {word}:" in block
    # After all that, approvals still work.
    assert subprocess.run([sys.executable, str(REPO / "approve.py"), "--config", str(root.config_path), "list"],
                          capture_output=True, timeout=60).returncode == 0
    print(f"{attempts} runs, {killed_while_running} killed mid-run, items: {outcomes}")
