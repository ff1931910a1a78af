"""metrics.csv rows, per-run payload JSON files, error-N.log, and the logging setup the entry points share.

Everything that lands here is scrubbed by the Redactor first (§17): the payload is the forensic record,
so it holds whole prompts and replies, but never a secret.
"""

import csv
import json
import logging
import os
import re
import sys
from datetime import datetime, timezone
from pathlib import Path

from .fileio import append, atomic_write, displace, ensure_dir, read_head, tail_lines
from .redact import Redactor
from .text import terminal_safe, visible

METRICS_COLUMNS = [
    "ts", "tick_n", "mode", "wall_s", "provider_used", "model_used", "input_tokens_est", "output_chars",
    "actions_count", "actions_executed", "actions_queued", "parse_ok", "drift_flag", "compact_now", "failures",
    "outcome", "llm_wall_s", "prompt_tokens", "completion_tokens",
]
# The last line of a traceback: "package.module.ErrorType: message".
EXCEPTION_LINE = re.compile(r"^(?:[A-Za-z_][\w.]*\.)?([A-Za-z_]\w*): (.+)$")
# A comma, a quote, or any character str.splitlines() breaks a line at.
SPECIAL = re.compile('[,"\r\n\x0b\x0c\x1c\x1d\x1e\x85\u2028\u2029]')
PAYLOAD_KEYS = [
    "tick_n", "mode", "started_at", "system_prompt", "user_message", "sizes", "inbox_present", "llm_attempts",
    "raw_content", "parsed_response", "files_written", "actions", "telegram_posts", "errors", "ended_at",
    "wall_s", "outcome",
]


def utc_now():
    return datetime.now(timezone.utc)


def iso(dt=None):
    """ISO 8601 UTC with its offset, to the second."""
    return (dt or utc_now()).astimezone(timezone.utc).isoformat(timespec="seconds")


def iso_at(epoch):
    """`iso` of an epoch time."""
    return iso(datetime.fromtimestamp(epoch, timezone.utc))


class RedactingFilter(logging.Filter):
    """Scrubs every record a handler emits, from any logger (urllib3 puts whole `bot<token>` URLs in its
    warnings), message, arguments and traceback alike. Shape-based scrubbing (bot tokens, bearer values)
    applies from the start; configured secrets once `redact_logs` has been given them."""

    redactor = Redactor()

    def filter(self, record):
        redactor = RedactingFilter.redactor
        # One event, one line, nothing that drives a terminal: messages quote model text and web pages.
        record.msg = visible(redactor.text(record.getMessage()), keep="\t")
        record.args = None
        if record.exc_info:
            record.exc_text = terminal_safe(redactor.text(logging.Formatter().formatException(record.exc_info)))
            record.exc_info = None
        if record.stack_info:
            record.stack_info = terminal_safe(redactor.text(record.stack_info))
        return True


def _guard_handlers():
    for handler in [*logging.getLogger().handlers, logging.lastResort]:
        if handler is not None and not any(isinstance(f, RedactingFilter) for f in handler.filters):
            handler.addFilter(RedactingFilter())


def redact_logs(redactor):
    """From now on, every log line from any logger passes `redactor` (the configured secrets)."""
    RedactingFilter.redactor = redactor
    _guard_handlers()


def setup_logging(verbose=False):
    """stderr, one line per event, no timestamp (journald adds one), every line scrubbed."""
    logging.basicConfig(level=logging.DEBUG if verbose else logging.INFO, stream=sys.stderr,
                        format="%(name)s: %(message)s", force=True)
    # urllib3 logs whole URLs at DEBUG, which carry the Telegram token.
    logging.getLogger("urllib3").setLevel(logging.WARNING)
    _guard_handlers()


def _cell(value):
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return f"{value:.3f}".rstrip("0").rstrip(".") if value == value else ""
    # One row is one line for every reader (a tail split at "\n", a terminal, a spreadsheet): a line break
    # or control character inside a cell is written as its escape.
    return visible(value)


def _field(text):
    """A CSV field, quoted when it holds a comma, a quote or any line break.

    csv.writer quotes only for the characters of its line terminator, so a lone \r (or U+2028 and the
    other breaks str.splitlines knows) would go out bare and split the row for a reader."""
    if text and SPECIAL.search(text):
        return '"' + text.replace('"', '""') + '"'
    return text


def metrics_row_text(row):
    """One CSV record for `row` (a dict keyed by METRICS_COLUMNS; missing keys are empty)."""
    return ",".join(_field(_cell(row.get(c))) for c in METRICS_COLUMNS) + "\n"


def _header_text():
    return ",".join(METRICS_COLUMNS) + "\n"


def append_metrics(path, row):
    """Append one row; a file whose header is not ours is renamed aside first, never appended to."""
    path = Path(path)
    ensure_dir(path.parent)
    displace(path)
    header = _header_text()
    if path.exists():
        head, _ = read_head(path, len(header.encode()) + 1)
        first = head.split(b"\n", 1)[0].decode("utf-8", "replace") + "\n"
        if first != header:
            aside = path.with_name(f"{path.stem}.{utc_now():%Y%m%d-%H%M%S}.{os.getpid()}.old.csv")
            os.replace(path, aside)
    if not path.exists():
        append(path, header)
    else:
        # A crash mid-append can leave a last line without its newline; never glue two rows together.
        with open(path, "rb") as f:
            f.seek(0, os.SEEK_END)
            if f.tell() > 0:
                f.seek(-1, os.SEEK_END)
                if f.read(1) != b"\n":
                    append(path, "\n")
    append(path, metrics_row_text(row))


def read_metrics(path):
    """All rows of metrics.csv as dicts (strings); [] when the file is missing."""
    try:
        with open(path, newline="", encoding="utf-8", errors="replace") as f:
            return list(csv.DictReader(f))
    except FileNotFoundError:
        return []


def payload_path(folder, n):
    return Path(folder) / f"{int(n):08d}.json"


def write_payload(folder, n, payload, redactor):
    """Write the run's full record atomically, scrubbed; keys in PAYLOAD_KEYS order first."""
    ordered = {k: payload.get(k) for k in PAYLOAD_KEYS}
    ordered.update({k: v for k, v in payload.items() if k not in ordered})
    text = json.dumps(redactor.obj(ordered), ensure_ascii=False, indent=1, default=str)
    path = payload_path(folder, n)
    atomic_write(path, redactor.text(text) + "\n", durable=False)
    return path


def write_error_log(folder, n, text, redactor):
    path = Path(folder) / f"error-{int(n)}.log"
    atomic_write(path, redactor.text(text))
    return path


def failure_reason(folder, n):
    """Why tick n failed, from the last line of its error-N.log in `folder` ("ErrorType: message"); "" when
    there is no such log. Reads only the file's end."""
    try:
        lines = tail_lines(Path(folder) / f"error-{int(n)}.log", 1)
    except OSError:
        return ""
    last = lines[-1].strip() if lines else ""
    m = EXCEPTION_LINE.match(last)
    return f"{m.group(1)}: {m.group(2)}" if m else last
