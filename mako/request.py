"""What a tick would send: its mode, its system prompt and its hot context (§5 steps 3-4), assembled the
same way for a real tick and for `tick.py --dry-run`, which prints it and changes nothing (§3)."""

import errno
import os
import sys

from . import counter, decisions, inbox as inbox_mod
from .context import build, gather
from .errors import EXIT_OK
from .fileio import open_regular
from .paths import seed_pairs
from .redact import Redactor

COMPACT_FAIL_LIMIT = 3


def read_prompt(cfg, name):
    with open_regular(cfg.paths.prompts / name) as f:  # never blocks on a FIFO planted there
        return f.read().decode("utf-8")


def choose_mode(cfg, requested):
    """(mode, note): `requested` wins; else compact when the flag exists, unless compaction already failed
    COMPACT_FAIL_LIMIT ticks in a row — then normal, with a note saying so."""
    if requested:
        return requested, None
    if not (cfg.paths.state / "compact_pending.flag").exists():
        return "normal", None
    fails = read_int(cfg.paths.private / "compact_failures")
    if fails >= COMPACT_FAIL_LIMIT:
        return "normal", f"compaction failed {fails} ticks in a row; giving up on it and running normally"
    return "compact", None


def read_int(path):
    return counter.read_number(path) or 0


def assemble(cfg, mode, inbox_text, seeds=None, approvals_text=""):
    """(system_prompt, user_message, sizes, notes_skipped) for this state: the same for a tick and a dry run."""
    system_prompt = read_prompt(cfg, "compact.md" if mode == "compact" else "system.md")
    blocks, loaded, skipped = gather(cfg, inbox_text, compaction=mode == "compact", seeds=seeds,
                                     approvals_text=approvals_text)
    message, sizes = build(system_prompt, blocks, cfg.context.max_input_tokens)
    sizes["notes_loaded"] = loaded
    sizes["notes_skipped"] = skipped
    return system_prompt, message, sizes, skipped


def dry_run(cfg, mode=None, out=None):
    """Print the exact request a tick would send now; create or change nothing (§3).

    What a tick would create first is read as it would be: a missing state file as its seed, a missing
    root as an empty one; and the output says so."""
    out = out or sys.stdout
    p = cfg.paths
    notes = []
    if p.root.exists() and not p.root.is_dir():
        raise NotADirectoryError(errno.ENOTDIR, os.strerror(errno.ENOTDIR), str(p.root))
    if not p.root.is_dir():
        notes.append(f"{p.root} does not exist yet; read as a fresh root (a tick creates it)")
    seeds = {dst: src for src, dst in seed_pairs(p) if not dst.exists() and src.is_file()}
    if seeds and not notes:
        notes += [f"{dst.relative_to(p.root) if p.root in dst.parents else dst} is missing; shown from "
                  f"seed/ (a tick seeds it)" for dst in seeds]
    mode, _ = choose_mode(cfg, mode)
    pending = inbox_mod.peek(p)
    approvals_text, _ = decisions.context_block(cfg, write=False)
    system_prompt, message, sizes, _ = assemble(cfg, mode, pending.text if pending.present else None, seeds,
                                                approvals_text)
    redactor = Redactor(cfg.secrets())
    for note in notes:
        print(f"=== note: {note}", file=out)
    print(f"=== mode: {mode}", file=out)
    print("=== system prompt", file=out)
    print(redactor.text(system_prompt), file=out)
    print("=== user message", file=out)
    print(redactor.text(message), file=out)
    print("=== token estimates (chars / 4)", file=out)
    print(f"system_prompt: {sizes['system_prompt']}", file=out)
    for key, tokens in sizes["blocks"].items():
        print(f"{key}: {tokens}", file=out)
    print(f"total: {sizes['total']} of {sizes['max_input_tokens']}", file=out)
    if sizes["over_cap"]:
        print(f"over the cap: truncated {sizes['truncated']} dropped {sizes['dropped']}", file=out)
    out.flush()
    return EXIT_OK
