"""What every entry point shares at its edge: argument parsing, config loading, exit codes."""

import argparse
import os
import sys

from .config import load_config
from .errors import EXIT_OK, ConfigError
from .logs import redact_logs
from .redact import Redactor


class Parser(argparse.ArgumentParser):
    """argparse that exits 2 on bad usage (its default) and adds --config."""

    def __init__(self, description, **kw):
        super().__init__(description=description, **kw)
        self.add_argument("--config", metavar="PATH", default=None,
                          help="config file (default: config.yaml beside the scripts)")


# Set by the supervisor for the runs it starts: it printed the config's warnings once at start-up, and a
# warning repeated on every tick only buries the journal (§21).
WARNED_ENV = "MAKO_CONFIG_WARNED"


def load_or_report(path, prog):
    """Load the config; on error print its one line and return None (the caller exits 78)."""
    try:
        cfg = load_config(path)
    except ConfigError as e:
        print(f"{prog}: {e}", file=sys.stderr, flush=True)
        return None
    redact_logs(Redactor(cfg.secrets()))
    if os.environ.get(WARNED_ENV) != "1":
        for warning in cfg.warnings:
            print(f"{prog}: warning: {warning}", file=sys.stderr, flush=True)
    return cfg


def stdout_closed():
    """The reader of standard output went away (`| head`): stop quietly, as command-line tools do.

    Python flushes stdout once more at exit; pointing it at /dev/null keeps that flush from failing too.
    """
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())
    os.close(devnull)
    return EXIT_OK
