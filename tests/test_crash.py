"""Crash safety of the worker tick (§5, §7, §13, §17): real tick.py runs killed with SIGKILL at random moments.

Each run is a `tick.py` subprocess in its own process group, killed after a random delay: during start-up,
while the fake Ollama holds its reply back, in the middle of a row of shell and gated actions, in the
middle of many large file writes, or while the tick records itself. After every kill the runtime root must
still be in a state the next tick can trust: readable state files, a tick counter that never goes back and
never hands a number out twice, a queue file of whole JSON lines with unique ids, and every INBOX message
the operator wrote either still waiting or archived exactly once.

The timing is random (seeded; set MAKO_CRASH_SEED to replay a run), the outcome is not: every assertion is
an invariant that must hold wherever the kill lands.
"""

import csv
import io
import json
import os
import random
import re
import signal
import statistics
import subprocess
import sys
import time
import uuid
from collections import Counter, deque

import pytest

from conftest import REPO, reply

from mako.fileio import FileLock, read_text
from mako.logs import METRICS_COLUMNS

SEED = int(os.environ.get("MAKO_CRASH_SEED", "20260105"))
KILLS = int(os.environ.get("MAKO_CRASH_KILLS", "100"))
MSG_RE = re.compile(r"msg-\d{4}\b")
TEXT_STATE = ("MISSION.md", "CAPABILITIES.md", "STATE.md", "NEXT.md", "PERSONA.md", "JOURNAL.md",
              "LAST_RESULTS.md", "INBOX.md", "compact_pending.flag")
JOURNAL_RE = re.compile(r"^#(\d+) ")
HEADING_RE = re.compile(r"^# LAST_RESULTS — tick #(\d+) ")


# -- what the fake model answers -------------------------------------------------------------------------

def scenario(rng, i, mark):
    """(name, reply text, provider delay, busy) for run i; the reply aims the kill at one phase.

    `busy` is about how long the run works after it asked the provider, for placing the kill.
    """
    kind = rng.choices(["provider", "actions", "writes", "record", "fail"], weights=[3, 4, 4, 3, 1])[0]
    delay = rng.uniform(0.1, 0.45) if kind == "provider" else rng.uniform(0.0, 0.04)
    if kind == "fail":
        return kind, "PARSE_ERROR: the model gave up", delay, delay + 0.1
    fields = {"work_done": f"run {i} ({kind})", "state_md": f"Focus: run {i}\n" + "s" * rng.randrange(2000),
              "next_md": f"Next after run {i}\n", "request_notes": ["plan.md"]}
    if kind in ("provider", "actions"):
        n = 1 if kind == "provider" else rng.randint(3, 7)
        # The marker is in the environment the shells inherit; this tag says which run left a line behind.
        fields["actions"] = [{"type": "shell", "cmd": f"sleep 0.05; echo {mark}-{i}-{k} >> log"}
                             for k in range(n)]
        if kind == "actions":
            gated = [{"type": "email_send", "to": "ops@example.com", "subject": f"run {i}", "body": "hello"},
                     {"type": "shell", "cmd": f"echo gated {i}", "needs_approval": True},
                     {"type": "spend", "amount_pence": 500, "reason": f"domain {i}"},
                     {"type": "spend", "amount_pence": 1, "reason": f"small {i}"}]
            for action in rng.sample(gated, rng.randint(1, 4)):
                fields["actions"].insert(rng.randrange(len(fields["actions"]) + 1), action)
    if kind == "writes":
        fields["files"] = [{"path": f"{rng.choice(['workdir', 'notes'])}/w{k}.txt",
                            "content": f"run {i} file {k}\n" + "w" * rng.randrange(10_000, 40_000),
                            "mode": rng.choice(["write", "write", "append"])} for k in range(rng.randint(6, 14))]
        fields["files"].append({"path": "notes/plan.md", "content": f"# Plan of run {i}\n"})
        fields["persona_update"] = {"mode": "append", "content": f"run {i} was here"}
    if kind == "record":
        # A big reply makes a big payload (raw_content and parsed_response) and a split Telegram post.
        fields["files"] = [{"path": "workdir/big.txt", "content": "b" * rng.randrange(100_000, 250_000)}]
        fields["telegram"] = f"run {i} " + "t" * 5000
        fields["compact_now"] = rng.random() < 0.2
    busy = delay + 0.07 * len(fields.get("actions", ())) + 0.15
    return kind, reply(**fields), delay, busy


# -- running and killing ---------------------------------------------------------------------------------

def leftovers(mark, names=None):
    """Pids of live processes that inherited this test's marker (the tick and the shells it started)."""
    needle = f"MAKO_CRASH_MARK={mark}".encode()
    pids = []
    for name in names or os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/environ", "rb") as f:
                if needle in f.read().split(b"\0"):
                    pids.append(int(name))
        except OSError:
            continue
    return pids


def kill_marked(pid, mark):
    """SIGKILL `pid` if it still carries the marker; through a pidfd, so a reused pid is never hit."""
    try:
        fd = os.pidfd_open(pid)
    except ProcessLookupError:
        return False
    except OSError:  # a kernel without pidfds: check, then signal by pid
        if pid in leftovers(mark, [str(pid)]):
            os.kill(pid, signal.SIGKILL)
            return True
        return False
    try:
        if pid not in leftovers(mark, [str(pid)]):
            return False
        signal.pidfd_send_signal(fd, signal.SIGKILL)
        return True
    except ProcessLookupError:
        return False
    finally:
        os.close(fd)


def reap_leftovers(mark):
    """Kill what a killed tick left running (shells run in their own sessions); return how many."""
    killed = 0
    for _ in range(50):
        pids = leftovers(mark)
        if not pids:
            return killed
        killed += sum(kill_marked(pid, mark) for pid in pids)
        time.sleep(0.02)
    raise AssertionError(f"processes still running after repeated SIGKILL: {leftovers(mark)}")


def run_and_kill(root, env, delay):
    """Start tick.py, SIGKILL its process group after `delay` seconds; return its exit code."""
    proc = subprocess.Popen([sys.executable, str(REPO / "tick.py"), "--config", str(root.config_path)],
                            env=env, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        proc.wait(timeout=delay)
    except subprocess.TimeoutExpired:
        pass
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    return proc.wait(timeout=30)


def operator_writes(inbox, text):
    """Add a message as a careful operator does: `cat >` when there is no INBOX.md, else `cat >>`."""
    with open(inbox, "ab" if inbox.exists() else "wb") as f:
        f.write(text.encode())


# -- the invariants ------------------------------------------------------------------------------------------

def read_int(path):
    if not path.exists():
        return None
    text = path.read_text(encoding="ascii")
    assert re.fullmatch(r"\d+\n?", text), f"{path.name} is not a number: {text[:80]!r}"
    return int(text)


class Checker:
    """Everything seen so far, so a later kill cannot quietly undo or repeat an earlier run."""

    def __init__(self, root):
        self.root = root
        self.counter = 0
        self.payload_cache = {}   # file name -> (stat key, tick_n, started_at, outcome)
        self.started = {}         # tick number -> started_at of the run that recorded it
        self.outcomes = {}        # tick number -> outcome in its payload
        self.error_heads = {}     # tick number -> first line of its error log
        self.queue_ids = {}       # queue id -> sha256 of its action
        self.messages = []        # texts the operator has written so far

    def check(self, final=False):
        p = self.root.p
        for name in TEXT_STATE:
            path = p(f"state/{name}")
            if path.exists():
                path.read_bytes().decode("utf-8")  # strict: a torn multi-byte write would fail here
        visible, shadow = read_int(p("state/tick_counter.txt")), read_int(p("state/.mako/tick_counter"))
        counter = max(v for v in (visible, shadow, 0) if v is not None)
        assert counter >= self.counter, f"tick counter went back from {self.counter} to {counter}"
        self.counter = counter
        if p("state/next_notes.json").exists():
            assert isinstance(json.loads(p("state/next_notes.json").read_text()), list)
        used = self.check_payloads() | self.check_error_logs() | self.check_metrics() | self.check_journal()
        if p("state/LAST_RESULTS.md").exists():
            m = HEADING_RE.match(p("state/LAST_RESULTS.md").read_text())
            assert m, "LAST_RESULTS.md has no heading"
            used.add(int(m.group(1)))
        assert not used or max(used) <= counter, f"tick {max(used)} recorded but the counter says {counter}"
        self.check_queue()
        self.check_inbox(final)

    def check_payloads(self):
        used = set()
        for path in sorted(self.root.p("logs/ticks").glob("*.json")):
            st = path.stat()
            key = (st.st_ino, st.st_size, st.st_mtime_ns)
            cached = self.payload_cache.get(path.name)
            if cached is None or cached[0] != key:
                payload = json.loads(path.read_text(encoding="utf-8"))
                cached = (key, payload["tick_n"], payload["started_at"], payload["outcome"])
                self.payload_cache[path.name] = cached
            _, n, started, self.outcomes[n] = cached
            assert path.name == f"{n:08d}.json"
            assert self.started.setdefault(n, started) == started, f"tick number {n} used by two runs"
            used.add(n)
        return used

    def check_error_logs(self):
        used = set()
        for path in self.root.p("logs").glob("error-*.log"):
            n = int(path.name[len("error-"):-len(".log")])
            head = path.read_text(encoding="utf-8").split("\n", 1)[0]
            assert head.startswith(f"tick {n} ("), head
            assert self.error_heads.setdefault(n, head) == head, f"tick number {n} failed twice"
            used.add(n)
        return used

    def check_metrics(self):
        path = self.root.p("logs/metrics.csv")
        if not path.exists():
            return set()
        data = path.read_bytes().decode("utf-8")
        complete = data[:data.rfind("\n") + 1]
        rows = list(csv.reader(io.StringIO(complete)))
        assert rows and rows[0] == METRICS_COLUMNS, "metrics.csv header"
        for row in rows[1:]:
            assert len(row) == len(METRICS_COLUMNS), f"metrics row with {len(row)} columns: {row}"
        numbers = [int(r[1]) for r in rows[1:]]
        twice = [n for n, c in Counter(numbers).items() if c > 1]
        assert not twice, f"tick numbers with two metrics rows: {twice}"
        for row in rows[1:]:
            outcome = self.outcomes.get(int(row[1]))
            assert outcome is None or row[METRICS_COLUMNS.index("outcome")] == outcome, row
        return set(numbers)

    def check_journal(self):
        path = self.root.p("state/JOURNAL.md")
        if not path.exists():
            return set()
        numbers = [int(m.group(1)) for line in path.read_text().splitlines() if (m := JOURNAL_RE.match(line))]
        twice = [n for n, c in Counter(numbers).items() if c > 1]
        assert not twice, f"journal lines for the same tick number: {twice}"
        return set(numbers)

    def check_queue(self):
        path = self.root.p("pending/pending_actions.jsonl")
        if not path.exists():
            return
        data = path.read_text(encoding="utf-8")
        assert not data or data.endswith("\n"), "pending_actions.jsonl ends in a torn line"
        ids = []
        for line in data.splitlines():
            entry = json.loads(line)
            assert set(entry) == {"id", "queued_at", "tick", "type", "action", "sha256"}
            assert self.queue_ids.setdefault(entry["id"], entry["sha256"]) == entry["sha256"], entry["id"]
            ids.append(entry["id"])
        assert len(ids) == len(set(ids)), f"queue ids repeat: {[i for i, c in Counter(ids).items() if c > 1]}"

    def copies(self):
        """message -> list of (where, inode) holding it; a claim hard-linked into archive/ counts once."""
        found = {}
        places = [("archive", f) for f in self.root.p("archive").glob("inbox-*.md")]
        places += [("claim", f) for f in self.root.p("state/.mako/inbox").glob("claim-*")]
        if self.root.p("state/INBOX.md").exists():
            places.append(("inbox", self.root.p("state/INBOX.md")))
        seen_inodes = set()
        for where, path in places:
            st = path.stat()
            if st.st_ino in seen_inodes:
                continue
            seen_inodes.add(st.st_ino)
            where = "archive" if where == "claim" and st.st_nlink > 1 else where
            for msg in MSG_RE.findall(path.read_text(encoding="utf-8")):
                found.setdefault(msg, []).append((where, path.name))
        return found

    def check_inbox(self, final):
        found = self.copies()
        unknown = set(found) - {m.split(":")[0] for m in self.messages}
        assert not unknown, f"messages nobody wrote: {unknown}"
        for text in self.messages:
            msg = text.split(":")[0]
            where = found.get(msg, [])
            assert len(where) == 1, f"{msg} lost or duplicated: {where}"
            if final:
                assert where[0][0] == "archive", f"{msg} still waiting after the last tick: {where}"


# -- the test ------------------------------------------------------------------------------------------------

class KillTimer:
    """Picks kill delays: about a quarter of the kills before the run reaches the provider, the rest after.

    Start-up (interpreter, imports, lock, counter, claim, context) is a good part of a short run and varies
    with the machine and its load, so the time a run takes to reach the provider is measured as it goes.
    """

    def __init__(self, rng):
        self.rng = rng
        self.reach = deque(maxlen=9)

    @property
    def startup(self):
        return statistics.median(self.reach)

    def delay(self, busy):
        if self.rng.random() < 0.15:  # every one of these is a kill, while many later ones finish first
            return self.rng.uniform(0.0, self.startup)
        return self.startup + self.rng.uniform(-0.03, busy)

    def observe(self, spawned, asked_at, kill_after):
        if asked_at > spawned:
            self.reach.append(asked_at - spawned)
        elif kill_after > self.startup:
            self.reach.append(kill_after + 0.05)  # slower than guessed: all we know is a lower bound


def phase_of(checker, before, requests_before, root, rc):
    """Where the kill landed, judged from what the run left behind (for the printed figures)."""
    if rc != -signal.SIGKILL:
        return "finished"
    n = checker.counter
    if n == before:
        return "start-up"
    if root.p(f"logs/ticks/{n:08d}.json").exists():
        return "exiting"
    if root.p("state/LAST_RESULTS.md").exists() and root.read("state/LAST_RESULTS.md").startswith(
            f"# LAST_RESULTS — tick #{n} "):
        return "recording"
    if len(root.ollama.chat_requests()) > requests_before:
        return "provider/apply/actions"
    return "claim/assemble"


def check_finished(root, checker, rc, archives_before):
    """A run that ended before its kill recorded itself, and its INBOX went the right way."""
    n = checker.counter
    if rc == 0:
        assert root.payload(n)["outcome"] == "ok"
        waiting = [w for ws in checker.copies().values() for w in ws if w[0] != "archive"]
        assert not waiting, f"a successful tick left messages waiting: {waiting}"
    else:
        assert rc == 1 and root.p(f"logs/error-{n}.log").exists(), rc
        assert set(root.p("archive").glob("inbox-*.md")) == archives_before, "a failed tick archived its INBOX"


@pytest.mark.slow
def test_crash_sigkill_at_random_moments_keeps_state_sound(root):
    rng = random.Random(SEED)
    print(f"\ncrash test seed {SEED} ({KILLS} kills); replay with MAKO_CRASH_SEED={SEED}")
    mark = uuid.uuid4().hex
    env = dict(os.environ, MAKO_CRASH_MARK=mark)
    root.write_config(tick={"shell_timeout_s": 5, "max_actions": 12}, supervisor={"tick_timeout_s": 60})
    current = {"delay": 0.0, "asked_at": 0.0}
    happy = root.ollama.default

    def answer(req):
        current["asked_at"] = time.monotonic()
        out = happy(req)
        out.delay_s = current["delay"]
        return out

    root.ollama.default = answer
    checker, timer = Checker(root), KillTimer(rng)
    phases, kinds, left_behind, unrecorded, t0 = Counter(), Counter(), 0, 0, time.monotonic()
    root.ollama.content = reply(work_done="calibration")
    for _ in range(2):
        start = time.monotonic()
        assert root.run("tick.py").returncode == 0
        timer.observe(start, current["asked_at"], 0)
    checker.check()
    runs = 0
    try:
        while phases.total() - phases["finished"] < KILLS:
            assert runs < 2 * KILLS, f"only {phases.total() - phases['finished']} of {runs} runs were killed"
            if rng.random() < 0.35:
                text = f"msg-{len(checker.messages):04d}: please look at item {runs}\n"
                operator_writes(root.p("state/INBOX.md"), text)
                checker.messages.append(text)
            kind, root.ollama.content, current["delay"], busy = scenario(rng, runs, mark)
            kill_after = timer.delay(busy)
            before, requests_before = checker.counter, len(root.ollama.chat_requests())
            archives = set(root.p("archive").glob("inbox-*.md"))
            spawned = current["asked_at"] = time.monotonic()
            rc = run_and_kill(root, env, kill_after)
            timer.observe(spawned, current["asked_at"], kill_after)
            # Shells a killed tick left behind (in their own sessions) must not keep the next tick out.
            lock = FileLock(root.p("state/.mako/tick.lock"))
            assert lock.acquire(), "the tick lock outlived the tick"
            lock.release()
            left_behind += reap_leftovers(mark)
            checker.check()
            phases[phase_of(checker, before, requests_before, root, rc)] += 1
            if rc != -signal.SIGKILL:
                check_finished(root, checker, rc, archives)
            elif f"{mark}-{runs}-" in read_text(root.p("workdir/log")) and not read_text(
                    root.p("state/LAST_RESULTS.md")).startswith(f"# LAST_RESULTS — tick #{checker.counter} "):
                unrecorded += 1  # shell actions ran, and nothing the next tick reads says so
            kinds[kind] += 1
            runs += 1
        # A calm tick afterwards picks up everything that was waiting and archives it once.
        current["delay"] = 0.0
        root.ollama.content = reply(work_done="caught up after the crashes")
        done = root.run("tick.py", env=env)
        assert done.returncode == 0, done.stderr[-2000:]
        reap_leftovers(mark)
        checker.check(final=True)
    finally:
        reap_leftovers(mark)
    # A request cut off by the kill arrives without a whole body; the fake records it with no JSON.
    shown = "\n".join(r["messages"][1]["content"] for r in root.ollama.chat_requests() if r)
    assert all(t.split(":")[0] in shown for t in checker.messages), "a message was archived unseen"
    acknowledged = Counter(m for n in checker.started if (p := root.payload(n))["outcome"] == "ok"
                           for m in set(MSG_RE.findall(p["user_message"])))
    assert not [m for m, c in acknowledged.items() if c > 1], "a message was acknowledged by two ticks"
    assert phases["provider/apply/actions"] + phases["recording"] >= KILLS // 10, phases
    print(f"runs {runs} + 3 calm ticks, {phases.total() - phases['finished']} killed, by phase {dict(phases)}; "
          f"replies {dict(kinds)}; messages {len(checker.messages)}; tick counter {checker.counter}; "
          f"queued ids {len(checker.queue_ids)}; killed after running shell actions {unrecorded}; "
          f"leftover processes killed {left_behind}; temp files left by kills "
          f"{sum(1 for f in root.path.rglob('.*.tmp'))}; "
          f"start-up {timer.startup:.2f}s; {time.monotonic() - t0:.1f}s")


# -- the INBOX archive, interrupted at every step ------------------------------------------------------------

class Killed(BaseException):
    """The process died here: nothing after this point runs."""


def killed_at(monkeypatch, step):
    """From the `step`-th file-system change on (link, unlink, replace, rename, fsync), everything fails."""
    calls = {"n": 0}
    for name in ("link", "unlink", "replace", "rename", "fsync"):
        real = getattr(os, name)

        def wrapper(*args, _real=real, **kw):
            calls["n"] += 1
            if calls["n"] > step:
                raise Killed()
            return _real(*args, **kw)
        monkeypatch.setattr(os, name, wrapper)
    return calls


def test_crash_inbox_archive_killed_at_every_step_archives_each_line_once(tmp_path, monkeypatch):
    from types import SimpleNamespace

    from mako.context import Block, build
    from mako.inbox import archive, claim

    lines = [f"line-{k:04d} of the operator's long message" for k in range(400)]
    step, completed = 0, False
    while not completed:
        base = tmp_path / f"step-{step}"
        paths = SimpleNamespace(state=base / "state", archive=base / "archive", private=base / "state" / ".mako")
        paths.state.mkdir(parents=True)
        (paths.state / "INBOX.md").write_text("\n".join(lines[:30]) + "\n")
        claim(paths, 1)  # a failed tick: this claim is shown whole next time, the long one after it in part
        (paths.state / "INBOX.md").write_text("\n".join(lines[30:]) + "\n")
        for n in range(2, 40):
            box = claim(paths, n)
            if not box.present:
                break
            message, _ = build("system", [Block("INBOX", "INBOX", box.text)], 1200)
            box.keep_shown(message)
            if n == 2:
                with monkeypatch.context() as m:
                    calls = killed_at(m, step)
                    try:
                        archive(paths, box, now=1_767_600_000 + n)
                        completed = True
                    except Killed:
                        pass
                assert calls["n"] > step or completed
            else:
                archive(paths, box, now=1_767_600_000 + n)
        counts = Counter("".join(f.read_text() for f in paths.archive.iterdir()).splitlines())
        assert not set(lines) - set(counts), f"killed at step {step}: lost {sorted(set(lines) - set(counts))[:3]}"
        twice = sorted(line for line, c in counts.items() if c > 1)
        assert not twice, f"killed at step {step}: {len(twice)} lines archived twice, {twice[:3]}"
        left = [name for name in os.listdir(paths.private / "inbox") if not name.endswith(".tmp")]
        assert not left, f"killed at step {step}: left behind {left}"
        step += 1
    assert step > 5


def test_crash_state_restored_from_an_old_backup_never_reuses_a_tick_number(root):
    """After a disk failure the operator restores state/ from last night's copy; logs/ is newer."""
    import shutil

    root.ollama.content = reply(work_done="step")
    for _ in range(3):
        assert root.run("tick.py").returncode == 0
    shutil.copytree(root.p("state"), root.p("backup"))
    for _ in range(2):
        assert root.run("tick.py").returncode == 0
    shutil.rmtree(root.p("state"))
    shutil.copytree(root.p("backup"), root.p("state"))
    assert root.run("tick.py").returncode == 0
    assert root.read("state/tick_counter.txt").strip() == "6"
    assert [row["tick_n"] for row in root.metrics()] == ["1", "2", "3", "4", "5", "6"]
