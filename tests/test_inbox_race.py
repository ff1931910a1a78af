"""The INBOX under hostile conditions (§7): no message lost, none shown twice.

A writer that never waits for the ticks: a separate process plays the operator and adds 200 numbered
messages to `state/INBOX.md` at random moments while real tick.py runs go back to back. It adds a message
as a careful operator does: `cat > INBOX.md` only when there is no INBOX.md, `cat >> INBOX.md` when there
is one. (A `>` on an INBOX.md that is still waiting would truncate the message before it: that loss is the
operator's, and no tick could undo it.) Each write is one open/write/close; some hold the file open for a
moment first, as a shell does while the command behind a redirection starts, so a tick can rename the
file between the writer's open and write. Every message must reach exactly one tick's context (the fake
Ollama records each user message), be archived exactly once, and by the tick that showed it.

An INBOX longer than the context cap: the model sees its head, so only that head may be archived; the
rest waits for the next tick, which shows it.
"""
import os
import random
import re
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path
from types import SimpleNamespace

import pytest

from conftest import reply

from mako.context import Block, build
from mako.inbox import archive, claim

SEED = int(os.environ.get("MAKO_RACE_SEED", "7321"))
MESSAGES = 200
MSG_RE = re.compile(r"msg-\d{4}\b")
LINE_RE = re.compile(r"^msg-\d{4}: operator note \d+$")

# The operator, as its own process: `>` on a missing INBOX.md, `>>` on an existing one. One write in ten is
# slow, like `some-command >> INBOX.md` whose output comes a moment after the shell opened the file: it holds
# the file open until a tick renames it (or 40 ms pass), then writes, so the message lands in the claim the
# tick has just taken, before or after the tick read it.
WRITER = r"""
import os, random, sys, time
inbox, seed, count, gap = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), float(sys.argv[4])
rng = random.Random(seed)
kinds = {">": 0, ">>": 0, "late": 0}
for k in range(count):
    if rng.random() > 0.15:  # else a burst: the next message right behind the last one
        time.sleep(rng.uniform(0, 2 * gap))
    if os.path.exists(inbox):
        kind, flags = ">>", os.O_WRONLY | os.O_APPEND | os.O_CREAT
    else:
        kind, flags = ">", os.O_WRONLY | os.O_CREAT | os.O_TRUNC
    fd = os.open(inbox, flags, 0o644)
    if rng.random() < 0.1:
        mine, give_up = os.fstat(fd).st_ino, time.monotonic() + 0.04
        while time.monotonic() < give_up:
            try:
                renamed = os.stat(inbox).st_ino != mine
            except FileNotFoundError:
                renamed = True
            if renamed:
                kinds["late"] += 1
                time.sleep(rng.uniform(0, 0.002))
                break
            time.sleep(0.0005)
    os.write(fd, f"msg-{k:04d}: operator note {k}\n".encode())
    os.close(fd)
    kinds[kind] += 1
print(kinds[">"], kinds[">>"], kinds["late"], flush=True)
"""


@pytest.mark.slow
def test_inbox_race_concurrent_writer_each_message_shown_and_archived_once(root):
    print(f"\ninbox race seed {SEED}; replay with MAKO_RACE_SEED={SEED}")
    delays = random.Random(SEED + 1)
    happy = root.ollama.default

    def answer(req):
        out = happy(req)
        # Never instant: a slow write lands within a few ms of the claim, long before the tick archives.
        out.delay_s = delays.uniform(0.05, 0.08)
        return out

    root.ollama.default = answer
    root.ollama.content = reply(work_done="read the operator's message")
    assert root.run("tick.py").returncode == 0  # lays out the root, so the writer has a state/ folder
    inbox = root.p("state/INBOX.md")
    t0 = time.monotonic()
    writer = subprocess.Popen([sys.executable, "-c", WRITER, str(inbox), str(SEED), str(MESSAGES), "0.12"],
                              stdout=subprocess.PIPE, text=True)
    ticks = 1
    try:
        while writer.poll() is None:
            done = root.run("tick.py")
            assert done.returncode == 0, done.stderr[-2000:]
            ticks += 1
            assert time.monotonic() - t0 < 120, "the writer did not finish"
        out, _ = writer.communicate(timeout=10)
    finally:
        if writer.poll() is None:
            writer.kill()
            writer.wait()
    assert writer.returncode == 0
    truncating, appending, late = map(int, out.split())
    assert truncating + appending == MESSAGES and truncating > 0 and appending > 0
    done = root.run("tick.py")  # picks up what came after the last tick started
    assert done.returncode == 0, done.stderr[-2000:]
    ticks += 1

    expected = {f"msg-{k:04d}" for k in range(MESSAGES)}
    contexts = [r["messages"][1]["content"] for r in root.ollama.chat_requests()]
    assert len(contexts) == ticks
    shown = Counter(m for text in contexts for m in MSG_RE.findall(text))
    assert set(shown) == expected, f"never shown: {sorted(expected - set(shown))[:10]}"
    assert not [m for m, c in shown.items() if c > 1], f"shown twice: {[m for m, c in shown.items() if c > 1]}"

    archived = Counter()
    for path in root.p("archive").glob("inbox-*.md"):
        lines = path.read_text().splitlines()
        assert lines and all(LINE_RE.match(line) for line in lines), f"{path.name} holds a broken message"
        archived.update(MSG_RE.findall(path.read_text()))
    assert set(archived) == expected and set(archived.values()) == {1}
    assert not inbox.exists() and not list(root.p("state/.mako/inbox").glob("claim-*"))

    # Each tick archived exactly what it showed.
    with_inbox, most = 0, 0
    for n in range(1, ticks + 1):
        payload = root.payload(n)
        assert payload["outcome"] == "ok"
        seen = set(MSG_RE.findall(payload["user_message"]))
        filed = {m for p in payload.get("inbox_archived", []) for m in MSG_RE.findall(Path(p).read_text())}
        assert seen == filed, f"tick {n} showed {sorted(seen)} but archived {sorted(filed)}"
        with_inbox += bool(seen)
        most = max(most, len(seen))
    print(f"ticks {ticks} ({with_inbox} with an INBOX, up to {most} messages in one), messages {MESSAGES} "
          f"({truncating} by '>', {appending} by '>>', {late} into a fresh claim), {time.monotonic() - t0:.1f}s")


def cycle(paths, n, max_tokens):
    """One tick's INBOX handling with a context of `max_tokens`: (lines shown, files archived)."""
    box = claim(paths, n)
    if not box.present:
        return None, []
    message, _ = build("system prompt", [Block("MISSION", "MISSION", "Be useful."),
                                         Block("INBOX", "INBOX", box.text)], max_tokens)
    box.keep_shown(message)
    return message, archive(paths, box, now=1_767_600_000 + n)


def test_inbox_keep_shown_long_inbox_goes_in_parts_each_line_once(tmp_path):
    paths = SimpleNamespace(state=tmp_path / "state", archive=tmp_path / "archive",
                            private=tmp_path / "state" / ".mako")
    paths.state.mkdir()
    lines = [f"line-{k:04d} " + "é" * (k % 50) for k in range(600)]
    originals = set(lines)
    (paths.state / "INBOX.md").write_text("\n".join(lines[:100]) + "\n")
    claim(paths, 1)  # a failed tick: the first claim waits, oldest first, ahead of the next message
    (paths.state / "INBOX.md").write_text("\n\n" + "\n".join(lines[100:]) + "\n")
    shown, n = Counter(), 1
    while True:
        n += 1
        message, filed = cycle(paths, n, max_tokens=1500)
        if message is None:
            break
        assert "…[truncated" in message or n > 2  # the first parts do not fit
        whole = [line for line in message.split("\n") if line in originals]  # a cut line is not whole
        text = "".join(Path(f).read_text(encoding="utf-8") for f in filed)
        assert text.split() == [w for line in whole for w in line.split()], f"tick {n} archived unseen lines"
        shown.update(line.split()[0] for line in whole)
        assert n < 40
    archived = "".join(f.read_text(encoding="utf-8") for f in sorted(paths.archive.iterdir()))
    assert sorted(archived.split()) == sorted(w for line in lines for w in line.split())
    assert set(shown) == {line.split()[0] for line in lines} and set(shown.values()) == {1}


def test_inbox_keep_shown_single_line_longer_than_the_cap_still_moves_on(tmp_path):
    paths = SimpleNamespace(state=tmp_path / "state", archive=tmp_path / "archive",
                            private=tmp_path / "state" / ".mako")
    paths.state.mkdir()
    body = "".join(f"w{k:05d}" for k in range(3000))  # 18000 characters, no newline
    (paths.state / "INBOX.md").write_text(body)
    parts = []
    for n in range(1, 20):
        message, filed = cycle(paths, n, max_tokens=1500)
        if message is None:
            break
        parts += [Path(f).read_text() for f in filed]
        assert parts[-1] and parts[-1] in message
    assert "".join(parts) == body and len(parts) > 2


def test_inbox_tick_longer_than_the_context_archives_only_what_was_shown(root):
    root.ollama.content = reply(work_done="read the INBOX")
    assert root.run("tick.py").returncode == 0
    lines = [f"line-{k:05d} " + "x" * 60 for k in range(1500)]  # ~100 KB, over the 18000-token cap
    root.p("state/INBOX.md").write_text("\n".join(lines) + "\n")
    shown = Counter()
    for n in range(2, 6):
        assert root.run("tick.py").returncode == 0
        shown.update(re.findall(r"line-\d{5} x{60}(?=\n)", root.payload(n)["user_message"]))
    archived = Counter(re.findall(r"line-\d{5} x{60}", "".join(
        f.read_text() for f in root.p("archive").glob("inbox-*.md"))))
    assert set(archived.values()) == {1} and len(archived) == len(lines)
    assert archived == shown
