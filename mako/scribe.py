"""The scribe run (§18): read what the worker has done, then draft one blog post or say why not.

The scribe shares the worker's providers and persona but none of its machinery: it runs no actions and
writes no worker state. The only files it creates are the draft (never overwriting an existing one), its
own run counter in `state/.mako/`, and its records under `logs/scribe/`.
"""

import json
import logging
import os
import stat
import time
from datetime import datetime

from . import counter
from .context import Block, build, drafts_list, head_text
from .errors import AllProvidersFailed, DeadlineExceeded, EXIT_FAIL, EXIT_OK
from .fileio import ensure_dir, fsync_dir, numbered_names, tail_lines, write_all
from .llm import call_providers
from .paths import ensure_layout
from .response import parse_scribe
from .runrecord import RunRecord, outcome_of
from .text import neutralise, truncate

log = logging.getLogger(__name__)

RECENT_NOTES = 3
NOTE_MAX_CHARS = 4096
STATE_MAX_CHARS = 16384
MAX_NAME_TRIES = 1000
SUMMARY_MAX_CHARS = 1000
DRAFT_FILE_MODE = 0o644


def drafts_dir(cfg):
    return cfg.paths.state / "outbox" / "blog" / "drafts"


def recent_notes(notes_dir, limit=RECENT_NOTES, max_chars=NOTE_MAX_CHARS):
    """The `limit` most recently changed notes as (name relative to notes/, capped text), newest first.

    Symlinks are skipped: a link planted under notes/ must not carry another file (config.yaml, a key) to
    a provider.
    """
    found = []
    for folder, dirs, files in os.walk(notes_dir):
        dirs[:] = [d for d in dirs if not d.startswith(".")]
        for name in files:
            path = os.path.join(folder, name)
            rel = os.path.relpath(path, notes_dir)
            if name.startswith(".") or rel == "INDEX.md":
                continue
            try:
                st = os.lstat(path)
            except OSError:
                continue
            if stat.S_ISREG(st.st_mode):
                found.append((st.st_mtime, rel, path))
    found.sort(key=lambda item: (item[0], item[1]), reverse=True)
    return [(rel, head_text(path, max_chars)) for _, rel, path in found[:limit]]


def gather(cfg):
    """The scribe's context, as Blocks: mission, persona, journal tail, notes, and the drafts so far."""
    p = cfg.paths
    n = cfg.scribe.recent_journal_lines
    # All but MISSION is model-written: neutralised, so no line can pass for a block heading.
    blocks = [
        Block("MISSION", "MISSION", head_text(p.state / "MISSION.md", STATE_MAX_CHARS)),
        Block("PERSONA", "PERSONA", neutralise(head_text(p.state / "PERSONA.md", STATE_MAX_CHARS))),
        Block("JOURNAL", f"JOURNAL (last {n} lines)",
              neutralise("\n".join(tail_lines(p.state / "JOURNAL.md", n))) or "(no journal yet)", keep="tail"),
        Block("NOTES_INDEX", "notes/INDEX.md",
              neutralise(head_text(p.notes / "INDEX.md", STATE_MAX_CHARS)) or "(no index yet)"),
    ]
    for name, text in recent_notes(p.notes):
        blocks.append(Block(f"note:notes/{name}", neutralise(f"notes/{name} (recently changed)"), neutralise(text)))
    blocks.append(Block("DRAFTS", "Drafts already written (newest first) — do not repeat their topics",
                        neutralise(drafts_list(drafts_dir(cfg)))))
    return blocks


def draft_text(title, date, body):
    """Front matter then body. The title is a JSON string, which YAML reads as a double-quoted scalar."""
    one_line = " ".join(title.split())
    return (f"---\ntitle: {json.dumps(one_line, ensure_ascii=False)}\ndate: {date}\nstatus: draft\n---\n\n"
            f"{body.rstrip()}\n")


def write_draft(folder, date, slug, text):
    """Create <date>-<slug>.md, or -2, -3... if taken; O_EXCL so no draft is ever overwritten. Returns path."""
    ensure_dir(folder)
    data = text.encode("utf-8", "replace")
    for path in numbered_names(folder, f"{date}-{slug}", limit=MAX_NAME_TRIES):
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, DRAFT_FILE_MODE)
        except FileExistsError:
            continue
        try:
            write_all(fd, data)
            os.fsync(fd)
        except BaseException:
            os.close(fd)
            os.unlink(path)
            raise
        os.close(fd)
        fsync_dir(folder)
        return path
    raise FileExistsError(f"{MAX_NAME_TRIES} drafts named {date}-{slug} already exist")


class ScribeRun(RunRecord):
    """One scribe run: numbered, bounded by its own deadline, and always recorded."""

    def __init__(self, cfg, clock=time.time):
        super().__init__(cfg, "scribe", cfg.supervisor.scribe_timeout_s, clock)

    def run(self):
        """Draft or skip; returns EXIT_OK or EXIT_FAIL, having written the payload either way."""
        cfg = self.cfg
        ensure_layout(cfg)
        self.n = counter.next_scribe(cfg.paths)
        self.payload["tick_n"] = self.n
        try:
            self.draft_or_skip()
            outcome = "ok"
        except Exception as e:  # noqa: BLE001 — every failure is recorded, then reported by the exit code
            outcome = self.fail(e)
        self.finish(outcome)
        return EXIT_OK if outcome == "ok" else EXIT_FAIL

    def draft_or_skip(self):
        cfg, payload = self.cfg, self.payload
        system_prompt = (cfg.paths.prompts / "scribe.md").read_text(encoding="utf-8")
        message, sizes = build(system_prompt, gather(cfg), cfg.context.max_input_tokens)
        message = self.redactor.text(message)
        payload.update(system_prompt=system_prompt, user_message=message, sizes=sizes)
        if self.clock() >= self.deadline:
            raise DeadlineExceeded("no time left for the provider call")
        try:
            result = call_providers(cfg, system_prompt, message, self.deadline, self.redactor)
        except AllProvidersFailed as e:
            payload["llm_attempts"] = getattr(e, "attempts", [])
            raise
        payload.update(llm_attempts=result.attempts, raw_content=result.content, provider=result.slot,
                       model=result.model, prompt_tokens=result.prompt_tokens,
                       completion_tokens=result.completion_tokens, llm_wall_s=result.wall_s)
        reply = parse_scribe(result.content)
        payload["parsed_response"] = reply
        payload["kind"] = reply["kind"]
        if reply["kind"] == "skip":
            reason = self.redactor.text(reply["skip"]["reason"])
            self.telegram.send(f"📝 scribe #{self.n} skip: {truncate(reason, SUMMARY_MAX_CHARS)}", "log")
            log.info("scribe %d skipped: %s", self.n, truncate(reason, 200))
            return
        draft = {k: self.redactor.text(v) for k, v in reply["draft"].items()}
        date = datetime.now().astimezone().strftime("%Y-%m-%d")
        folder = drafts_dir(cfg)
        path = write_draft(folder, date, draft["slug"], draft_text(draft["title"], date, draft["body_md"]))
        rel = os.path.relpath(path, cfg.paths.root)
        payload["files_written"].append({"path": rel, "mode": "create", "bytes": path.stat().st_size,
                                         "ok": True})
        payload["draft_file"] = rel
        lines = [f"📝 Draft for review: {truncate(' '.join(draft['title'].split()), 300)}", rel]
        if draft["summary_for_chris"].strip():
            lines.append(truncate(draft["summary_for_chris"].strip(), SUMMARY_MAX_CHARS))
        thread = cfg.telegram.first_thread(cfg.scribe.approval_thread, "requests", "log")
        self.telegram.send("\n".join(lines), thread or "log")
        log.info("scribe %d drafted %s", self.n, rel)

    def fail(self, error):
        """Record a failed run: error log and a short FAIL line in the log thread. Returns the outcome word."""
        message = self.redactor.text(f"{type(error).__name__}: {error}")
        self.errors.append(message)
        self.log_failure(self.cfg.paths.logs / "scribe", f"scribe run {self.n}", error)
        self.telegram.send(f"🦫 scribe #{self.n} FAIL · {truncate(message, 500)}", "log")
        log.error("scribe %d failed: %s", self.n, message)
        return outcome_of(error)

    def finish(self, outcome):
        self.save_payload(self.cfg.paths.logs / "scribe", outcome)


def run(cfg, clock=time.time):
    """One scribe run; returns the exit code."""
    return ScribeRun(cfg, clock).run()
