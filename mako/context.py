"""Hot context (§8): the user message as ordered `## <label>` blocks, kept under the input-token cap.

`build` is pure: strings in, message and sizes out. `gather` reads the state files for it, each with a
bounded read, so no history file is ever read whole.
"""

import json
import math
import os
from dataclasses import dataclass
from pathlib import Path

from .fileio import open_regular, tail_lines
from .paths import inside
from .text import marker, neutralise

CHARS_PER_TOKEN = 4
INBOX_LABEL = "INBOX — from the operator (the most important input this tick)"
MAX_DRAFTS = 12


def estimate_tokens(chars):
    return math.ceil(chars / CHARS_PER_TOKEN)


@dataclass
class Block:
    key: str        # stable name used in sizes and by the shrink order
    label: str      # heading shown to the model
    content: str
    keep: str = "head"  # which end survives truncation: "head" or "tail"


# Shrunk first to last. MISSION, INBOX, NEXT and STATE go only if nothing else is left (the cap is hard).
SHRINK_ORDER = ["note:", "DRAFTS", "PERSONA", "JOURNAL", "APPROVALS", "CAPABILITIES", "NOTES_INDEX", "LAST_RESULTS",
                "STATE", "NEXT", "INBOX", "MISSION"]


def render_block(block):
    return f"## {block.label}\n\n{block.content}\n"


def _join(blocks):
    return "\n".join(render_block(b) for b in blocks)


def _shrink(block, excess):
    """Shorten block.content by at least `excess` chars, marker included; return the chars removed."""
    content = block.content
    size = len(content)
    removed = min(size, excess)
    while True:
        mark = marker(removed)
        kept = size - removed
        new_size = kept + 1 + len(mark) if kept else len(mark)
        if size - new_size >= excess or removed == size:
            break
        removed = min(size, removed + excess - (size - new_size))
    if size - new_size <= 0:
        return 0  # too short to be worth a marker
    if block.keep == "tail":
        text = content[size - kept:]
        if kept < size and "\n" in text[:-1]:  # keep whole journal lines
            drop = text.index("\n") + 1
            text, removed = text[drop:], removed + drop
        block.content = marker(removed) + ("\n" + text if text else "")
    else:
        text = content[:kept]
        block.content = (text + "\n" if text else "") + marker(removed)
    return removed


def _targets(blocks, prefix):
    if prefix.endswith(":"):
        return [b for b in reversed(blocks) if b.key.startswith(prefix)]  # the last requested note goes first
    return [b for b in blocks if b.key == prefix]


def build(system_prompt, blocks, max_tokens):
    """Render blocks into the user message, shrinking by priority so system+user stays within max_tokens.

    Returns (message, sizes); sizes["over_cap"] is True when anything had to give way.
    """
    blocks = [Block(b.key, b.label, b.content, b.keep) for b in blocks]
    budget = max_tokens * CHARS_PER_TOKEN
    truncated, dropped = {}, []
    total = lambda: len(system_prompt) + len(_join(blocks))  # noqa: E731
    for prefix in SHRINK_ORDER:
        for block in _targets(blocks, prefix):
            over = total() - budget
            if over <= 0:
                break
            removed = _shrink(block, over)
            if removed:
                truncated[block.key] = truncated.get(block.key, 0) + removed
    # Headings and markers are not free: if still over, drop whole blocks, lowest priority first.
    for prefix in SHRINK_ORDER:
        for block in _targets(blocks, prefix):
            if total() <= budget:
                break
            blocks.remove(block)
            dropped.append(block.key)
    message = _join(blocks)
    sizes = {
        "system_prompt": estimate_tokens(len(system_prompt)),
        "blocks": {b.key: estimate_tokens(len(render_block(b))) for b in blocks},
        "total": estimate_tokens(len(system_prompt) + len(message)),
        "max_input_tokens": max_tokens,
        "truncated": truncated,
        "dropped": dropped,
        "over_cap": bool(truncated or dropped),
    }
    return message, sizes


# -- gathering from disk ---------------------------------------------------------------------------------


def head_text(path, max_chars):
    """A file's first `max_chars` chars, with the marker saying how many bytes were left out."""
    try:
        with open_regular(path) as f:
            size = os.fstat(f.fileno()).st_size
            data = f.read(max_chars * 4)  # utf-8 is at most 4 bytes a char
    except OSError:  # missing, a folder, a loop of links: an empty block, never a failed tick
        return ""
    text = data.decode("utf-8", "replace")
    if len(data) < size or len(text) > max_chars:
        kept = text[:max_chars]
        text = kept + "\n" + marker(size - len(kept.encode("utf-8", "replace")), "bytes")
    return text


def journal_tail_text(path, lines=None, max_chars=None):
    """The newest journal lines: the last `lines` lines, or as many as fit in max_chars (compaction)."""
    if lines is not None:
        return "\n".join(tail_lines(path, lines))
    try:
        with open_regular(path) as f:
            f.seek(0, os.SEEK_END)
            size = f.tell()
            start = max(0, size - max_chars * 4)
            f.seek(start)
            data = f.read()
    except OSError:  # missing or not a regular file: no journal to show
        return ""
    if start == 0:
        return data.decode("utf-8", "replace")
    # Start at a whole line; the marker counts every byte left out before it.
    data = data[data.index(b"\n") + 1:] if b"\n" in data else b""
    text = data.decode("utf-8", "replace")[-max_chars:]
    return marker(size - len(text.encode("utf-8", "replace")), "bytes") + "\n" + text


def drafts_list(folder):
    """Up to 12 newest drafts: `file name — title`."""
    try:
        entries = [e for e in os.scandir(folder) if e.is_file() and e.name.endswith(".md")]
    except FileNotFoundError:
        entries = []
    entries.sort(key=lambda e: e.stat().st_mtime, reverse=True)
    lines = []
    for e in entries[:MAX_DRAFTS]:
        title = ""
        head = head_text(e.path, 2000)
        for line in head.splitlines():
            s = line.strip()
            if s.lower().startswith("title:"):
                title = s.split(":", 1)[1].strip().strip('"')
                break
            if s.startswith("# "):
                title = s[2:].strip()
                break
        lines.append(f"- {e.name} — {title}" if title else f"- {e.name}")
    return "\n".join(lines) if lines else "(no drafts)"


def read_requested_notes(paths, max_notes, max_chars):
    """Notes named in state/next_notes.json that exist under notes/; names that don't are reported."""
    loaded, skipped = [], []
    raw = ""
    try:
        raw = (paths.state / "next_notes.json").read_text(encoding="utf-8", errors="replace")
        names = json.loads(raw) if raw.strip() else []
    except FileNotFoundError:
        names = []
    except (ValueError, OSError):
        return [], [f"state/next_notes.json is not valid JSON ({raw[:60]!r})"]
    if not isinstance(names, list):
        return [], ["state/next_notes.json is not a list of names"]
    notes_root = Path(os.path.realpath(paths.notes))
    for name in names:
        if len(loaded) >= max_notes:
            skipped.append(f"{str(name)[:80]}: over the limit of {max_notes} notes")
            continue
        if not isinstance(name, str) or not name.strip():
            skipped.append(f"{str(name)[:80]!r}: not a file name")
            continue
        rel = name.strip()
        try:
            candidate = paths.root / rel if rel.startswith("notes/") else paths.notes / rel
            real = Path(os.path.realpath(candidate))
            if real == notes_root or not inside(real, notes_root):
                skipped.append(f"{rel[:80]}: not under notes/")
            elif not real.is_file():
                skipped.append(f"{rel[:80]}: no such note")
            else:
                shown = "notes/" + str(real.relative_to(notes_root))
                loaded.append((shown, head_text(real, max_chars)))
        except (OSError, ValueError) as e:  # a name the OS rejects (too long, NUL) is skipped, never fatal
            skipped.append(f"{rel[:80]!r}: cannot be read ({e.__class__.__name__})")
    return loaded, skipped


def gather(cfg, inbox_text, compaction=False, seeds=None, approvals_text=""):
    """Read the state the model sees, as Blocks in §8 order, plus notes loaded/skipped.

    `seeds` ({state file: seed file}) stands in for state files a tick would seed first (a dry run, which
    creates nothing). `approvals_text` (decisions since the last tick, open items) becomes the APPROVALS
    block after LAST_RESULTS (§19)."""
    p = cfg.paths
    seeds = seeds or {}

    def state_text(path):
        return head_text(seeds.get(path, path), cap_chars)

    cap_chars = cfg.context.max_input_tokens * CHARS_PER_TOKEN
    n = cfg.context.recent_journal_lines
    if compaction:
        journal = journal_tail_text(p.state / "JOURNAL.md", max_chars=cap_chars)
        journal_label = "JOURNAL (the whole journal, oldest lines first)"
    else:
        journal = journal_tail_text(p.state / "JOURNAL.md", lines=n)
        journal_label = f"JOURNAL (last {n} lines)"
    blocks = [Block("MISSION", "MISSION", state_text(p.state / "MISSION.md"))]
    if inbox_text is not None and inbox_text.strip():
        blocks.append(Block("INBOX", INBOX_LABEL, inbox_text[:cap_chars]))
    # Everything below but CAPABILITIES holds text the model wrote (or output it caused): neutralised, so
    # no line of it can pass for a block heading such as the operator's INBOX.
    blocks += [
        Block("CAPABILITIES", "CAPABILITIES", state_text(p.state / "CAPABILITIES.md")),
        Block("STATE", "STATE", neutralise(state_text(p.state / "STATE.md"))),
        Block("NEXT", "NEXT", neutralise(state_text(p.state / "NEXT.md"))),
        Block("JOURNAL", journal_label, neutralise(journal), keep="tail"),
        Block("NOTES_INDEX", "notes/INDEX.md", neutralise(state_text(p.notes / "INDEX.md"))),
        Block("DRAFTS", "Blog drafts awaiting approval (newest first)",
              neutralise(drafts_list(p.state / "outbox" / "blog" / "drafts"))),
        Block("LAST_RESULTS", "LAST_RESULTS", neutralise(state_text(p.state / "LAST_RESULTS.md"))),
    ]
    if approvals_text:
        blocks.append(Block("APPROVALS", "APPROVALS — what the operator decided, and what still waits",
                            neutralise(approvals_text[:cap_chars])))
    blocks.append(Block("PERSONA", "PERSONA", neutralise(state_text(p.state / "PERSONA.md"))))
    loaded, skipped = read_requested_notes(p, cfg.context.max_requested_notes, cap_chars)
    for name, text in loaded:
        blocks.append(Block(f"note:{name}", neutralise(f"{name} (requested last tick)"), neutralise(text)))
    return blocks, [name for name, _ in loaded], skipped
