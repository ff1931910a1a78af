"""The supervisor (§4): the timetable under a fake clock, persistence across restarts, back-off, payload
cleanup, killing a hung child with its group, and the real supervisor.py as systemd runs it."""

import contextlib
import json
import os
import re
import signal
import socket
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest

from conftest import alive

from mako.children import STOPPED, TIMEOUT, ChildRunner, StopSignal
from mako.config import load_config
from mako.schedule import (BACKOFF_MAX_EXTRA_S, DIGEST_RETRY_S, Scheduler, ScheduleState, backoff_gap,
                           cleanup_payloads, run_forever)

CODE = Path(__file__).resolve().parent.parent
DAY = 86400
# 2024-03-04 00:00:00 UTC, a Monday; the fake local time is UTC (time.gmtime) unless a test says otherwise.
T0 = 1709510400
NO_SCRIBE_NO_DIGEST = "scribe:\n  enabled: false\ndigest:\n  enabled: false\n"


def write_config(root, extra="", **supervisor):
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    body = f"llm: {{}}\npaths:\n  root: {root}\n"
    if supervisor:
        body += "supervisor:\n" + "".join(f"  {k}: {v}\n" for k, v in supervisor.items())
    path = root / "config.yaml"
    path.write_text(body + textwrap.dedent(extra))
    return path


def make_cfg(root, extra="", **supervisor):
    cfg = load_config(write_config(root, extra, **supervisor))
    cfg.paths.private.mkdir(parents=True, exist_ok=True)
    return cfg


class FakeClock:
    def __init__(self, t):
        self.t = float(t)

    def __call__(self):
        return self.t


class FakeRunner:
    """Records runs and advances the fake clock by each role's duration; rc per role from `rcs`."""

    def __init__(self, clock, durations=None, rcs=None):
        self.clock = clock
        self.durations = {"tick": 7.0, "scribe": 20.0, "digest": 3.0, **(durations or {})}
        self.rcs = rcs or {}
        self.runs = []

    def __call__(self, label, argv, timeout):
        role = label.split("(")[0]
        start = self.clock.t
        self.clock.t += self.durations[role]
        rc = self.rcs.get(role, 0)
        if callable(rc):
            rc = rc(len([r for r in self.runs if r[0] == role]))
        self.runs.append((role, start, self.clock.t, label, argv, timeout, rc))
        return rc

    def of(self, role):
        return [r for r in self.runs if r[0] == role]


def drive(scheduler, clock, until):
    """What run_forever does, with a fake clock: step, then jump to the next due time."""
    while clock.t < until:
        nxt = scheduler.step(clock.t)
        if nxt > clock.t:
            clock.t = min(nxt, until)


def scheduler_for(cfg, clock, runner, localtime=time.gmtime, lines=None):
    out = lines if lines is not None else []
    return Scheduler(cfg, runner, scripts_dir="/opt/mako", python="/usr/bin/python3", clock=clock,
                     localtime=localtime, say=out.append)


# -- the timetable --------------------------------------------------------------------------------------


def test_schedule_two_days_order_gaps_counts(tmp_path):
    cfg = make_cfg(tmp_path, tick_interval_s=300, scribe_interval_s=7200, digest_hour_local=8)
    clock = FakeClock(T0 + 5 * 3600 + 1234)  # starts at 05:20:34 local
    runner = FakeRunner(clock)
    lines = []
    sched = scheduler_for(cfg, clock, runner, lines=lines)
    drive(sched, clock, clock.t + 2 * DAY)

    assert runner.runs[0][0] == "tick" and runner.runs[0][1] == T0 + 5 * 3600 + 1234
    ticks = runner.of("tick")
    gaps = [b[1] - a[2] for a, b in zip(ticks, ticks[1:])]
    # End-to-start: exactly the interval, or a little more when a scribe/digest ran in the slot.
    assert min(gaps) == 300
    assert max(gaps) <= 300 + 20
    assert len(ticks) in range(2 * DAY // 307 - 5, 2 * DAY // 307 + 5)

    scribes = runner.of("scribe")
    assert 23 <= len(scribes) <= 25  # 12 a day at 7200 s
    assert scribes[0][1] == ticks[0][2]  # nothing persisted yet: right after the first tick
    sgaps = [b[1] - a[2] for a, b in zip(scribes, scribes[1:])]
    assert all(7200 <= g <= 7200 + 7 for g in sgaps)

    digests = runner.of("digest")
    dates = [time.strftime("%Y-%m-%d %H", time.gmtime(d[1])) for d in digests]
    assert dates == ["2024-03-04 08", "2024-03-05 08"]
    assert all(time.gmtime(d[1]).tm_min < 1 for d in digests)  # woken for 08:00, not a pass later

    # A scribe never starts while a tick is due: the tick goes first.
    for scribe in scribes:
        last_tick = max((t for t in ticks if t[2] <= scribe[1]), key=lambda t: t[2])
        assert scribe[1] < last_tick[2] + 300
    assert "tick(normal): start ..." in lines
    assert any(line.startswith("tick(normal): done rc=0 in 7.0s") for line in lines)
    assert runner.runs[0][4] == ["/usr/bin/python3", "/opt/mako/tick.py", "--config", str(cfg.path)]
    assert runner.runs[0][5] == 300


def test_schedule_due_tick_goes_before_due_scribe(tmp_path):
    cfg = make_cfg(tmp_path, tick_interval_s=300, scribe_interval_s=7200)
    clock = FakeClock(T0 + 5 * 3600)  # before the digest hour
    runner = FakeRunner(clock)
    sched = scheduler_for(cfg, clock, runner)
    sched.step(clock.t)  # first tick
    sched.step(clock.t)  # first scribe right after it
    assert [r[0] for r in runner.runs] == ["tick", "scribe"]
    # Both overdue at the same moment: tick first, then scribe.
    sched.tick_next = sched.state.scribe_next = clock.t - 1
    clock.t += 10
    sched.step(clock.t)
    sched.step(clock.t)
    assert [r[0] for r in runner.runs] == ["tick", "scribe", "tick", "scribe"]


def test_schedule_compact_flag_labels_the_tick(tmp_path):
    cfg = make_cfg(tmp_path)
    clock = FakeClock(T0 + 12 * 3600)
    runner = FakeRunner(clock)
    lines = []
    sched = scheduler_for(cfg, clock, runner, lines=lines)
    (cfg.paths.state / "compact_pending.flag").write_text("over cap\n")
    sched.step(clock.t)
    assert runner.runs[0][3] == "tick(compact)"
    assert "tick(compact): start ..." in lines
    assert "--mode" not in runner.runs[0][4]


def test_schedule_scribe_and_digest_disabled(tmp_path):
    cfg = make_cfg(tmp_path, NO_SCRIBE_NO_DIGEST)
    clock = FakeClock(T0)
    runner = FakeRunner(clock)
    sched = scheduler_for(cfg, clock, runner)
    drive(sched, clock, clock.t + DAY)
    assert {r[0] for r in runner.runs} == {"tick"}
    assert len(runner.of("tick")) > 250


def test_schedule_digest_in_a_non_utc_zone(tmp_path):
    cfg = make_cfg(tmp_path, digest_hour_local=8)
    # Local time 5 h 30 ahead of UTC: 08:00 local is 02:30 UTC.
    local = lambda t: time.gmtime(t + 5 * 3600 + 1800)  # noqa: E731
    clock = FakeClock(T0)  # 05:30 local
    runner = FakeRunner(clock)
    sched = scheduler_for(cfg, clock, runner, localtime=local)
    drive(sched, clock, T0 + DAY)
    digests = runner.of("digest")
    assert [d[1] - T0 for d in digests] == [2 * 3600 + 1800]


# -- restarts ---------------------------------------------------------------------------------------------


def test_schedule_restart_in_digest_hour_sends_no_second_digest(tmp_path):
    cfg = make_cfg(tmp_path, digest_hour_local=8)
    clock = FakeClock(T0 + 7 * 3600 + 3590)
    runner = FakeRunner(clock)
    drive(scheduler_for(cfg, clock, runner), clock, T0 + 8 * 3600 + 600)
    assert len(runner.of("digest")) == 1

    runner2 = FakeRunner(clock)
    drive(scheduler_for(cfg, clock, runner2), clock, T0 + 9 * 3600)
    assert runner2.of("digest") == []
    assert runner2.runs[0][0] == "tick"
    assert ScheduleState(cfg.paths.private / "schedule.json").load() is None


@pytest.mark.parametrize("rc", [STOPPED, TIMEOUT, -15, 1])
def test_schedule_digest_delivered_then_killed_is_not_sent_again(tmp_path, rc):
    from mako.schedule import record_digest_sent
    cfg = make_cfg(tmp_path, digest_hour_local=8)
    clock = FakeClock(T0 + 8 * 3600 + 60)

    def delivered_then_killed(n):
        record_digest_sent(cfg.paths.private, time.gmtime(clock.t))  # what digest.py does on delivery
        return rc

    runner = FakeRunner(clock, rcs={"digest": delivered_then_killed})
    drive(scheduler_for(cfg, clock, runner), clock, T0 + 9 * 3600)
    assert len(runner.of("digest")) == 1
    # A restart (systemctl restart at the wrong second) sends no second digest either.
    runner2 = FakeRunner(clock)
    drive(scheduler_for(cfg, clock, runner2), clock, T0 + 20 * 3600)
    assert runner2.of("digest") == []
    drive(scheduler_for(cfg, clock, runner2), clock, T0 + DAY + 9 * 3600)
    assert len(runner2.of("digest")) == 1  # the next day's


def test_schedule_digest_sent_by_hand_counts_for_the_day(tmp_path):
    from mako.schedule import record_digest_sent
    cfg = make_cfg(tmp_path, digest_hour_local=8)
    record_digest_sent(cfg.paths.private, time.gmtime(T0 + 7 * 3600))  # digest.py run by hand at 07:00
    clock = FakeClock(T0 + 6 * 3600)
    runner = FakeRunner(clock)
    drive(scheduler_for(cfg, clock, runner), clock, T0 + DAY + 9 * 3600)
    digests = runner.of("digest")
    assert [time.gmtime(d[1]).tm_mday for d in digests] == [time.gmtime(T0 + DAY).tm_mday]


def test_schedule_restart_after_scribe_keeps_its_persisted_time(tmp_path):
    cfg = make_cfg(tmp_path, tick_interval_s=300, scribe_interval_s=7200)
    clock = FakeClock(T0 + 10 * 3600)
    runner = FakeRunner(clock)
    drive(scheduler_for(cfg, clock, runner), clock, clock.t + 3000)
    last_scribe_end = runner.of("scribe")[-1][2]

    clock.t = last_scribe_end + 600  # restarted ten minutes after that scribe run
    runner2 = FakeRunner(clock)
    drive(scheduler_for(cfg, clock, runner2), clock, clock.t + 3 * 3600)
    assert runner2.runs[0][0] == "tick"
    first = runner2.of("scribe")[0][1]
    # At its persisted time (or right after a tick that was running then), not 7200 s after the restart.
    assert last_scribe_end + 7200 <= first <= last_scribe_end + 7200 + 7


def test_schedule_restart_with_scribe_overdue_runs_it_after_first_tick(tmp_path):
    cfg = make_cfg(tmp_path, tick_interval_s=300, scribe_interval_s=7200)
    state = ScheduleState(cfg.paths.private / "schedule.json")
    state.scribe_next = T0 + 3600
    state.last_digest_date = "2024-03-04"
    state.save()
    clock = FakeClock(T0 + 5 * 3600)
    runner = FakeRunner(clock)
    sched = scheduler_for(cfg, clock, runner)
    sched.step(clock.t)
    sched.step(clock.t)
    assert [r[0] for r in runner.runs] == ["tick", "scribe"]
    assert runner.runs[1][1] == runner.runs[0][2]


def test_schedule_persisted_scribe_time_far_ahead_is_clamped(tmp_path):
    cfg = make_cfg(tmp_path, scribe_interval_s=7200)
    state = ScheduleState(cfg.paths.private / "schedule.json")
    state.scribe_next = T0 + 30 * DAY  # the clock was wrong when this was written
    state.save()
    clock = FakeClock(T0)
    runner = FakeRunner(clock)
    drive(scheduler_for(cfg, clock, runner), clock, T0 + 600)
    assert runner.of("scribe")


def test_schedule_wall_clock_going_back_does_not_stall_ticks(tmp_path):
    cfg = make_cfg(tmp_path, NO_SCRIBE_NO_DIGEST)
    clock = FakeClock(T0 + 5 * 3600)
    runner = FakeRunner(clock)
    sched = scheduler_for(cfg, clock, runner)
    drive(sched, clock, clock.t + 1000)
    count = len(runner.of("tick"))
    clock.t -= 2 * 3600  # NTP stepped the clock back two hours
    drive(sched, clock, clock.t + 10)
    assert len(runner.of("tick")) == count + 1


def test_schedule_state_file_corrupt_starts_fresh(tmp_path):
    cfg = make_cfg(tmp_path)
    (cfg.paths.private / "schedule.json").write_text("{not json")
    clock = FakeClock(T0 + 9 * 3600)
    runner = FakeRunner(clock)
    lines = []
    drive(scheduler_for(cfg, clock, runner, lines=lines), clock, clock.t + 60)
    assert [r[0] for r in runner.runs] == ["tick", "digest", "scribe"]
    assert any("starting a fresh schedule" in line for line in lines)
    assert ScheduleState(cfg.paths.private / "schedule.json").load() is None


# -- back-off ---------------------------------------------------------------------------------------------


def test_backoff_gap_grows_and_is_bounded():
    assert [backoff_gap(300, k) for k in range(7)] == [300, 300, 600, 1200, 2400, 3900, 3900]
    assert backoff_gap(7200, 2) == 7200 + BACKOFF_MAX_EXTRA_S
    assert backoff_gap(7200, 9) == 7200 + BACKOFF_MAX_EXTRA_S


def test_schedule_failing_tick_backs_off_and_success_resets(tmp_path):
    cfg = make_cfg(tmp_path, NO_SCRIBE_NO_DIGEST)
    clock = FakeClock(T0)
    # Fails for runs 0..6, succeeds from run 7 on.
    runner = FakeRunner(clock, rcs={"tick": lambda n: 1 if n < 7 else 0})
    lines = []
    drive(scheduler_for(cfg, clock, runner, lines=lines), clock, T0 + 6 * 3600)
    ticks = runner.of("tick")
    gaps = [b[1] - a[2] for a, b in zip(ticks, ticks[1:])]
    assert gaps[:9] == [300, 600, 1200, 2400, 3900, 3900, 3900, 300, 300]
    assert max(gaps) == 300 + BACKOFF_MAX_EXTRA_S
    assert any("tick: 2 failed runs in a row, backing off: next in 600s" in line for line in lines)
    assert any("tick: recovered after 7 failed run(s)" in line for line in lines)
    assert ScheduleState(cfg.paths.private / "schedule.json").as_dict()["failures"]["tick"] == 0


@pytest.mark.parametrize("rc", [TIMEOUT, -9, 78])
def test_schedule_timeout_and_signals_count_as_failures(tmp_path, rc):
    cfg = make_cfg(tmp_path, NO_SCRIBE_NO_DIGEST)
    clock = FakeClock(T0)
    runner = FakeRunner(clock, rcs={"tick": rc})
    lines = []
    sched = scheduler_for(cfg, clock, runner, lines=lines)
    while len(runner.of("tick")) < 3:
        clock.t = max(clock.t, sched.step(clock.t))
    assert sched.state.failures["tick"] == 3
    assert f"tick(normal): done rc={rc} in 7.0s" in lines
    state = ScheduleState(cfg.paths.private / "schedule.json")
    state.load()
    assert state.failures["tick"] == 3


def test_schedule_busy_tick_is_not_a_failure(tmp_path):
    cfg = make_cfg(tmp_path, NO_SCRIBE_NO_DIGEST)
    clock = FakeClock(T0)
    runner = FakeRunner(clock, rcs={"tick": 75})
    sched = scheduler_for(cfg, clock, runner)
    drive(sched, clock, T0 + 3600)
    ticks = runner.of("tick")
    assert {b[1] - a[2] for a, b in zip(ticks, ticks[1:])} == {300}
    assert sched.state.failures["tick"] == 0


def test_schedule_failed_digest_retries_then_once(tmp_path):
    cfg = make_cfg(tmp_path, digest_hour_local=8)
    clock = FakeClock(T0 + 8 * 3600)
    runner = FakeRunner(clock, rcs={"digest": lambda n: 1 if n < 2 else 0})
    drive(scheduler_for(cfg, clock, runner), clock, T0 + 12 * 3600)
    digests = runner.of("digest")
    assert [d[6] for d in digests] == [1, 1, 0]
    assert digests[1][1] - digests[0][2] >= DIGEST_RETRY_S
    assert digests[2][1] - digests[1][2] >= 2 * DIGEST_RETRY_S


def test_schedule_runner_exception_is_reported_not_raised(tmp_path):
    cfg = make_cfg(tmp_path)
    clock = FakeClock(T0)

    def runner(label, argv, timeout):
        raise FileNotFoundError(2, "No such file or directory", argv[1])

    lines = []
    sched = scheduler_for(cfg, clock, runner, lines=lines)
    sched.step(clock.t)
    assert sched.tick_next == T0 + 300
    assert any(line.startswith("tick(normal): could not run: FileNotFoundError") for line in lines)
    assert "tick(normal): done rc=ERROR in 0.0s" in lines
    assert sched.state.failures["tick"] == 1


def test_run_forever_survives_an_unexpected_error():
    calls = []

    class Flaky:
        def step(self, now):
            calls.append(now)
            if len(calls) == 1:
                raise RuntimeError("boom")
            if len(calls) == 3:
                stop.request()
            return now

    stop = StopSignal()
    lines = []
    run_forever(Flaky(), stop, error_pause_s=0.01, say=lines.append)
    assert len(calls) == 3
    assert "RuntimeError: boom" in lines[0]


# -- cleanup ----------------------------------------------------------------------------------------------


def test_cleanup_deletes_only_old_payloads(tmp_path):
    cfg = make_cfg(tmp_path, "logging:\n  keep_days: 14\n")
    logs = cfg.paths.logs
    now = time.time()
    files = {}
    for folder in ("ticks", "scribe"):
        (logs / folder).mkdir(parents=True, exist_ok=True)
        for n, age_days in ((1, 20), (2, 15), (3, 13), (4, 0)):
            p = logs / folder / f"{n:08d}.json"
            p.write_text("{}")
            os.utime(p, (now - age_days * DAY, now - age_days * DAY))
            files[p] = age_days
    old_other = logs / "ticks" / "notes.txt"
    old_other.write_text("x")
    metrics = logs / "metrics.csv"
    metrics.write_text("ts\n")
    for p in (old_other, metrics):
        os.utime(p, (now - 30 * DAY, now - 30 * DAY))

    assert cleanup_payloads(logs, 14, now) == 4
    for p, age in files.items():
        assert p.exists() == (age < 14), p
    assert old_other.exists() and metrics.exists()
    assert cleanup_payloads(logs, 0, now + 100 * DAY) == 0  # 0 keeps payloads forever


def test_schedule_cleans_up_once_a_day(tmp_path):
    cfg = make_cfg(tmp_path, "logging:\n  keep_days: 14\n")
    (cfg.paths.logs / "ticks").mkdir(parents=True)
    # Local noon today: the first 600 s never cross midnight, whenever the suite runs.
    clock = FakeClock(time.mktime(time.localtime()[:3] + (12, 0, 0, 0, 0, -1)))
    lines = []
    sched = scheduler_for(cfg, clock, FakeRunner(clock), lines=lines)
    old = cfg.paths.logs / "ticks" / "00000001.json"
    old.write_text("{}")
    os.utime(old, (clock.t - 20 * DAY,) * 2)
    drive(sched, clock, clock.t + 600)
    assert not old.exists()
    assert lines.count("cleanup: deleted 1 payload file(s) older than 14 days") == 1
    drive(sched, clock, clock.t + DAY)
    assert sum(line.startswith("cleanup:") for line in lines) == 2


# -- real processes ---------------------------------------------------------------------------------------


def wait_for(predicate, timeout=10.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.02)
    return predicate()


# A run that hangs after starting a grandchild which ignores SIGTERM; it writes "<pid> <grandchild pid>".
HANGING_CHILD = """
import os, signal, subprocess, sys, time
if {ignore_term}:
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
GRAND = "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); time.sleep(600)"
grand = subprocess.Popen([sys.executable, "-c", GRAND])
with open({pids!r} + ".tmp", "w") as f:
    f.write(f"{{os.getpid()}} {{grand.pid}}")
os.rename({pids!r} + ".tmp", {pids!r})
time.sleep(600)
"""


def hanging_script(tmp_path, name="tick.py", ignore_term=False):
    pids = tmp_path / f"{name}.pids"
    folder = tmp_path / "scripts"
    folder.mkdir(exist_ok=True)
    (folder / name).write_text(HANGING_CHILD.format(pids=str(pids), ignore_term=ignore_term))
    return folder / name, pids


def test_child_runner_kills_hung_child_and_grandchild_at_timeout(tmp_path):
    script, pids = hanging_script(tmp_path)
    lines = []
    runner = ChildRunner(StopSignal(), stop_grace_s=10, kill_grace_s=0.5, say=lines.append)
    began = time.monotonic()
    rc = runner("tick(normal)", [sys.executable, str(script)], 1.5)
    took = time.monotonic() - began
    assert rc == TIMEOUT
    assert 1.5 <= took < 5
    child, grand = map(int, pids.read_text().split())
    assert wait_for(lambda: not alive(child) and not alive(grand), 5)
    assert any("timed out after 1.5s" in line for line in lines)


def test_child_runner_returns_exit_code(tmp_path):
    runner = ChildRunner(StopSignal())
    assert runner("digest", [sys.executable, "-c", "import sys; sys.exit(3)"], 10) == 3


def test_child_runner_stop_forwards_sigterm_then_kills_group(tmp_path):
    script, pids = hanging_script(tmp_path)
    stop = StopSignal()
    runner = ChildRunner(stop, stop_grace_s=0.5, say=lambda s: None)
    result = {}
    thread = threading.Thread(target=lambda: result.update(rc=runner("scribe", [sys.executable, str(script)],
                                                                     60)))
    thread.start()
    assert wait_for(pids.exists)
    began = time.monotonic()
    stop.request()
    thread.join(10)
    assert result["rc"] == STOPPED
    assert time.monotonic() - began < 5
    child, grand = map(int, pids.read_text().split())
    assert wait_for(lambda: not alive(child) and not alive(grand), 5)


@contextlib.contextmanager
def closed_port():
    """A port on 127.0.0.1 that nothing listens on (bound, then released)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    yield port


def start_supervisor(config, *extra):
    env = dict(os.environ, PYTHONPATH=str(CODE), TZ="UTC")
    return subprocess.Popen([sys.executable, str(CODE / "supervisor.py"), "--config", str(config), *extra],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, cwd=str(CODE))


class LineReader:
    """Collects a child's stdout lines in a thread, so a test can wait for one without blocking."""

    def __init__(self, stream):
        self.lines = []
        self.thread = threading.Thread(target=self._read, args=(stream,), daemon=True)
        self.thread.start()

    def _read(self, stream):
        for line in stream:
            self.lines.append(line.rstrip("\n"))

    def wait(self, predicate, timeout=15.0):
        return wait_for(lambda: any(predicate(line) for line in list(self.lines)), timeout)


def test_supervisor_kills_hung_tick_at_its_timeout(tmp_path):
    root = tmp_path / "root"
    config = write_config(root, NO_SCRIBE_NO_DIGEST, tick_interval_s=3600, tick_timeout_s=1, stop_grace_s=1)
    script, pids = hanging_script(tmp_path)
    proc = start_supervisor(config, "--scripts-dir", str(script.parent))
    out = LineReader(proc.stdout)
    try:
        assert out.wait(lambda line: line.startswith("[supervisor] tick(normal): done rc=TIMEOUT in "))
        child, grand = map(int, pids.read_text().split())
        assert wait_for(lambda: not alive(child) and not alive(grand), 5)
        assert proc.poll() is None  # the supervisor itself carries on
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(10) == 0


def test_supervisor_sigterm_during_a_run_stops_child_group_and_exits_0(tmp_path):
    root = tmp_path / "root"
    config = write_config(root, NO_SCRIBE_NO_DIGEST, tick_interval_s=3600, tick_timeout_s=120, stop_grace_s=1)
    script, pids = hanging_script(tmp_path, ignore_term=True)
    proc = start_supervisor(config, "--scripts-dir", str(script.parent))
    out = LineReader(proc.stdout)
    try:
        assert wait_for(pids.exists, 15)
    finally:
        began = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        rc = proc.wait(15)
        took = time.monotonic() - began
    child, grand = map(int, pids.read_text().split())
    assert rc == 0
    assert 1 <= took < 4  # SIGTERM is ignored: the grace (1 s), then the group is killed
    assert wait_for(lambda: not alive(child) and not alive(grand), 5)
    out.thread.join(5)
    assert "[supervisor] tick(normal): done rc=STOPPED" in " ".join(out.lines)
    assert out.lines[-1] == "[supervisor] stopping (SIGTERM)"


def test_supervisor_real_run_prints_timetable_runs_ticks_and_stops_on_sigterm(tmp_path):
    root = tmp_path / "root"
    # Providers on a closed port: the ticks fail quickly, which is all this test needs from them.
    with closed_port() as port:
        llm = (f"llm:\n"
               f"  primary: {{type: ollama, base_url: 'http://127.0.0.1:{port}', model: m, timeout_s: 2}}\n"
               f"  fallback: {{type: openai_compat, base_url: 'http://127.0.0.1:{port}', model: m, timeout_s: 2}}\n")
        config = write_config(root, llm + NO_SCRIBE_NO_DIGEST, tick_interval_s=1, scribe_interval_s=7200,
                              digest_hour_local=8, stop_grace_s=2)
        proc = start_supervisor(config)
        out = LineReader(proc.stdout)
        try:
            assert out.wait(lambda line: line.startswith("[supervisor] tick(normal): done rc="), 30)
            assert out.wait(lambda line: line.startswith("[supervisor] tick(normal): start ..."))
        finally:
            began = time.monotonic()
            proc.send_signal(signal.SIGTERM)
            rc = proc.wait(10)
            took = time.monotonic() - began
        out.thread.join(5)
    lines = out.lines
    assert rc == 0
    assert took < 4
    assert lines[:7] == [
        "[supervisor] starting",
        "[supervisor]   tick every 1s",
        "[supervisor]   scribe every 7200s (off)",
        "[supervisor]   digest at 08:00 local (off)",
        "[supervisor]   telegram inbound off (telegram.inbound.enabled is false)",
        f"[supervisor]   config {config.resolve()}",
        "[supervisor]   timezone UTC (UTC+00:00)",
    ]
    assert lines[-1] == "[supervisor] stopping (SIGTERM)"
    done = [line for line in lines if line.startswith("[supervisor] tick(normal): done rc=")]
    assert done and all(line.endswith("s") and " in " in line for line in done)
    assert (root / "state" / ".mako").is_dir() and (root / "logs" / "ticks").is_dir()


def test_supervisor_journal_warns_once_and_names_a_refused_provider_in_one_short_line(tmp_path):
    root = tmp_path / "root"
    with closed_port() as port:
        llm = (f"llm:\n"
               f"  primary: {{type: ollama, base_url: 'http://127.0.0.1:{port}', model: m, timeout_s: 2}}\n"
               f"  fallback: {{type: openai_compat, base_url: '', model: ''}}\n"
               "tick:\n  frobnicate_level: 3\n")
        config = write_config(root, llm + NO_SCRIBE_NO_DIGEST, tick_interval_s=0.5, stop_grace_s=2)
        proc = start_supervisor(config)
        out, err = LineReader(proc.stdout), LineReader(proc.stderr)
        try:
            assert wait_for(lambda: sum(line.startswith("[supervisor] tick(normal): done rc=1 in ")
                                        for line in list(out.lines)) >= 3, 30)
        finally:
            proc.send_signal(signal.SIGTERM)
            assert proc.wait(10) == 0
    out.thread.join(5)
    err.thread.join(5)
    warnings = [line for line in err.lines if "unknown key tick.frobnicate_level" in line]
    assert warnings == [f"supervisor: warning: {config}: unknown key tick.frobnicate_level (ignored)"]
    refused = [line for line in err.lines if line.startswith("mako.llm: primary")]
    assert len(refused) >= 3
    assert all(re.fullmatch(r"mako\.llm: primary ollama/m: failed \(connection\) in \d+\.\ds", line)
               for line in refused), refused


def test_supervisor_real_scripts_against_fakes_run_tick_digest_scribe_in_order(tmp_path):
    from fakes import FakeOllama

    root = tmp_path / "root"
    with FakeOllama() as ollama:
        llm = (f"llm:\n  primary: {{type: ollama, base_url: '{ollama.url}', model: qwen3.5, timeout_s: 5}}\n"
               "  fallback: {type: openai_compat, base_url: '', model: ''}\n")
        config = write_config(root, llm, tick_interval_s=1, digest_hour_local=0, stop_grace_s=2)
        proc = start_supervisor(config)
        out = LineReader(proc.stdout)
        try:
            assert wait_for(lambda: sum(line.startswith("[supervisor] tick(normal): done rc=0 in ")
                                        for line in list(out.lines)) >= 2, 30)
        finally:
            proc.send_signal(signal.SIGTERM)
            rc = proc.wait(10)
    out.thread.join(5)
    assert rc == 0
    runs = [line.split(":")[0].split()[-1] for line in out.lines if line.endswith(": start ...")]
    assert runs[:4] == ["tick(normal)", "digest", "scribe", "tick(normal)"]
    assert (root / "logs" / "ticks" / "00000001.json").exists()
    schedule = json.loads((root / "state" / ".mako" / "schedule.json").read_text())
    assert schedule["last_digest_date"] == time.strftime("%Y-%m-%d", time.gmtime())
    assert schedule["scribe_next"] > time.time() + 7000


def test_supervisor_exits_at_once_on_sigterm_when_idle(tmp_path):
    root = tmp_path / "root"
    config = write_config(root, NO_SCRIBE_NO_DIGEST, tick_interval_s=3600)
    folder = tmp_path / "scripts"
    folder.mkdir()
    (folder / "tick.py").write_text("import sys; sys.exit(0)\n")
    proc = start_supervisor(config, "--scripts-dir", str(folder))
    out = LineReader(proc.stdout)
    try:
        assert out.wait(lambda line: line.startswith("[supervisor] tick(normal): done rc=0 in "))
        assert out.wait(lambda line: line.startswith("[supervisor] cleanup: "))  # idle from here on
        time.sleep(0.2)
    finally:
        began = time.monotonic()
        proc.send_signal(signal.SIGINT)
        rc = proc.wait(10)
    assert rc == 0
    assert time.monotonic() - began < 1.5
    out.thread.join(5)
    assert out.lines[-1] == "[supervisor] stopping (SIGINT)"


def test_supervisor_bad_config_exits_78_with_one_line(tmp_path):
    config = tmp_path / "config.yaml"
    config.write_text("llm: {}\nsupervisor:\n  tick_interval_s: soon\n")
    proc = start_supervisor(config)
    out, err = proc.communicate(timeout=20)
    assert proc.returncode == 78
    assert out == ""
    assert err.count("\n") == 1 and "supervisor.tick_interval_s" in err and str(config) in err


# -- the pause switch (§21) -----------------------------------------------------------------------------


def test_schedule_paused_starts_no_tick_or_scribe_but_the_digest_goes_on(tmp_path):
    from mako.pause import pause, resume

    cfg = make_cfg(tmp_path, tick_interval_s=300, scribe_interval_s=600, digest_hour_local=8)
    clock = FakeClock(T0 + 7 * 3600)  # 07:00, an hour before the digest
    runner = FakeRunner(clock)
    lines = []
    sched = scheduler_for(cfg, clock, runner, lines=lines)
    drive(sched, clock, clock.t + 900)
    assert {"tick", "scribe"} <= {r[0] for r in runner.runs}
    before = len(runner.runs)
    pause(cfg.paths, "looking into the \x1b[2J bill", by="cli")
    drive(sched, clock, clock.t + 3 * 3600)  # through 08:00
    assert [r[0] for r in runner.runs[before:]] == ["digest"]
    paused = [line for line in lines if line.startswith("paused:")]
    assert len(paused) == 1 and "\x1b" not in paused[0] and "looking into the \\x1b[2J bill" in paused[0]
    assert sched.next_due(clock.t) - clock.t <= 5  # looks again within seconds, no busy loop either
    resume(cfg.paths)
    resumed_at = clock.t
    drive(sched, clock, clock.t + 10)
    assert lines.count("resumed") == 1
    assert runner.runs[-1][0] in ("tick", "scribe") and runner.of("tick")[-1][1] - resumed_at <= 5


def test_supervisor_real_run_paused_then_resumed(tmp_path):
    root = tmp_path / "root"
    llm = "llm:\n  primary: {type: ollama, base_url: '', model: ''}\n  fallback: {base_url: ''}\n"
    config = write_config(root, llm + NO_SCRIBE_NO_DIGEST, tick_interval_s=0.5, stop_grace_s=2)
    (root / "state").mkdir(parents=True)
    (root / "state" / "PAUSED").write_text("disk check\n")
    folder = tmp_path / "scripts"
    folder.mkdir()
    (folder / "tick.py").write_text("import sys; sys.exit(0)\n")
    proc = start_supervisor(config, "--scripts-dir", str(folder))
    out = LineReader(proc.stdout)
    try:
        assert out.wait(lambda line: line == "[supervisor] paused: disk check")
        time.sleep(1.5)
        assert not [line for line in out.lines if "tick(normal)" in line]
        (root / "state" / "PAUSED").unlink()
        assert out.wait(lambda line: line.startswith("[supervisor] tick(normal): done rc=0"), 10)
    finally:
        proc.send_signal(signal.SIGTERM)
        rc = proc.wait(10)
    out.thread.join(5)
    assert rc == 0
    assert out.lines.count("[supervisor] paused: disk check") == 1
    assert out.lines.count("[supervisor] resumed") == 1
    assert out.lines.index("[supervisor] resumed") < out.lines.index(
        next(line for line in out.lines if line.startswith("[supervisor] tick(normal): start")))
