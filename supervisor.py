#!/usr/bin/env python3
"""The systemd entry point: runs the worker tick, the scribe and the daily digest, one at a time, forever.

Started by `mako-zero.service` (Type=simple) and stopped with SIGTERM. It loads the config, creates any
missing layout under the root, prints its timetable, then loops: the first tick at start-up, each next
tick `supervisor.tick_interval_s` after the previous one ended, the scribe every
`supervisor.scribe_interval_s` (when `scribe.enabled`), the digest once a day at
`supervisor.digest_hour_local` (when `digest.enabled`), and once a day it deletes payload files older than
`logging.keep_days`. Each child is `python3 <script> --config <config>` in its own process group, killed
with its group at its timeout; it gets MAKO_CONFIG_WARNED=1, so the config warnings printed here at start-up
are not repeated by every run. The timetable is kept in `state/.mako/schedule.json`; the rules are in
`mako/schedule.py`, child handling in `mako/children.py`.

On SIGTERM/SIGINT it forwards SIGTERM to the running child's group, waits `supervisor.stop_grace_s`, kills
what is left, prints a last line and exits 0. Everything it says goes to standard output, line by line.

The hidden option `--scripts-dir DIR` runs the role scripts from DIR instead of the folder holding this
file (tests and the idle-memory bench use it).
"""

import argparse
import os
import sys
import time
from pathlib import Path

from mako.children import ChildRunner, StopSignal
from mako.cli import WARNED_ENV, Parser, load_or_report
from mako.errors import EXIT_CONFIG, EXIT_FAIL, EXIT_OK
from mako.paths import ensure_layout
from mako.schedule import Scheduler, run_forever, timezone_name

HERE = Path(__file__).resolve().parent


def say(text):
    print(f"[supervisor] {text}", flush=True)


def main(argv=None):
    parser = Parser("Run the tick, the scribe and the digest on their schedule until SIGTERM.")
    parser.add_argument("--scripts-dir", default=str(HERE), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    try:
        sys.stdout.reconfigure(line_buffering=True)
    except (AttributeError, ValueError):
        pass

    cfg = load_or_report(args.config, "supervisor")
    if cfg is None:
        return EXIT_CONFIG
    stop = StopSignal()
    stop.install()
    try:
        ensure_layout(cfg)
    except OSError as e:
        say(f"cannot create the layout under {cfg.paths.root}: {e}")
        return EXIT_FAIL

    sup = cfg.supervisor
    say("starting")
    say(f"  tick every {sup.tick_interval_s:g}s")
    say(f"  scribe every {sup.scribe_interval_s:g}s ({'on' if cfg.scribe.enabled else 'off'})")
    say(f"  digest at {sup.digest_hour_local:02d}:00 local" + ("" if cfg.digest.enabled else " (off)"))
    say(f"  config {cfg.path}")
    say(f"  timezone {timezone_name()}")

    # Its children load the same config: its warnings were printed above, once.
    runner = ChildRunner(stop, stop_grace_s=sup.stop_grace_s, say=say, env={**os.environ, WARNED_ENV: "1"})
    scheduler = Scheduler(cfg, runner, scripts_dir=args.scripts_dir, python=sys.executable,
                          clock=time.time, localtime=time.localtime, say=say)
    run_forever(scheduler, stop, say=say)
    say(f"stopping ({stop.name})")
    return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
