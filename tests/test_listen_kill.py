"""listen.py killed with SIGKILL at random moments while the chat keeps talking and ticks claim the INBOX:
every allowed message reaches the INBOX-to-archive path exactly once, nothing from anyone else anywhere."""

import random
import signal
import subprocess
import sys
import threading
import time

import pytest

from conftest import CHAT_ID, REPO

from mako import inbox as inbox_mod

CHRIS = 4242
STRANGER = 777


@pytest.mark.slow
def test_listen_kill_test_300_updates_exactly_once(root):
    rng = random.Random(12)
    tg = root.telegram
    tg.chat_id = CHAT_ID
    root.write_config(telegram={"inbound": {"enabled": True, "allowed_user_ids": [CHRIS]}})
    paths = root.cfg().paths
    paths.state.mkdir(parents=True, exist_ok=True)

    allowed, foreign = [], []
    plan = []
    for i in range(300):
        roll = rng.random()
        if roll < 0.6:
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

    done = threading.Event()
    shown = []

    def feeder():
        for kind, text, user, chat in plan:
            if kind == "text":
                tg.send_text(text, user, chat_id=chat)
            else:
                tg.press(text, user, {"message_id": 1, "chat": {"id": CHAT_ID}, "date": 1, "text": "post"})
            time.sleep(rng.uniform(0, 0.03))

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
                                     "--until", str(time.time() + 60)],
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
                               "--once"], capture_output=True, text=True, timeout=60)
        assert proc.returncode == 0, proc.stderr
    finally:
        done.set()
        for t in threads:
            t.join()
    box = inbox_mod.claim(paths, 10 ** 6)
    shown.append(box.text)
    inbox_mod.archive(paths, box)

    assert tg.updates == [] and kills >= 20
    assert max(tg.deliveries.values()) > 1  # kills really fell between taking an update and confirming it
    archived = "".join(p.read_text() for p in sorted(root.p("archive").glob("inbox-*")))
    everything_shown = "\n".join(shown)
    for tag in allowed:
        assert archived.count(f"> {tag} ") == 1, tag
        assert everything_shown.count(f"> {tag} ") == 1, tag
    for rel, data in root.all_files_text():
        for tag in foreign:
            assert tag.encode() not in data, (rel, tag)
    assert not [a for a in tg.answers if a.get("text") != "Only the operator can decide this."]
