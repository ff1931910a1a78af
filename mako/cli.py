"""What every entry point shares at its edge: argument parsing, config loading, exit codes."""

import argparse
import sys

from .config import load_config
from .errors import ConfigError
from .logs import redact_logs
from .redact import Redactor


class Parser(argparse.ArgumentParser):
    """argparse that exits 2 on bad usage (its default) and adds --config."""

    def __init__(self, description, **kw):
        super().__init__(description=description, **kw)
        self.add_argument("--config", metavar="PATH", default=None,
                          help="config file (default: config.yaml beside the scripts)")


def load_or_exit(path, prog):
    """Load the config; on error print its one line and return None (the caller exits 78)."""
    try:
        cfg = load_config(path)
    except ConfigError as e:
        print(f"{prog}: {e}", file=sys.stderr, flush=True)
        return None
    redact_logs(Redactor(cfg.secrets()))
    for warning in cfg.warnings:
        print(f"{prog}: warning: {warning}", file=sys.stderr, flush=True)
    return cfg
