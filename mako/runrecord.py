"""What a worker tick and a scribe run share: their deadline, the payload they record, and how a failure
is named and logged.

Both are numbered runs bounded by a supervisor timeout. Each stops working at its deadline, leaving room to
record itself (payload, error log, FAIL post) before the supervisor would kill it; the digest uses the same
margin for its one post.
"""

import time
import traceback

from .errors import AllProvidersFailed, DeadlineExceeded, ResponseError, Terminated
from .logs import iso, write_error_log, write_payload
from .redact import Redactor
from .telegram import TelegramClient

MIN_MARGIN_S = 5.0
MAX_MARGIN_S = 20.0


def run_deadline(started, budget_s):
    """When a run given `budget_s` by the supervisor must stop working, so it can still record itself."""
    return started + budget_s - max(MIN_MARGIN_S, min(MAX_MARGIN_S, budget_s * 0.1))


def outcome_of(error):
    """The outcome word a failure is recorded as (§17): parse_error, timeout, provider_error, terminated or
    fail."""
    if isinstance(error, ResponseError):
        return "parse_error"
    if isinstance(error, (DeadlineExceeded, TimeoutError)):
        return "timeout"
    if isinstance(error, AllProvidersFailed):
        kinds = {a.get("kind") for a in getattr(error, "attempts", []) if isinstance(a, dict)}
        return "timeout" if kinds == {"timeout"} else "provider_error"
    if isinstance(error, Terminated):
        return "terminated"
    return "fail"


class RunRecord:
    """The record of one numbered run: its clock, deadline, redactor, Telegram client, errors and payload."""

    def __init__(self, cfg, mode, budget_s, clock=time.time):
        self.cfg = cfg
        self.clock = clock
        self.redactor = Redactor(cfg.secrets())
        self.started = clock()
        self.deadline = run_deadline(self.started, budget_s)
        self.telegram = TelegramClient(cfg.telegram, self.redactor, deadline=self.deadline)
        self.n = None
        self.errors = []
        self.payload = {"tick_n": None, "mode": mode, "started_at": iso(), "system_prompt": "",
                        "user_message": "", "sizes": {}, "inbox_present": False, "llm_attempts": [],
                        "raw_content": None, "parsed_response": None, "files_written": [], "actions": [],
                        "telegram_posts": self.telegram.records, "errors": self.errors}

    def log_failure(self, folder, what, error):
        """Write the redacted traceback to `folder`/error-N.log; a failure to do so joins the errors."""
        try:
            trace = "".join(traceback.format_exception(type(error), error, error.__traceback__))
            write_error_log(folder, self.n, f"{what} failed at {iso()}\n{trace}", self.redactor)
        except OSError as e:
            self.errors.append(self.redactor.text(f"error log not written: {e}"))

    def save_payload(self, folder, outcome, **extra):
        """Close the payload (end time, wall time, outcome) and write it when logging.full_payload is on."""
        self.payload.update(ended_at=iso(), wall_s=round(self.clock() - self.started, 3), outcome=outcome,
                            **extra)
        if self.cfg.logging.full_payload:
            write_payload(folder, self.n, self.payload, self.redactor)
