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
import traceback
from datetime import datetime

from . import counter
from .context import Block, build, drafts_list
from .errors import AllProvidersFailed, DeadlineExceeded, EXIT_FAIL, EXIT_OK, ResponseError
from .fileio import ensure_dir, fsync_dir, read_head, tail_lines
from .llm import call_providers
from .logs import iso, write_error_log, write_payload
from .paths import ensure_layout
from .redact import Redactor
from .response import parse_scribe
from .telegram import TelegramClient
from .text import neutralise

log = logging.getLogger("scribe")

RECENT_NOTES = 3
NOTE_MAX_BYTES = 4096
STATE_MAX_BYTES = 16384
MAX_NAME_TRIES = 1000
SUMMARY_MAX_CHARS = 1000
# Leaves the run time to record itself before the supervisor's scribe timeout kills it.
DEADLINE_MARGIN_S = 10
DRAFT_FILE_MODE = 0o644


def drafts_dir(cfg):
    return cfg.paths.state / "outbox" / "blog" / "drafts"


def _head(path, max_bytes):
    """A file's first max_bytes as text, with a visible marker when it was longer; "" when missing."""
    try:
        data, cut = read_head(path, max_bytes)
    except (FileNotFoundError, IsADirectoryError, NotADirectoryError, PermissionError):
        return ""
    text = data.decode("utf-8", "replace")
    return text + "\n…[truncated]" if cut else text


def recent_notes(notes_dir, limit=RECENT_NOTES, max_bytes=NOTE_MAX_BYTES):
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
    return [(rel, _head(path, max_bytes)) for _, rel, path in found[:limit]]


def gather(cfg):
    """The scribe's context, as Blocks: mission, persona, journal tail, notes, and the drafts so far."""
    p = cfg.paths
    n = cfg.scribe.recent_journal_lines
    # All but MISSION is model-written: neutralised, so no line can pass for a block heading.
    blocks = [
        Block("MISSION", "MISSION", _head(p.state / "MISSION.md", STATE_MAX_BYTES)),
        Block("PERSONA", "PERSONA", neutralise(_head(p.state / "PERSONA.md", STATE_MAX_BYTES))),
        Block("JOURNAL", f"JOURNAL (last {n} lines)",
              neutralise("\n".join(tail_lines(p.state / "JOURNAL.md", n))) or "(no journal yet)", keep="tail"),
        Block("NOTES_INDEX", "notes/INDEX.md",
              neutralise(_head(p.notes / "INDEX.md", STATE_MAX_BYTES)) or "(no index yet)"),
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
    for i in range(1, MAX_NAME_TRIES + 1):
        path = folder / (f"{date}-{slug}.md" if i == 1 else f"{date}-{slug}-{i}.md")
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, DRAFT_FILE_MODE)
        except FileExistsError:
            continue
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view):]
            os.fsync(fd)
        except BaseException:
            os.close(fd)
            os.unlink(path)
            raise
        os.close(fd)
        fsync_dir(folder)
        return path
    raise FileExistsError(f"{MAX_NAME_TRIES} drafts named {date}-{slug} already exist")


def _cut(text, limit):
    return text if len(text) <= limit else text[:limit] + f"…[truncated {len(text) - limit} chars]"


class ScribeRun:
    """One scribe run: numbered, bounded by its own deadline, and always recorded."""

    def __init__(self, cfg, clock=time.time):
        self.cfg = cfg
        self.clock = clock
        self.redactor = Redactor(cfg.secrets())
        self.started = clock()
        self.deadline = self.started + cfg.supervisor.scribe_timeout_s - DEADLINE_MARGIN_S
        self.telegram = TelegramClient(cfg.telegram, self.redactor, deadline=self.deadline)
        self.n = None
        self.errors = []
        self.payload = {"tick_n": None, "mode": "scribe", "started_at": iso(), "system_prompt": "",
                        "user_message": "", "sizes": {}, "inbox_present": False, "llm_attempts": [],
                        "raw_content": None, "parsed_response": None, "files_written": [], "actions": [],
                        "telegram_posts": self.telegram.records, "errors": self.errors}

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
            self.telegram.send(f"📝 scribe #{self.n} skip: {_cut(reason, SUMMARY_MAX_CHARS)}", "log")
            log.info("scribe %d skipped: %s", self.n, _cut(reason, 200))
            return
        draft = {k: self.redactor.text(v) for k, v in reply["draft"].items()}
        date = datetime.now().astimezone().strftime("%Y-%m-%d")
        folder = drafts_dir(cfg)
        path = write_draft(folder, date, draft["slug"], draft_text(draft["title"], date, draft["body_md"]))
        rel = os.path.relpath(path, cfg.paths.root)
        payload["files_written"].append({"path": rel, "mode": "create", "bytes": path.stat().st_size,
                                         "ok": True})
        payload["draft_file"] = rel
        lines = [f"📝 Draft for review: {_cut(' '.join(draft['title'].split()), 300)}", rel]
        if draft["summary_for_chris"].strip():
            lines.append(_cut(draft["summary_for_chris"].strip(), SUMMARY_MAX_CHARS))
        thread = cfg.telegram.first_thread(cfg.scribe.approval_thread, "requests", "log")
        self.telegram.send("\n".join(lines), thread or "log")
        log.info("scribe %d drafted %s", self.n, rel)

    def fail(self, error):
        """Record a failed run: error log and a short FAIL line in the log thread. Returns the outcome word."""
        if isinstance(error, ResponseError):
            outcome = "parse_error"
        elif isinstance(error, (DeadlineExceeded, TimeoutError)):
            outcome = "timeout"
        elif isinstance(error, AllProvidersFailed):
            kinds = {a.get("kind") for a in getattr(error, "attempts", []) if isinstance(a, dict)}
            outcome = "timeout" if kinds == {"timeout"} else "provider_error"
        else:
            outcome = "fail"
        message = self.redactor.text(f"{type(error).__name__}: {error}")
        self.errors.append(message)
        try:
            trace = "".join(traceback.format_exception(type(error), error, error.__traceback__))
            write_error_log(self.cfg.paths.logs / "scribe", self.n,
                            f"scribe run {self.n} failed at {iso()}\n{trace}", self.redactor)
        except OSError as e:
            self.errors.append(self.redactor.text(f"error log not written: {e}"))
        self.telegram.send(f"🦫 scribe #{self.n} FAIL · {_cut(message, 500)}", "log")
        log.error("scribe %d failed: %s", self.n, message)
        return outcome

    def finish(self, outcome):
        self.payload.update(ended_at=iso(), wall_s=round(self.clock() - self.started, 3), outcome=outcome)
        if self.cfg.logging.full_payload:
            write_payload(self.cfg.paths.logs / "scribe", self.n, self.payload, self.redactor)


def run(cfg, clock=time.time):
    """One scribe run; returns the exit code."""
    return ScribeRun(cfg, clock).run()
