#!/usr/bin/env python3
"""Benchmark: `status.py` on a root carrying a year of history (target: under 0.3 s per run).

The root is the tick bench's history root (a 200 MB state/JOURNAL.md, a 100,000-line approval queue,
10,000 notes), with a year of 5-minute metrics rows ending now (105,120 rows), a full health history,
two weeks of payload files (4,032) and a spend ledger. It runs `python3 status.py` as an operator would and
prints the median wall time, next to `python3 -c "import yaml"` (the floor any entry point pays).
Usage: python3 bench/status_bench.py [--runs N] [--keep DIR]
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

CODE = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(CODE))
sys.path.insert(0, str(CODE / "bench"))

from tick_bench import clean_env, code_copy, fill_history  # noqa: E402

from mako.logs import METRICS_COLUMNS  # noqa: E402

YEAR_ROWS = 365 * 24 * 12
PAYLOADS = 14 * 24 * 12
TARGET_S = 0.3


def year_of_metrics(path, now, rows=YEAR_ROWS):
    """`rows` ticks 5 minutes apart, the last one a minute ago; one in twenty failed or on the fallback."""
    start = now - 60 - (rows - 1) * 300
    out = [",".join(METRICS_COLUMNS) + "\n"]
    for n in range(1, rows + 1):
        ts = time.strftime("%Y-%m-%dT%H:%M:%S+00:00", time.gmtime(start + (n - 1) * 300))
        slot, outcome = ("fallback", "ok") if n % 20 == 0 else (("", "provider_error") if n % 97 == 0
                                                                else ("primary", "ok"))
        out.append(f"{ts},{n},normal,41.2,{slot},qwen3.5,9100,2300,3,2,1,true,,false,0,{outcome},38.9,9050,610\n")
    Path(path).write_text("".join(out))


def build(root, now):
    fill_history(root)
    year_of_metrics(root / "logs" / "metrics.csv", now)
    private = root / "state" / ".mako"
    start = now - 60 - (YEAR_ROWS - 1) * 300
    with open(private / "health.jsonl", "w") as f:
        for n in range(YEAR_ROWS - 40000, YEAR_ROWS + 1):
            f.write(json.dumps({"tick": n, "ts": start + (n - 1) * 300, "outcome": "ok",
                                "primary": "timeout" if n % 20 == 0 else "ok",
                                "fallback": "ok" if n % 20 == 0 else None}, separators=(",", ":")) + "\n")
    ticks = root / "logs" / "ticks"
    ticks.mkdir(parents=True, exist_ok=True)
    body = json.dumps({"tick_n": 1, "user_message": "x" * 30000, "outcome": "ok"})
    for n in range(YEAR_ROWS - PAYLOADS + 1, YEAR_ROWS + 1):
        (ticks / f"{n:08d}.json").write_text(body)
    month = time.strftime("%Y-%m", time.gmtime(now))
    with open(private / "spend.jsonl", "w") as f:
        for i in range(3000):
            f.write(json.dumps({"ts": "", "month": "2025-01" if i < 2900 else month, "amount_pence": 25,
                                "reason": "domain", "tick": i}) + "\n")
    (private / "schedule.json").write_text(json.dumps({"tick_next": now + 200, "scribe_next": now + 3000,
                                                       "last_digest_date": time.strftime("%Y-%m-%d")}))
    config = root / "config.yaml"
    config.write_text(json.dumps({"paths": {"root": str(root)},
                                  "llm": {"primary": {"type": "ollama", "base_url": "http://127.0.0.1:9",
                                                      "model": "qwen3.5"}}}))
    os.chmod(config, 0o600)
    # A running agent keeps the approvals index current (every tick does); build it as a tick would.
    try:
        from mako.config import load_config
        from mako.decisions import open_summary
    except ImportError:
        pass
    else:
        open_summary(load_config(config))
    return config


def timed(cmd, env):
    start = time.perf_counter()
    proc = subprocess.run(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    wall = time.perf_counter() - start
    if proc.returncode not in (0, 1):
        raise SystemExit(f"{' '.join(cmd)} exited {proc.returncode}:\n{proc.stderr}")
    return wall, proc.stdout


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=9)
    parser.add_argument("--keep", metavar="DIR", help="build the root in DIR and leave it there")
    args = parser.parse_args(argv)
    tmp = tempfile.TemporaryDirectory(prefix="status-bench-") if not args.keep else None
    base = Path(args.keep or tmp.name)
    root = base / "big"
    t0 = time.perf_counter()
    config = build(root, time.time())
    os.sync()
    print(f"built the history root in {time.perf_counter() - t0:.1f}s "
          f"(journal {os.path.getsize(root / 'state/JOURNAL.md') / 2**20:.0f} MB, "
          f"metrics {os.path.getsize(root / 'logs/metrics.csv') / 2**20:.1f} MB)", flush=True)
    env = clean_env()
    code = code_copy(base / "code", compiled=True)
    status_cmd = [sys.executable, str(code / "status.py"), "--config", str(config)]
    floor_cmd = [sys.executable, "-c", "import yaml"]
    _, screen = timed(status_cmd, env)  # warm the bytecode cache
    times = {"floor": [], "status": [], "status --json": []}
    for _ in range(args.runs):
        times["floor"].append(timed(floor_cmd, env)[0])
        times["status"].append(timed(status_cmd, env)[0])
        times["status --json"].append(timed(status_cmd + ["--json"], env)[0])
    print("\n" + screen)
    print(f"medians of {args.runs} runs (s)")
    for key, values in times.items():
        print(f"  {key:<16} {statistics.median(values):.3f}   ({min(values):.3f}-{max(values):.3f})")
    med = statistics.median(times["status"])
    print(f"\nstatus.py on the history root: {med:.3f} s, target < {TARGET_S} s: "
          f"{'ok' if med < TARGET_S else 'MISSED'}")
    if tmp:
        tmp.cleanup()
    return 0


if __name__ == "__main__":
    sys.exit(main())
