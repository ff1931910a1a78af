#!/usr/bin/env python3
"""Resident memory of an idle supervisor: start supervisor.py on a throw-away root, let its first tick
finish, read VmRSS (and the peak, VmHWM) from /proc/<pid>/status and its CPU time over a few idle
seconds, then stop it.

The role scripts are stand-ins that exit 0 at once (through the supervisor's hidden --scripts-dir), so the
figure is the supervisor's own cost, not a tick's. Usage: python3 bench/supervisor_idle.py
"""

import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

CODE = Path(__file__).resolve().parent.parent


def status_kb(pid, key):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(key + ":"):
                return int(line.split()[1])
    return None


def cpu_ticks(pid):
    """utime + stime of `pid`, in clock ticks."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return int(fields[11]) + int(fields[12])


def main():
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "root"
        root.mkdir()
        config = root / "config.yaml"
        config.write_text(f"llm: {{}}\npaths:\n  root: {root}\nsupervisor:\n  tick_interval_s: 3600\n"
                          "  scribe_interval_s: 7200\n")
        scripts = Path(tmp) / "scripts"
        scripts.mkdir()
        for name in ("tick.py", "scribe.py", "digest.py"):
            (scripts / name).write_text("import sys; sys.exit(0)\n")
        proc = subprocess.Popen([sys.executable, str(CODE / "supervisor.py"), "--config", str(config),
                                 "--scripts-dir", str(scripts)], stdout=subprocess.PIPE, text=True,
                                env=dict(os.environ, PYTHONPATH=str(CODE)))
        try:
            for line in proc.stdout:
                # Idle once the first tick, the first scribe and the day's cleanup have run.
                if line.startswith("[supervisor] cleanup:"):
                    break
            time.sleep(1)
            cpu_before = cpu_ticks(proc.pid)
            time.sleep(3)
            idle_cpu = (cpu_ticks(proc.pid) - cpu_before) / os.sysconf("SC_CLK_TCK")
            rss, hwm = status_kb(proc.pid, "VmRSS"), status_kb(proc.pid, "VmHWM")
        finally:
            proc.send_signal(signal.SIGTERM)
            rc = proc.wait(15)
        print(f"supervisor idle: VmRSS {rss} kB ({rss / 1024:.1f} MiB), peak VmHWM {hwm} kB, "
              f"CPU {idle_cpu:.2f}s over 3s idle, exit {rc}, python {sys.version.split()[0]}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
