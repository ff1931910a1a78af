#!/usr/bin/env python3
"""Idle cost with Telegram inbound on: the supervisor plus the listen.py it runs in the idle gap, against a
local fake Telegram (behind TLS, as the real one is) where nothing arrives. Prints each one's VmRSS and
Pss, their sums (the target is under 40 MB together), and their CPU time over a few idle seconds (the target
is none measurable between polls).

The tick, scribe and digest are stand-ins that exit 0 at once (through the supervisor's hidden
--scripts-dir); listen.py is the real one. Usage: python3 bench/listen_idle.py [seconds]
"""

import os
import signal
import ssl
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


def memory_kb(pid):
    """(VmRSS, Pss, private) of a process in kB. Pss splits each shared page among the processes mapping
    it; private pages are the process's alone (what a second process could never share)."""
    rss = status_kb(pid, "VmRSS")
    fields = {}
    with open(f"/proc/{pid}/smaps_rollup") as f:
        for line in f:
            name, _, rest = line.partition(":")
            if name in ("Pss", "Private_Clean", "Private_Dirty"):
                fields[name] = int(rest.split()[0])
    return rss, fields["Pss"], fields["Private_Clean"] + fields["Private_Dirty"]


def tls_context(tmp):
    """A server context with a throw-away certificate, so the fake is behind TLS as api.telegram.org is: the
    listener then carries the ssl module and a CA store, as it does in production. Returns (context, CA
    file to trust)."""
    cert, key = Path(tmp) / "cert.pem", Path(tmp) / "key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj",
                    "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1", "-keyout", str(key),
                    "-out", str(cert)], check=True, capture_output=True)
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.load_cert_chain(cert, key)
    return ctx, cert


def main():
    seconds = float(sys.argv[1]) if len(sys.argv) > 1 else 10.0
    with tempfile.TemporaryDirectory() as tmp:
        ctx, ca = tls_context(tmp)
        with FakeTelegram(token=TOKEN, chat_id=CHAT, tls=ctx) as tg:
            return run(seconds, tmp, tg, ca)


def run(seconds, tmp, tg, ca):
    url = tg.url
    root = Path(tmp) / "root"
    root.mkdir()
    config = root / "config.yaml"
    config.write_text(
        f"paths:\n  root: {root}\nsupervisor:\n  tick_interval_s: 3600\n  scribe_interval_s: 7200\n"
        "llm:\n  primary: {type: ollama, base_url: 'http://127.0.0.1:9', model: m}\n"
        f"telegram:\n  bot_token: '{TOKEN}'\n  chat_id: {CHAT}\n  api_base_url: {url}\n"
        "  inbound: {enabled: true, allowed_user_ids: [4242]}\n")
    scripts = Path(tmp) / "scripts"
    scripts.mkdir()
    for name in ("tick.py", "scribe.py", "digest.py"):
        (scripts / name).write_text("import sys; sys.exit(0)\n")
    (scripts / "listen.py").symlink_to(CODE / "listen.py")
    proc = subprocess.Popen([sys.executable, str(CODE / "supervisor.py"), "--config", str(config),
                             "--scripts-dir", str(scripts)], stdout=subprocess.PIPE, text=True,
                            env=dict(os.environ, PYTHONPATH=str(CODE), SSL_CERT_FILE=str(ca)))
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
        rss, pss, private = zip(*(memory_kb(p) for p in pids))
        hwm = [status_kb(p, "VmHWM") for p in pids]
        polls = tg.polls - polls_before
    finally:
        proc.send_signal(signal.SIGTERM)
        rc = proc.wait(15)
    print(f"supervisor: VmRSS {rss[0]} kB (peak {hwm[0]} kB), CPU {cpu[0]:.2f}s over {seconds:g}s idle")
    print(f"listen.py:  VmRSS {rss[1]} kB (peak {hwm[1]} kB), CPU {cpu[1]:.2f}s over {seconds:g}s idle, "
          f"{polls} getUpdates call(s) started in that time")
    # The two run the same interpreter and libraries: what they hold together is their private pages plus
    # one copy of the shared ones (at most the larger process's shared set).
    together = sum(private) + max(r - p for r, p in zip(rss, private))
    print(f"together:   {together} kB ({together / 1024:.1f} MiB: private {sum(private)} kB + shared pages "
          f"once; target < 40 MB); VmRSS summed {sum(rss)} kB ({sum(rss) / 1024:.1f} MiB, shared pages "
          f"counted twice); Pss summed {sum(pss)} kB")
    print(f"supervisor exit {rc}, python {sys.version.split()[0]}, getUpdates over TLS")
    return 0


if __name__ == "__main__":
    sys.exit(main())
