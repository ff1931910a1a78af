"""Post plain-text messages to the operator's Telegram forum topics (SPEC §16, protocols.md §3).

A send never raises and never fails a run: every attempt becomes a record (ok, status, error) for the
payload. Long texts are split on paragraph or line boundaries. The bot token travels in the URL path, so
every error text is scrubbed before it is recorded or logged.
"""

import json
import logging
import time

from .config import THREAD_NAMES
from .net import Connection, within
from .redact import scrub_with_token

log = logging.getLogger(__name__)

PART_LIMIT = 4000  # UTF-16 units; Telegram's hard limit is 4096, leaving room for the "(i/n)" prefix
MAX_429_RETRIES = 3
MAX_RETRY_AFTER_S = 60
TRANSIENT_RETRY_S = 1.0
CONNECT_TIMEOUT_S = 5.0
READ_TIMEOUT_S = 15.0
MIN_SEND_S = 1.0
MAX_REPLY_BYTES = 1024 * 1024


def utf16_len(text):
    """Length as Telegram counts it: UTF-16 code units (an emoji outside the BMP is 2)."""
    return len(text.encode("utf-16-le", "surrogatepass")) // 2


def _fit(text, limit):
    """Index of the longest prefix of `text` within `limit` UTF-16 units."""
    units = 0
    for i, ch in enumerate(text):
        units += 2 if ord(ch) > 0xFFFF else 1
        if units > limit:
            return i
    return len(text)


def _split_point(text, limit):
    """Where to end the next part: after a paragraph break, else a line break, else a space, else hard."""
    window = _fit(text, limit)
    head = text[:window]
    half = window // 2
    para = head.rfind("\n\n")
    if para >= half:
        return para + 2
    line = head.rfind("\n")
    if line >= half:
        return line + 1
    space = head.rfind(" ")
    if space >= half:
        return space + 1
    # An early line break beats a hard cut, but not a space near the end: a summary's short first line
    # must not become a part of its own.
    if line > 0:
        return line + 1
    return max(window, 1)


def split_message(text, limit=PART_LIMIT):
    """`text` in parts of at most `limit` UTF-16 units, in order; "".join(parts) == text."""
    parts = []
    rest = text
    while utf16_len(rest) > limit:
        cut = _split_point(rest, limit)
        parts.append(rest[:cut])
        rest = rest[cut:]
    if rest:
        parts.append(rest)
    return parts


def resolve_thread(tg, thread):
    """The message_thread_id for a thread name or number (0 = post without a thread); None when invalid."""
    if isinstance(thread, bool) or thread is None:
        return None
    if isinstance(thread, float) and thread.is_integer():
        thread = int(thread)
    if isinstance(thread, str):
        name = thread.strip().lower()
        if name in THREAD_NAMES:
            return tg.thread_id(name)
        if name.isdecimal():  # not isdigit: it takes "²", which int() refuses
            thread = int(name)
        else:
            return None
    if not isinstance(thread, int) or thread < 0:
        return None
    # Thread 1 is the General topic, which the API refuses by id: General means no thread at all.
    return 0 if thread == 1 else thread


class TelegramClient:
    """sendMessage with bounded retries; `records` holds one entry per HTTP attempt."""

    def __init__(self, tg, redactor, deadline=None, clock=time.time, sleep=time.sleep):
        self.tg = tg
        self.redactor = redactor
        self.deadline = deadline
        self.clock = clock
        self.sleep = sleep
        self.records = []
        self._conn = None

    def scrub(self, text):
        return scrub_with_token(self.redactor, self.tg.bot_token, text)

    def send(self, text, thread="log", reply_markup=None):
        """Post `text` (split if long) to `thread`; True when every part was delivered. Never raises.

        `reply_markup` (an inline keyboard) goes on the last part; `last_message_id` is then that part's id.
        """
        if not self.tg.enabled:
            return False
        try:
            return self._send(text, thread, reply_markup)
        except Exception as e:  # a Telegram problem must never fail the run that posts
            error = self.scrub(f"{type(e).__name__}: {e}")
            self._record(False, None, error, None, 0, 0, 0)
            log.warning("telegram send failed: %s", error)
            return False

    @property
    def last_message_id(self):
        """The message_id of the last part delivered, or None."""
        for rec in reversed(self.records):
            if rec["ok"]:
                return rec["message_id"]
        return None

    def _send(self, text, thread, reply_markup=None):
        thread_id = resolve_thread(self.tg, thread)
        if thread_id is None:
            error = self.scrub(f"unknown thread {thread!r}")[:200]
            self._record(False, None, error, None, 0, 0, 0)
            log.warning("telegram: %s", error)
            return False
        parts = [p for p in split_message(self.scrub(text)) if p.strip()]
        if not parts:
            self._record(False, None, "empty text, nothing sent", thread_id, 0, 0, 0)
            return False
        for i, part in enumerate(parts, 1):
            body = part if len(parts) == 1 else f"({i}/{len(parts)}) {part.strip(chr(10))}"
            markup = reply_markup if i == len(parts) else None
            if not self._post(body, thread_id, i, len(parts), markup):
                return False
        return True

    def _time_left(self):
        return None if self.deadline is None else self.deadline - self.clock()

    def _post(self, text, thread_id, part, parts, reply_markup=None):
        url = f"{self.tg.api_base_url}/bot{self.tg.bot_token}/sendMessage"
        payload = {"chat_id": self.tg.chat_id, "text": text, "link_preview_options": {"is_disabled": True}}
        if thread_id:
            payload["message_thread_id"] = thread_id
        if reply_markup:
            payload["reply_markup"] = reply_markup
        from http.client import HTTPException
        rate_limited = 0
        transient_retried = False
        while True:
            left = self._time_left()
            if left is not None and left < MIN_SEND_S:
                self._record(False, None, "not sent: the run deadline was reached", thread_id, part, parts, text)
                return False
            read = READ_TIMEOUT_S if left is None else max(0.5, min(READ_TIMEOUT_S, left))
            status, data, error, raw = None, {}, None, b""
            try:
                # Bounded by wall time: a server dripping its answer must not hold the run past its deadline.
                budget = read + min(CONNECT_TIMEOUT_S, read)
                status, raw = within(budget if left is None else min(budget, left), self._exchange, url, payload,
                                     read)
                try:
                    data = json.loads(raw)
                except ValueError:
                    data = {}
                if not isinstance(data, dict):
                    data = {}
            except (HTTPException, OSError, ValueError) as e:
                self.close()  # an exchange given up on may still hold the connection
                error = self.scrub(f"{type(e).__name__}: {e}")[:500]
            if status == 200 and data.get("ok") is True:
                result = data.get("result") if isinstance(data.get("result"), dict) else {}
                self._record(True, status, None, thread_id, part, parts, text, result.get("message_id"))
                return True
            if status is not None:
                description = data.get("description") or raw[:200].decode("utf-8", "replace")
                error = self.scrub(f"HTTP {status}: {' '.join(str(description).split())}")[:500]
            retry_after = self._retry_after(data)
            self._record(False, status, error, thread_id, part, parts, text, retry_after=retry_after)
            if status == 429 and rate_limited < MAX_429_RETRIES:
                rate_limited += 1
                wait = retry_after if retry_after is not None else 1.0
                left = self._time_left()
                if wait > MAX_RETRY_AFTER_S or (left is not None and wait > left - MIN_SEND_S):
                    log.warning("telegram: rate limited for %ss, past what this run can wait; giving up", wait)
                    return False
                self.sleep(wait)
                continue
            if (status is None or status >= 500) and not transient_retried:
                transient_retried = True
                left = self._time_left()
                if left is None or left > TRANSIENT_RETRY_S + MIN_SEND_S:
                    self.sleep(TRANSIENT_RETRY_S)
                    continue
            log.warning("telegram send failed: %s", error)
            return False

    def _exchange(self, url, payload, read):
        if self._conn is None:
            self._conn = Connection(self.tg.api_base_url)
        resp = self._conn.request("POST", url, json.dumps(payload).encode("utf-8"),
                                  {"Content-Type": "application/json"}, min(CONNECT_TIMEOUT_S, read), read,
                                  MAX_REPLY_BYTES)
        return resp.status, resp.body[:MAX_REPLY_BYTES]

    @staticmethod
    def _retry_after(data):
        params = data.get("parameters")
        value = params.get("retry_after") if isinstance(params, dict) else None
        if isinstance(value, (int, float)) and not isinstance(value, bool) and value >= 0:
            return float(value)
        return None

    def _record(self, ok, status, error, thread_id, part, parts, text, message_id=None, retry_after=None):
        chars = text if isinstance(text, int) else utf16_len(text)
        rec = {"ok": ok, "status": status, "error": error, "thread_id": thread_id, "part": part, "parts": parts,
               "chars": chars, "message_id": message_id}
        if retry_after is not None:
            rec["retry_after"] = retry_after
        self.records.append(rec)
        return rec

    def close(self):
        conn, self._conn = self._conn, None
        if conn is not None:
            conn.close()
