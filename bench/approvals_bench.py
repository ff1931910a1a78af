#!/usr/bin/env python3
"""Cost of the approvals on a root with a long history: 100,000 queued actions and 50,000 decisions.

Against an instant local fake Ollama and a fake Telegram, it prints the medians of several runs of:

1. `tick.py` on that root divided by `tick.py` on a fresh root (target <= 1.1: the open items come from the
   index under state/.mako/, never from reading either file whole), for a typical reply and for one that
   queues a gated action (the dedupe lookup);
2. `approve.py list` on that root (all 50,000 open items printed; target < 0.5 s), and `approve.py show`;
3. once, what building the index from scratch costs (the first run after an upgrade, or after the index
   was deleted).

Runs are interleaved so a busy machine slows all of them alike.
Usage: python3 bench/approvals_bench.py [--runs N] [--keep DIR]
"""

import argparse
import hashlib
import json
import statistics
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from tick_bench import (KEY, TOKEN, clean_env, code_copy, tick_cmd, timed, typical_reply,  # noqa: E402
                        write_config)

from fakes import FakeOllama, FakeTelegram  # noqa: E402

QUEUE_LINES = 100_000
DECISIONS = 50_000


def sha(action):
    canon = json.dumps(action, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(canon.encode()).hexdigest()


def fill_approvals(root):
    """Every other item decided (rejected, done, or approved with a result); the rest open."""
    pending = root / "pending"
    pending.mkdir(parents=True, exist_ok=True)
    queue, decided = [], []
    for n in range(1, QUEUE_LINES + 1):
        action = {"type": "email_send", "to": f"reader{n}@example.com", "subject": f"Post {n} is live",
                  "body": "A short body for a queued email."}
        digest = sha(action)
        queue.append(json.dumps({"id": f"q{n}", "queued_at": "2026-01-01T00:00:00+00:00", "tick": n // 3 + 1,
                                 "type": "email_send", "action": action, "sha256": digest},
                                separators=(",", ":")))
        if n % 2 == 0:
            kind = ("rejected", "done", "approved")[n % 3]
            result = {"ok": True, "status": "ok", "summary": f"emailed reader{n}@example.com", "output": ""} \
                if kind == "approved" else None
            decided.append(json.dumps({"id": f"q{n}", "sha256": digest, "decision": kind, "by": "cli",
                                       "at": "2026-01-02T00:00:00+00:00", "note": "bench", "result": result},
                                      separators=(",", ":")))
    (pending / "pending_actions.jsonl").write_text("\n".join(queue) + "\n")
    (pending / "decisions.jsonl").write_text("\n".join(decided) + "\n")
    private = root / "state" / ".mako"
    private.mkdir(parents=True, exist_ok=True)
    (private / "queue_seq").write_text(f"{QUEUE_LINES}\n")
    return len(decided)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=7, help="runs per figure (median is reported)")
    parser.add_argument("--keep", metavar="DIR", help="build the roots in DIR and leave them there")
    args = parser.parse_args(argv)
    tmp_ctx = tempfile.TemporaryDirectory(prefix="approvals-bench-") if not args.keep else None
    base = Path(args.keep or tmp_ctx.name)
    env = clean_env()
    code = code_copy(base / "code", compiled=True)
    approve = [sys.executable, str(code / "approve.py"), "--config"]
    with FakeOllama(api_key=KEY, content=typical_reply()) as ollama, FakeTelegram(token=TOKEN) as telegram:
        fresh, big = base / "fresh", base / "big"
        configs = {"fresh": write_config(fresh, ollama, telegram), "big": write_config(big, ollama, telegram)}
        decided = fill_approvals(big)
        print(f"history root: {QUEUE_LINES:,} queued, {decided:,} decisions "
              f"({(big / 'pending/pending_actions.jsonl').stat().st_size / 2**20:.0f} MB + "
              f"{(big / 'pending/decisions.jsonl').stat().st_size / 2**20:.0f} MB)", flush=True)
        timed(tick_cmd(configs["fresh"], code), env)  # lay out the fresh root, warm the bytecode cache
        build, _ = timed(approve + [str(configs["big"]), "list"], env)
        print(f"index built from scratch (first approve.py list): {build:.2f} s")

        cases = (("fresh", tick_cmd(configs["fresh"], code), False),
                 ("big", tick_cmd(configs["big"], code), False),
                 ("fresh+gated", tick_cmd(configs["fresh"], code), True),
                 ("big+gated", tick_cmd(configs["big"], code), True),
                 ("list", approve + [str(configs["big"]), "list"], False),
                 ("show", approve + [str(configs["big"]), "show", "q99999"], False))
        times = {key: [] for key, _, _ in cases}
        cpu = {key: [] for key, _, _ in cases}
        for _ in range(args.runs):
            for key, cmd, gated in cases:
                ollama.content = typical_reply(gated)
                wall, used = timed(cmd, env)
                times[key].append(wall)
                cpu[key].append(used)
    med = {k: statistics.median(v) for k, v in times.items()}
    med_cpu = {k: statistics.median(v) for k, v in cpu.items()}
    print(f"\nmedians of {args.runs} runs (s)                      wall    cpu   (wall range)")
    for key, label in (("fresh", "tick, fresh root"), ("big", "tick, approvals history root"),
                       ("fresh+gated", "tick + gated action, fresh root"),
                       ("big+gated", "tick + gated action, history root"),
                       ("list", "approve.py list (50,000 open lines)"), ("show", "approve.py show q99999")):
        print(f"  {label:<42} {med[key]:6.3f} {med_cpu[key]:6.3f}   "
              f"({min(times[key]):.3f}-{max(times[key]):.3f})")
    # CPU time is shown beside wall time: on a shared machine wall time also counts waiting for a core.
    print("\nfigure                                wall    cpu  target")
    for label, a, b, target in (("history tick / fresh tick", "big", "fresh", 1.1),
                                ("  with a gated action", "big+gated", "fresh+gated", 1.1)):
        value = med[a] / med[b]
        print(f"  {label:<34} {value:6.2f} {med_cpu[a] / med_cpu[b]:6.2f}  <= {target}  "
              f"{'ok' if value <= target else 'MISSED'}")
    print(f"  {'approve.py list (s)':<34} {med['list']:6.2f} {med_cpu['list']:6.2f}  <= 0.5  "
          f"{'ok' if med['list'] <= 0.5 else 'MISSED'}")
    if tmp_ctx:
        tmp_ctx.cleanup()
    return 0


if __name__ == "__main__":
    sys.exit(main())
