#!/usr/bin/env python3
"""Idle cost with Telegram inbound on: the supervisor plus the listen.py it runs in the idle gap, against a
local fake Telegram where nothing arrives. Prints each one's VmRSS, their sum (the target is under 40 MB
together), and their CPU time over a few idle seconds (the target is none measurable between polls).

The tick, scribe and digest are stand-ins that exit 0 at once (through the supervisor's hidden
--scripts-dir); listen.py is the real one. Usage: python3 bench/listen_idle.py [seconds]
"""

import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

CODE = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(CODE / "tests"))
sys.path.insert(0, str(CODE / "bench"))

from fakes import FakeTelegram  # noqa: E402
from supervisor_idle import cpu_ticks, status_kb  # noqa: E402

TOKEN = "123456789:AAE-bench-token-abcdefghijklmnopqrs"
CHAT = -1001234567890


def children(pid):
    try:
        with open(f"/proc/{pid}/task/{pid}/children") as f:
            return [int(p) for p in f.read().split()]
    except OSError:
        return []


def main():
    seconds = float(sys.argv[1]) if len(sys.argv) > 1 else 10.0
    with tempfile.TemporaryDirectory() as tmp, FakeTelegram(token=TOKEN, chat_id=CHAT) as tg:
        root = Path(tmp) / "root"
        root.mkdir()
        config = root / "config.yaml"
        config.write_text(
            f"paths:\n  root: {root}\nsupervisor:\n  tick_interval_s: 3600\n  scribe_interval_s: 7200\n"
            "llm:\n  primary: {type: ollama, base_url: 'http://127.0.0.1:9', model: m}\n"
            f"telegram:\n  bot_token: '{TOKEN}'\n  chat_id: {CHAT}\n  api_base_url: {tg.url}\n"
            "  inbound: {enabled: true, allowed_user_ids: [4242]}\n")
        scripts = Path(tmp) / "scripts"
        scripts.mkdir()
        for name in ("tick.py", "scribe.py", "digest.py"):
            (scripts / name).write_text("import sys; sys.exit(0)\n")
        (scripts / "listen.py").symlink_to(CODE / "listen.py")
        proc = subprocess.Popen([sys.executable, str(CODE / "supervisor.py"), "--config", str(config),
                                 "--scripts-dir", str(scripts)], stdout=subprocess.PIPE, text=True,
                                env=dict(os.environ, PYTHONPATH=str(CODE)))
        try:
            for line in proc.stdout:
                if line.startswith("[supervisor] listen: start"):
                    break
            deadline = time.monotonic() + 10
            while tg.polls < 1 and time.monotonic() < deadline:
                time.sleep(0.05)
            time.sleep(1)
            kids = children(proc.pid)
            if len(kids) != 1:
                print(f"expected one child (listen.py), found {kids}")
                return 1
            listener = kids[0]
            polls_before = tg.polls
            pids = (proc.pid, listener)
            before = [cpu_ticks(p) for p in pids]
            time.sleep(seconds)
            cpu = [(cpu_ticks(p) - b) / os.sysconf("SC_CLK_TCK") for p, b in zip(pids, before)]
            rss = [status_kb(p, "VmRSS") for p in pids]
            hwm = [status_kb(p, "VmHWM") for p in pids]
            polls = tg.polls - polls_before
        finally:
            proc.send_signal(signal.SIGTERM)
            rc = proc.wait(15)
    print(f"supervisor: VmRSS {rss[0]} kB (peak {hwm[0]} kB), CPU {cpu[0]:.2f}s over {seconds:g}s idle")
    print(f"listen.py:  VmRSS {rss[1]} kB (peak {hwm[1]} kB), CPU {cpu[1]:.2f}s over {seconds:g}s idle, "
          f"{polls} getUpdates call(s) started in that time")
    total = sum(rss)
    print(f"together:   {total} kB ({total / 1024:.1f} MiB; target < 40 MB), supervisor exit {rc}, "
          f"python {sys.version.split()[0]}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
