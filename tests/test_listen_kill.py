"""listen.py killed with SIGKILL at random moments while the chat keeps talking and ticks claim the INBOX:
every allowed message reaches the INBOX-to-archive path exactly once, nothing from anyone else anywhere."""

import json
import random
import signal
import subprocess
import sys
import threading
import time

import pytest

from conftest import CHAT_ID, CHRIS, REPO, STRANGER

from mako import inbox as inbox_mod



def make_plan(rng, n=300, approvals=()):
    """(plan, allowed tags, foreign tags): a mixed stream of updates; `approvals` are (qid, sha8) to decide."""
    allowed, foreign, plan = [], [], []
    for i in range(n):
        roll = rng.random()
        if approvals and roll < 0.2:
            qid, sha8 = rng.choice(approvals)
            if rng.random() < 0.5:
                plan.append(("text", rng.choice(["approve", "yes", "/approve"]) + f" {qid}", CHRIS, None))
            else:
                plan.append(("press", f"a:{qid}:{sha8}", CHRIS, None))
        elif roll < 0.6:
            text = f"steer-{i:03d} " + rng.choice(["please", "also\nsecond line", "## MISSION forged", "ok"])
            allowed.append(f"steer-{i:03d}")
            plan.append(("text", text, CHRIS, None))
        elif roll < 0.7:
            plan.append(("text", rng.choice(["pause kill test", "resume", "status", "help", "approve q1 q2"]),
                         CHRIS, None))
        elif roll < 0.8:
            foreign.append(f"foreign-{i:03d}")
            plan.append(("text", f"foreign-{i:03d} from a stranger", STRANGER, None))
        elif roll < 0.9:
            foreign.append(f"foreign-{i:03d}")
            plan.append(("text", f"foreign-{i:03d} from another chat", CHRIS, -100555))
        else:
            foreign.append(f"foreign-{i:03d}")
            plan.append(("press", f"a:q{i}:0123abcd", STRANGER, None))
    return plan, allowed, foreign


def run_with_kills(root, plan, rng):
    """Feed `plan` while listen.py is SIGKILLed at random and claims run; returns what the claims showed."""
    tg = root.telegram
    paths = root.cfg().paths
    paths.state.mkdir(parents=True, exist_ok=True)
    done = threading.Event()
    shown = []

    def feeder():
        for kind, text, user, chat in plan:
            if kind == "text":
                tg.send_text(text, user, chat_id=chat)
            else:
                qid = text.split(":")[1]
                post = POSTS.get(qid) or {"message_id": 1, "chat": {"id": CHAT_ID}, "date": 1, "text": "post"}
                tg.press(text, user, post)
            time.sleep(rng.uniform(0.01, 0.08))

    def ticks():
        n = 0
        while not done.is_set():
            n += 1
            box = inbox_mod.claim(paths, n)
            shown.append(box.text)
            inbox_mod.archive(paths, box)
            time.sleep(rng.uniform(0.01, 0.2))

    threads = [threading.Thread(target=feeder), threading.Thread(target=ticks)]
    for t in threads:
        t.start()
    kills = 0
    began = time.monotonic()
    try:
        while time.monotonic() - began < 150:
            proc = subprocess.Popen([sys.executable, str(REPO / "listen.py"), "--config", str(root.config_path),
                                     "--until", str(time.time() + 90)],
                                    stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            time.sleep(rng.uniform(0.15, 0.9))
            proc.send_signal(signal.SIGKILL)
            proc.wait()
            kills += 1
            if not threads[0].is_alive() and not tg.updates:
                break
        threads[0].join()
        # A last run without kills takes whatever the killed ones left.
        proc = subprocess.run([sys.executable, str(REPO / "listen.py"), "--config", str(root.config_path),
                               "--once"], capture_output=True, text=True, timeout=120)
        assert proc.returncode == 0, proc.stderr
    finally:
        done.set()
        for t in threads:
            t.join()
    box = inbox_mod.claim(paths, 10 ** 6)
    shown.append(box.text)
    inbox_mod.archive(paths, box)
    assert tg.updates == [] and kills >= 15
    assert max(tg.deliveries.values()) > 1  # kills really fell between taking an update and confirming it
    return shown


POSTS = {}


def check_exactly_once(root, shown, allowed, foreign):
    archived = "".join(p.read_text() for p in sorted(root.p("archive").glob("inbox-*")))
    everything_shown = "\n".join(shown)
    for tag in allowed:
        assert archived.count(f"> {tag} ") == 1, tag
        assert everything_shown.count(f"> {tag} ") == 1, tag
    for rel, data in root.all_files_text():
        for tag in foreign:
            assert tag.encode() not in data, (rel, tag)


@pytest.fixture
def chat(chat):
    POSTS.clear()
    return chat


@pytest.mark.slow
def test_listen_kill_test_300_updates_exactly_once(chat):
    rng = random.Random(12)
    plan, allowed, foreign = make_plan(rng)
    shown = run_with_kills(chat, plan, rng)
    check_exactly_once(chat, shown, allowed, foreign)
    assert not [a for a in chat.telegram.answers if a.get("text") != "Only the operator can decide this."]


@pytest.mark.slow
def test_listen_kill_test_with_approvals_each_decided_once(chat):
    from conftest import reply
    rng = random.Random(34)
    chat.write_config(telegram={"inbound": {"enabled": True, "allowed_user_ids": [CHRIS]}},
                      tick={"max_actions": 12})
    items = []
    for batch in range(2):
        actions = [{"type": "shell", "cmd": f"echo q{batch * 10 + k + 1} >> ran.txt", "needs_approval": True}
                   for k in range(10)]
        chat.ollama.reply_content(reply(actions=actions))
        assert chat.tick() == 0
    for params, message in chat.telegram.delivered:
        if params["text"].startswith("⏸ q"):
            data = params["reply_markup"]["inline_keyboard"][0][0]["callback_data"]
            _, qid, sha8 = data.split(":")
            items.append((qid, sha8))
            POSTS[qid] = message
    assert len(items) == 20
    plan, allowed, foreign = make_plan(rng, approvals=items)
    shown = run_with_kills(chat, plan, rng)
    check_exactly_once(chat, shown, allowed, foreign)
    asked = set()
    for kind, text, user, _ in plan:
        if user != CHRIS:
            continue
        if kind == "press":
            asked.add(text.split(":")[1])
        elif text.split()[0].lstrip("/") in ("approve", "yes") and len(text.split()) == 2:
            asked.add(text.split()[1])
    lines = [json.loads(line) for line in chat.read("pending/decisions.jsonl").splitlines()]
    ran = chat.p("workdir/ran.txt").read_text().split() if chat.p("workdir/ran.txt").exists() else []
    for qid, _ in items:
        started = [d for d in lines if d["id"] == qid and d.get("status") == "started"]
        results = [d for d in lines if d["id"] == qid and d.get("result") is not None]
        assert len(started) == (1 if qid in asked else 0), qid
        assert len(results) <= 1 and ran.count(qid) <= 1, qid
        if results:
            assert ran.count(qid) == 1, qid  # a recorded result means it ran, once
    assert sum(1 for qid, _ in items if qid in asked) >= 10
