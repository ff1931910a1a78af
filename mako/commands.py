"""The chat's commands (§20): what an allowed person's message asks for, and the answer it gets.

A command is the first word, in any case, with or without a leading `/` and an `@<botname>` suffix:
`approve|yes qN [note]`, `reject|no qN [reason]`, `done qN [note]`, `pause [reason]`, `resume`, `status`,
`help`. `yes`, `no` and `done` are everyday answers too ("no, keep the old title"), so without a slash they
are commands only when an id (`q…`) follows; otherwise the message is steering for the INBOX. Approvals go
through the same decision code as `approve.py` (mako.decisions, loaded only when needed), bound to the hash
the post showed when they come from a button.
"""

import re
import time
from dataclasses import dataclass

from .pause import pause, paused_reason, resume
from .redact import Redactor
from .text import short, visible

ALIASES = {"approve": "approve", "yes": "approve", "reject": "reject", "no": "reject", "done": "done",
           "pause": "pause", "resume": "resume", "status": "status", "help": "help"}
NEEDS_ID = ("approve", "reject", "done")
SOFT_WORDS = ("yes", "no", "done")  # commands only with an id or a slash
DECISION = {"approve": "approved", "reject": "rejected", "done": "done"}
ID_RE = re.compile(r"^q0*(\d{1,9})$", re.IGNORECASE)
ID_LIKE_RE = re.compile(r"^q(\d\S*)?$", re.IGNORECASE)
CALLBACK_RE = re.compile(r"^([ar]):q(\d{1,9}):([0-9a-f]{8})$")
WORD_MAX = 40

HELP = """Commands (the first word; a leading / is fine):
approve qN [note] (or: yes qN) - run a queued action now
reject qN [reason] (or: no qN) - drop it
done qN [note] - mark it done by hand
pause [reason] - no ticks or scribe runs until resume
resume - go on
status - the status.py screen
help - this list
Anything else goes to the INBOX for the next tick."""


@dataclass
class Command:
    name: str             # approve|reject|done|pause|resume|status|help, or "other_bot"
    qid: str = None
    note: str = ""
    error: str = None     # a bad id: the one line to answer, nothing decided


def _word(text):
    return visible(short(text, WORD_MAX))


def parse(text, bot_username=None):
    """The Command a message holds, or None when it is steering text."""
    parts = text.strip().split(None, 1)
    if not parts:
        return None
    first, rest = parts[0], (parts[1] if len(parts) > 1 else "")
    slash = first.startswith("/")
    word = first[1:] if slash else first
    if "@" in word:
        word, _, to = word.partition("@")
        if bot_username and to.lower() != bot_username.lower():
            return Command("other_bot")  # `/status@another_bot` is not for us, and not steering either
    name = ALIASES.get(word.lower())
    if name is None:
        return None
    args = rest.split(None, 1)
    if word.lower() in SOFT_WORDS and not slash and not (args and ID_LIKE_RE.match(args[0])):
        return None
    if name not in NEEDS_ID:
        return Command(name, note=rest.strip())
    if not args:
        return Command(name, error=f"{word.lower()} needs an id: {word.lower()} qN [note] (see `status`).")
    m = ID_RE.match(args[0])
    if not m:
        return Command(name, error=f"\"{_word(args[0])}\" is not an approval id; they look like q12.")
    note = args[1].strip() if len(args) > 1 else ""
    if note and ID_LIKE_RE.match(note.split()[0]):
        return Command(name, error=f"One id at a time: {word.lower()} q{int(m.group(1))} [note]. Nothing decided.")
    return Command(name, qid=f"q{int(m.group(1))}", note=note)


def parse_button(data):
    """(decision, qid, sha8) from a button's callback_data, or None for anything else."""
    m = CALLBACK_RE.fullmatch(data) if isinstance(data, str) else None
    if not m:
        return None
    return ("approved" if m.group(1) == "a" else "rejected"), f"q{int(m.group(2))}", m.group(3)


class Commands:
    """Runs commands for listen.py; each method returns the text to answer with."""

    def __init__(self, cfg, telegram, deadline, clock=time.time):
        """`telegram()` gives the TelegramClient that decisions post through."""
        self.cfg = cfg
        self.telegram = telegram
        self.deadline = deadline
        self.clock = clock
        self.redactor = Redactor(cfg.secrets())

    def run(self, cmd, user_id):
        if cmd.error:
            return cmd.error
        if cmd.name in NEEDS_ID:
            return self.decide(cmd.qid, DECISION[cmd.name], user_id, note=cmd.note).message
        return getattr(self, "do_" + cmd.name)(cmd, user_id)

    def decide(self, qid, decision, user_id, note="", sha8=None):
        """Decide through mako.decisions, as approve.py does; its Outcome (ok, message, ...)."""
        from . import decisions  # loaded on first use: an idle listener does without it
        # Never wait on the tick lock past the time this run must end by.
        wait = 60.0 if self.deadline is None else max(1.0, min(60.0, self.deadline - self.clock() - 5))
        return decisions.decide(self.cfg, qid, decision, f"telegram:{user_id}", note, expect_sha8=sha8,
                                lock_wait_s=wait, telegram=self.telegram())

    def do_pause(self, cmd, user_id):
        pause(self.cfg.paths, self.redactor.text(cmd.note), f"telegram:{user_id}")
        return f"⏸ Paused: {paused_reason(self.cfg.paths)}. No tick or scribe run starts until `resume`."

    def do_resume(self, cmd, user_id):
        if resume(self.cfg.paths):
            return "▶️ Resumed: the next tick starts on schedule."
        return "Not paused; nothing to resume."

    def do_help(self, cmd, user_id):
        return HELP

    def do_status(self, cmd, user_id):
        # The same screen as status.py (issue §21), loaded only when asked: an idle listener does without it.
        from .status import collect
        from .status_screen import render
        return render(collect(self.cfg, self.clock())).rstrip("\n")

    def do_other_bot(self, cmd, user_id):
        return None
