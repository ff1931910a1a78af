#!/usr/bin/env python3
"""Benchmark: analyse.py on a year of 5-minute ticks (105,120 metrics rows).

Writes a synthetic metrics.csv (mixed outcomes, providers, compactions, drift flags, quoted failure text)
and a config into a temporary folder, runs `python3 analyse.py` on it three times as an operator would,
and prints the median wall time. Usage: `python3 bench/analyse_year.py [--rows N]`.
"""

import argparse
import random
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

CODE = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(CODE))

from mako.logs import METRICS_COLUMNS  # noqa: E402

YEAR_ROWS = 365 * 24 * 12


def write_year(path, rows=YEAR_ROWS, seed=1):
    """Write `rows` synthetic ticks, 5 minutes apart from 2025-01-01 UTC, to `path`.

    Rows are formatted directly (as mako.logs writes them) because building a year through the csv
    writer one row at a time would dominate the benchmark's own run time.
    """
    rng = random.Random(seed)
    rand, randint, lognorm = rng.random, rng.randint, rng.lognormvariate
    start = datetime(2025, 1, 1, tzinfo=timezone.utc)
    step = timedelta(minutes=5)
    out = [",".join(METRICS_COLUMNS) + "\n"]
    for n in range(1, rows + 1):
        roll = rand()
        outcome = "ok" if roll < 0.95 else ("parse_error" if roll < 0.98 else ("timeout" if roll < 0.99 else "fail"))
        fallback = roll < 0.1 or roll > 0.995
        count = n % 7
        queued = 1 if count and n % 5 == 0 else 0
        failures = "" if outcome == "ok" else f'"{outcome}: provider said ""no"", retried"'
        drift = '"scope creep, again"' if rand() < 0.002 else ""
        prompt = str(randint(4000, 18000)) if roll < 0.9 else ""
        out.append(
            f"{(start + step * (n - 1)).isoformat()},{n},{'compact' if n % 50 == 0 else 'normal'},"
            f"{lognorm(2.5, 0.6):.3f},{'fallback' if fallback else 'primary'},"
            f"{'qwen3.6' if fallback else 'qwen3.5'},{randint(4000, 18000)},{randint(200, 20000)},"
            f"{count},{count - queued},{queued},{'false' if outcome == 'parse_error' else 'true'},{drift},"
            f"{'true' if n % 97 == 0 else 'false'},{failures},{outcome},{rand() * 30:.3f},{prompt},"
            f"{randint(100, 5000)}\n")
    Path(path).write_text("".join(out), encoding="utf-8")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=YEAR_ROWS)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        metrics = root / "metrics.csv"
        write_year(metrics, args.rows)
        config = root / "config.yaml"
        config.write_text(f"llm: {{}}\npaths:\n  root: {root}\n", encoding="utf-8")
        cmd = [sys.executable, str(CODE / "analyse.py"), "--config", str(config), "--metrics", str(metrics)]
        times = []
        for _ in range(args.runs):
            t0 = time.perf_counter()
            done = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
            times.append(time.perf_counter() - t0)
            if done.returncode != 0:
                print(done.stderr, file=sys.stderr)
                return 1
        size = metrics.stat().st_size / 1e6
        print(f"analyse.py on {args.rows:,} rows ({size:.1f} MB): median {statistics.median(times):.3f} s "
              f"over {args.runs} runs ({', '.join(f'{t:.3f}' for t in times)})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
