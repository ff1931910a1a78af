"""listen.py under the supervisor (§4, §20): it fills the idle gaps, ends before the next job is due, backs
off when it fails, and the real supervisor takes a chat message within seconds and stops at once."""

import signal
import time

from conftest import BOT_TOKEN, CHAT_ID
from test_supervisor import (NO_SCRIBE_NO_DIGEST, FakeClock, FakeRunner, LineReader, drive, make_cfg,
                             scheduler_for, start_supervisor, write_config)

from fakes import FakeTelegram
from mako.schedule import LISTEN_END_EARLY_S, LISTEN_KILL_AFTER_S, LISTEN_RETRY_S

T0 = 1709510400
LLM = ("llm:\n  primary: {type: ollama, base_url: 'http://127.0.0.1:9', model: m, timeout_s: 1}\n"
       "  fallback: {type: openai_compat, base_url: '', model: ''}\n")
INBOUND = (f"telegram:\n  bot_token: '{BOT_TOKEN}'\n  chat_id: {CHAT_ID}\n  api_base_url: http://127.0.0.1:9\n"
           "  inbound:\n    enabled: true\n    allowed_user_ids: [4242]\n")


class ListenRunner(FakeRunner):
    """FakeRunner that lets listen.py run until the --until it was given (or fail at once with `listen_rc`)."""

    def __init__(self, clock, listen_rc=0, **kw):
        super().__init__(clock, **kw)
        self.listen_rc = listen_rc

    def __call__(self, label, argv, timeout):
        if label != "listen":
            return super().__call__(label, argv, timeout)
        start = self.clock.t
        until = float(argv[argv.index("--until") + 1])
        if self.listen_rc == 0:
            self.clock.t = max(self.clock.t, until)
        else:
            self.clock.t += 0.5
        self.runs.append(("listen", start, self.clock.t, label, argv, timeout, self.listen_rc))
        return self.listen_rc


def test_schedule_listens_in_every_idle_gap_and_the_tick_is_never_late(tmp_path):
    cfg = make_cfg(tmp_path, LLM + NO_SCRIBE_NO_DIGEST + INBOUND, tick_interval_s=300)
    clock = FakeClock(T0 + 3600)
    runner = ListenRunner(clock)
    sched = scheduler_for(cfg, clock, runner)
    drive(sched, clock, T0 + 3600 + 1000)
    ticks, listens = runner.of("tick"), runner.of("listen")
    assert len(ticks) == 4 and len(listens) >= 3
    for before, gap, after in zip(ticks, listens, ticks[1:]):
        assert gap[4][-2:] == ["--until", f"{before[2] + 300 - LISTEN_END_EARLY_S:.0f}"]
        assert gap[4][1].endswith("/listen.py") and gap[3] == "listen"
        assert gap[5] <= 300 - LISTEN_END_EARLY_S + LISTEN_KILL_AFTER_S  # killed if it overstays
        assert after[1] == before[2] + 300  # the next tick starts exactly on time


def test_schedule_without_inbound_never_listens(tmp_path):
    cfg = make_cfg(tmp_path, LLM + NO_SCRIBE_NO_DIGEST, tick_interval_s=300)
    clock = FakeClock(T0 + 3600)
    runner = ListenRunner(clock)
    drive(scheduler_for(cfg, clock, runner), clock, T0 + 3600 + 1000)
    assert runner.of("tick") and not runner.of("listen")


def test_schedule_failing_listener_backs_off_instead_of_spinning(tmp_path):
    cfg = make_cfg(tmp_path, LLM + NO_SCRIBE_NO_DIGEST + INBOUND, tick_interval_s=3600)
    clock = FakeClock(T0 + 3600)
    runner = ListenRunner(clock, listen_rc=1)
    lines = []
    sched = scheduler_for(cfg, clock, runner, lines=lines)
    drive(sched, clock, T0 + 3600 + 1800)
    listens = runner.of("listen")
    assert 5 <= len(listens) <= 1800 / LISTEN_RETRY_S
    gaps = [b[1] - a[2] for a, b in zip(listens, listens[1:])]
    assert gaps[0] >= LISTEN_RETRY_S and gaps[-1] > gaps[0]  # it waits, and longer after repeated failures
    assert any("listen: " in line and "backing off" in line for line in lines)


def test_supervisor_real_run_takes_a_chat_message_while_idle(tmp_path):
    root = tmp_path / "root"
    with FakeTelegram(token=BOT_TOKEN, chat_id=CHAT_ID) as tg:
        llm = LLM
        inbound = INBOUND.replace("http://127.0.0.1:9", tg.url)
        config = write_config(root, llm + NO_SCRIBE_NO_DIGEST + inbound, tick_interval_s=12, stop_grace_s=2)
        proc = start_supervisor(config)
        out = LineReader(proc.stdout)
        try:
            assert out.wait(lambda line: line == "[supervisor] listen: start ...", 30), (
                out.lines, proc.stderr.read() if proc.poll() is not None else "")
            assert "[supervisor]   telegram inbound on (listen.py in the idle gaps)" in out.lines
            time.sleep(1.0)
            sent = time.monotonic()
            tg.send_text("hello from the chat", 4242)
            inbox = root / "state" / "INBOX.md"
            while time.monotonic() - sent < 5 and "hello from the chat" not in (
                    inbox.read_text() if inbox.exists() else ""):
                time.sleep(0.05)
            took = time.monotonic() - sent
            assert took < 2
            assert out.wait(lambda line: line.startswith("[supervisor] listen: done rc=0"), 20), out.lines
            done_at = time.monotonic()
            assert out.wait(lambda _: out.lines.count("[supervisor] tick(normal): start ...") == 2, 5), out.lines
            assert time.monotonic() - done_at < 3
            assert out.wait(lambda _: out.lines.count("[supervisor] listen: start ...") == 2, 10), out.lines
            time.sleep(0.5)
        finally:
            began = time.monotonic()
            proc.send_signal(signal.SIGTERM)
            rc = proc.wait(10)
            took_stop = time.monotonic() - began
    out.thread.join(5)
    assert rc == 0 and took_stop < 2.5
    assert out.lines[-1] == "[supervisor] stopping (SIGTERM)"
    ticks = [line for line in out.lines if line == "[supervisor] tick(normal): start ..."]
    assert len(ticks) >= 2


def test_schedule_listens_while_paused_and_a_resume_lets_the_tick_run_at_once(tmp_path):
    cfg = make_cfg(tmp_path, LLM + NO_SCRIBE_NO_DIGEST + INBOUND, tick_interval_s=300)
    paused = cfg.paths.state / "PAUSED"
    paused.parent.mkdir(parents=True, exist_ok=True)
    paused.write_text("maintenance\n")
    clock = FakeClock(T0 + 3600)

    class Resumer(ListenRunner):
        def __call__(self, label, argv, timeout):
            if label == "listen" and len(self.of("listen")) == 3:
                # The operator says `resume` in the chat: listen.py removes the file and ends its run.
                paused.unlink()
                self.runs.append(("listen", self.clock.t, self.clock.t + 2, label, argv, timeout, 0))
                self.clock.t += 2
                return 0
            return super().__call__(label, argv, timeout)

    runner = Resumer(clock)
    lines = []
    sched = scheduler_for(cfg, clock, runner, lines=lines)
    drive(sched, clock, T0 + 3600 + 400)
    listens, ticks = runner.of("listen"), runner.of("tick")
    assert lines[0] == "paused: maintenance" and "resumed" in lines
    assert len(listens) >= 4 and all(r[2] - r[1] <= 60 for r in listens[:4])  # pieces while paused
    assert ticks and ticks[0][1] == listens[3][2]  # the tick the pause held back runs as soon as it is over
