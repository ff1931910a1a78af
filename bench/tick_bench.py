#!/usr/bin/env python3
"""Cost of one worker tick, run as the supervisor runs it: `tick.py` in a fresh interpreter.

Against an instant local fake Ollama and a fake Telegram, it prints the medians of several runs of:

1. the whole `tick.py` subprocess divided by `python3 -c "import requests, yaml"` (the floor; target
   <= 1.15) in both cases a tick meets: Python may cache bytecode (a normal install), and it may not
   (PYTHONDONTWRITEBYTECODE set, as under systemd) and reads what install.sh compiled; a third row, for
   diagnosis, is a code folder never compiled that Python may not write to, where every tick compiles
   mako/ again (install.sh is there so this never happens);
2. the same tick on a root carrying a long history (a 200 MB state/JOURNAL.md, a 100,000-line
   pending/pending_actions.jsonl, a 100,000-row logs/metrics.csv and 10,000 notes files) divided by the tick
   on a fresh root (target <= 1.1: nothing may read a whole history file), once for a typical reply and
   once for a reply that queues a gated action;
3. the bytes one typical tick writes: payload, metrics row, journal line, LAST_RESULTS, the rest.

Runs are interleaved (floor, fresh, big, ...) so a busy machine slows all of them alike.
Usage: python3 bench/tick_bench.py [--runs N] [--keep DIR]
"""

import argparse
import compileall
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

CODE = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(CODE / "tests"))

from fakes import FakeOllama, FakeTelegram  # noqa: E402

TOKEN = "123456789:AAE-bench-token-abcdefghijklmnopqrstu"
KEY = "bench-ollama-key-0123456789abcdef"
CHAT = -1001234567890
JOURNAL_MB = 200
QUEUE_LINES = 100_000
METRICS_ROWS = 100_000
NOTES = 10_000


def typical_reply(gated=False):
    actions = [{"type": "shell", "cmd": "echo hello"}]
    if gated:
        actions.append({"type": "email_send", "to": "editor@example.com", "subject": "Draft ready",
                        "body": "The first post is in the drafts folder."})
    reply = {
        "thinking": "The plan note exists; next is an outline. " * 5,
        "work_done": "Read the plan.\nWrote an outline for the first post.",
        "state_md": "# State\n\nFocus: the first blog post.\n\n" + "- a fact worth keeping across ticks\n" * 30,
        "next_md": "# Next\n\n1. Turn the outline into a draft.\n2. Ask for a review.\n",
        "persona_update": {"mode": "skip"},
        "files": [{"path": "notes/plan.md", "content": "# Plan\n\n" + "- step of the plan\n" * 40}],
        "actions": actions,
        "request_notes": ["plan.md"],
        "telegram": "Outlined the first post; drafting next.",
        "compact_now": False,
        "drift_flag": None,
    }
    return "Here is my reply.\n```json\n" + json.dumps(reply) + "\n```\n"


def write_config(root, ollama, telegram):
    root.mkdir(parents=True, exist_ok=True)
    config = root / "config.yaml"
    config.write_text(json.dumps({  # JSON is YAML: no dependency needed here
        "paths": {"root": str(root)},
        "llm": {"primary": {"type": "ollama", "base_url": ollama.url, "api_key": KEY, "model": "qwen3.5",
                            "timeout_s": 30},
                "fallback": {"base_url": ""}},
        "telegram": {"bot_token": TOKEN, "chat_id": CHAT, "api_base_url": telegram.url, "log_thread_id": 11,
                     "requests_thread_id": 22, "approvals_thread_id": 33},
    }))
    os.chmod(config, 0o600)
    return config


def fill_history(root):
    """A root after years of ticks. Written in large repeated blocks: the content need not be unique."""
    state, pending, notes, logs = (root / d for d in ("state", "pending", "notes", "logs"))
    for d in (state, pending, notes, logs):
        d.mkdir(parents=True, exist_ok=True)
    line = "#{n} 2026-01-01T00:00:00+00:00 — Read the inbox / wrote a note about the plan / ran two checks\n"
    block = "".join(line.format(n=i) for i in range(12000)).encode()
    with open(state / "JOURNAL.md", "wb") as f:
        for _ in range(JOURNAL_MB * 1024 * 1024 // len(block) + 1):
            f.write(block)
    entry = {"id": "q{n}", "queued_at": "2026-01-01T00:00:00+00:00", "tick": 1, "type": "email_send",
             "action": {"type": "email_send", "to": "someone@example.com", "subject": "Hello there",
                        "body": "A short body for a queued email."}, "sha256": "0" * 64}
    template = json.dumps(entry, separators=(",", ":")).replace("{", "{{").replace("}", "}}")
    template = template.replace("q{{n}}", "q{n}")
    with open(pending / "pending_actions.jsonl", "w") as f:
        for start in range(1, QUEUE_LINES + 1, 10000):
            end = min(start + 10000, QUEUE_LINES + 1)
            f.write("".join(template.format(n=i) + "\n" for i in range(start, end)))
    (root / "state" / ".mako").mkdir(parents=True, exist_ok=True)
    (root / "state" / ".mako" / "queue_seq").write_text(f"{QUEUE_LINES}\n")
    sys.path.insert(0, str(CODE))
    from mako.logs import METRICS_COLUMNS
    row = ("2026-01-01T00:00:00+00:00,{n},normal,41.2,primary,qwen3.5,9100,2300,3,2,1,true,,false,0,ok,"
           "38.9,9050,610\n")
    with open(logs / "metrics.csv", "w") as f:
        f.write(",".join(METRICS_COLUMNS) + "\n")
        for start in range(1, METRICS_ROWS + 1, 10000):
            f.write("".join(row.format(n=i) for i in range(start, min(start + 10000, METRICS_ROWS + 1))))
    for n in (state / "tick_counter.txt", state / ".mako" / "tick_counter"):
        n.write_text(f"{METRICS_ROWS}\n")
    body = "# A note\n\n" + "Something learned along the way.\n" * 20
    for i in range(NOTES):
        (notes / f"note-{i:05d}.md").write_text(body)


def clean_env(write_bytecode=False):
    """The environment of a tick under systemd: no secret overrides or proxies, and (unless
    `write_bytecode`) no bytecode written at run time: what is cached is what install.sh compiled."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("MAKO_") and k != "PYTHONPYCACHEPREFIX"
           and k.lower() not in ("http_proxy", "https_proxy", "all_proxy", "no_proxy")
           and k != "PYTHONDONTWRITEBYTECODE"}
    if not write_bytecode:
        env["PYTHONDONTWRITEBYTECODE"] = "1"
    return env


def code_copy(dest, compiled):
    """The code as installed: the entry points, mako/, prompts/ and seed/; with its bytecode compiled as
    install.sh does, or with none (a folder Python may not write to, never compiled)."""
    dest.mkdir(parents=True, exist_ok=True)
    for script in CODE.glob("*.py"):
        shutil.copy2(script, dest / script.name)
    for name in ("mako", "prompts", "seed"):
        shutil.copytree(CODE / name, dest / name, dirs_exist_ok=True,
                        ignore=shutil.ignore_patterns("__pycache__"))
    if compiled:
        compileall.compile_dir(dest / "mako", quiet=1)
    return dest


def timed(cmd, env):
    """(wall seconds, CPU seconds) of one run. CPU time is shown too because wall time on a shared machine
    also counts waiting for a core; wall time alone counts waiting on the disk (fsync)."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    proc = subprocess.run(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(map(str, cmd))} exited {proc.returncode}:\n{proc.stderr}")
    return wall, (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


def tick_cmd(config, code):
    return [sys.executable, str(code / "tick.py"), "--config", str(config)]


def snapshot(root):
    out = {}
    for dirpath, _dirs, files in os.walk(root):
        for name in files:
            p = os.path.join(dirpath, name)
            st = os.stat(p)
            out[os.path.relpath(p, root)] = (st.st_ino, st.st_mtime_ns, st.st_size)
    return out


APPENDED = ("state/JOURNAL.md", "logs/metrics.csv")


def bytes_written(before, after):
    """{relative path: bytes} for files a tick created, rewrote or appended to."""
    out = {}
    for rel, (ino, mtime, size) in after.items():
        old = before.get(rel)
        if old == (ino, mtime, size):
            continue
        out[rel] = size - old[2] if rel in APPENDED and old else size
    return out


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=9, help="runs per figure (median is reported)")
    parser.add_argument("--keep", metavar="DIR", help="build the roots in DIR and leave them there")
    args = parser.parse_args(argv)
    tmp_ctx = tempfile.TemporaryDirectory(prefix="tick-bench-") if not args.keep else None
    base = Path(args.keep or tmp_ctx.name)
    env, caching_env = clean_env(), clean_env(write_bytecode=True)
    cached, plain = code_copy(base / "code-compiled", True), code_copy(base / "code-plain", False)
    with FakeOllama(api_key=KEY, content=typical_reply()) as ollama, FakeTelegram(token=TOKEN) as telegram:
        fresh, big = base / "fresh", base / "big"
        configs = {"fresh": write_config(fresh, ollama, telegram), "big": write_config(big, ollama, telegram)}
        t0 = time.perf_counter()
        fill_history(big)
        os.sync()  # or the first fsync of a tick pays for writing back the whole history just built
        print(f"built the history root in {time.perf_counter() - t0:.1f}s "
              f"(journal {os.path.getsize(big / 'state/JOURNAL.md') / 2**20:.0f} MB)", flush=True)
        floor_cmd = [sys.executable, "-c", "import requests, yaml"]
        # Diagnostic only: the same tick with fsync made a no-op, to show what waiting on the disk costs.
        nosync = base / "nosync"
        nosync.mkdir(exist_ok=True)
        (nosync / "sitecustomize.py").write_text("import os\nos.fsync = lambda fd: None\n")
        nosync_env = dict(env, PYTHONPATH=os.pathsep.join(filter(None, [str(nosync), env.get("PYTHONPATH")])))
        for config in configs.values():  # lay out the roots and warm the bytecode caches
            timed(tick_cmd(config, cached), env)
        timed(floor_cmd, env)

        before = snapshot(fresh)
        timed(tick_cmd(configs["fresh"], cached), env)
        written = bytes_written(before, snapshot(fresh))

        times = {"floor": [], "fresh": [], "floor, caching": [], "caching": [], "uncompiled": [], "big": [],
                 "fresh+gated": [], "big+gated": [], "nosync": []}
        cpu = {k: [] for k in times}
        envs = {"nosync": nosync_env, "floor, caching": caching_env, "caching": caching_env}
        for _ in range(args.runs):
            for key, cmd, gated in (("floor", floor_cmd, False),
                                    ("fresh", tick_cmd(configs["fresh"], cached), False),
                                    ("floor, caching", floor_cmd, False),
                                    ("caching", tick_cmd(configs["fresh"], cached), False),
                                    ("uncompiled", tick_cmd(configs["fresh"], plain), False),
                                    ("big", tick_cmd(configs["big"], cached), False),
                                    ("fresh+gated", tick_cmd(configs["fresh"], cached), True),
                                    ("big+gated", tick_cmd(configs["big"], cached), True),
                                    ("nosync", tick_cmd(configs["fresh"], cached), False)):
                ollama.content = typical_reply(gated)
                wall, used = timed(cmd, envs.get(key, env))
                times[key].append(wall)
                cpu[key].append(used)
    med = {k: statistics.median(v) for k, v in times.items()}
    med_cpu = {k: statistics.median(v) for k, v in cpu.items()}

    print(f"\nmedians of {args.runs} runs (s)                    wall     cpu   (wall range)")
    for key, label in (("floor", 'python3 -c "import requests, yaml"'), ("fresh", "tick, fresh root"),
                       ("floor, caching", "  floor, Python may cache bytecode"),
                       ("caching", "  tick, Python may cache bytecode"),
                       ("uncompiled", "tick, fresh root, never compiled (diag.)"),
                       ("big", "tick, history root"), ("fresh+gated", "tick + gated action, fresh root"),
                       ("big+gated", "tick + gated action, history root"),
                       ("nosync", "tick, fresh root, fsync a no-op (diag.)")):
        spread = f"{min(times[key]):.3f}-{max(times[key]):.3f}"
        print(f"  {label:<40} {med[key]:7.3f} {med_cpu[key]:7.3f}   ({spread})")
    rows = [
        ("tick / floor, no cache writes", "floor", "fresh", 1.15),
        ("  Python may cache bytecode", "floor, caching", "caching", 1.15),
        ("  mako/ never compiled", "floor", "uncompiled", None),
        ("history root / fresh root", "fresh", "big", 1.1),
        ("  with a gated action", "fresh+gated", "big+gated", 1.1),
        ("tick without fsync / floor", "floor", "nosync", None),
    ]
    print("\nratio                           wall    cpu  target")
    for label, base_key, key, target in rows:
        value = med[key] / med[base_key]
        verdict = "(diagnostic)" if target is None else f"<= {target}  {'ok' if value <= target else 'MISSED'}"
        print(f"  {label:<28} {value:6.2f} {med_cpu[key] / med_cpu[base_key]:6.2f}  {verdict}")

    named = {"payload": sum(v for k, v in written.items() if k.startswith("logs/ticks/")),
             "metrics row": written.get("logs/metrics.csv", 0), "journal line": written.get("state/JOURNAL.md", 0),
             "LAST_RESULTS.md": written.get("state/LAST_RESULTS.md", 0)}
    others = {k: v for k, v in written.items()
              if not k.startswith("logs/ticks/") and k not in ("logs/metrics.csv", "state/JOURNAL.md",
                                                               "state/LAST_RESULTS.md")}
    print("\nbytes written by one typical tick")
    for label, value in named.items():
        print(f"  {label:<28} {value:8d}")
    print(f"  {'other files (' + str(len(others)) + ')':<28} {sum(others.values()):8d}   "
          + ", ".join(f"{k} {v}" for k, v in sorted(others.items())))
    print(f"  {'total':<28} {sum(written.values()):8d}")
    if tmp_ctx:
        tmp_ctx.cleanup()
    return 0


if __name__ == "__main__":
    sys.exit(main())
