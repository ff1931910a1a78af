"""Reading the operator's chat (§20, protocols.md §3.5-3.6b): the Bot API calls listen.py makes, and which
updates it may act on.

`BotApi` wraps getUpdates, getMe, answerCallbackQuery and editMessageText on one kept-alive connection,
turning every failure into a `BotApiError` whose text never holds the token (it travels in the URL path).
`classify()` is the gate: only a text message in the configured chat from an allowed person, or a button
press by one, gets past it; everything else comes back with the reason it was ignored.
"""

import json
import logging
import time

from .errors import MakoError
from .redact import scrub_with_token

log = logging.getLogger("mako.inbound")

CONNECT_TIMEOUT_S = 5.0
CALL_TIMEOUT_S = 15.0
POLL_SLACK_S = 10.0  # protocols.md §0: read timeout = long-poll timeout + 10 s
MAX_POLL_S = 50
MAX_BODY_BYTES = 8 * 1024 * 1024  # 100 updates of 4096 characters each, with room to spare
ALLOWED_UPDATES = ["message", "callback_query"]

# Reasons an update is ignored, in the order listen.py prints its counts.
IGNORED = ("other chat", "other user", "bot", "edited", "not text", "channel post", "other kind")


class BotApiError(MakoError):
    """A Bot API call failed: `status` is the HTTP status (None for a transport error)."""

    def __init__(self, status, description, retry_after=None):
        super().__init__(f"HTTP {status}: {description}" if status else description)
        self.status = status
        self.description = description
        self.retry_after = retry_after

    @property
    def kind(self):
        if self.status is None:
            return "network"
        if self.status == 401:
            return "unauthorized"
        if self.status == 409:
            return "conflict"
        if self.status == 429:
            return "rate_limited"
        if self.status >= 500:
            return "server"
        return "refused"


class BotApi:
    """The Bot API methods listen.py needs; each returns the `result` or raises BotApiError.

    It speaks HTTP through `net.Connection` (the standard library, one kept-alive connection): the poller
    sits in memory through every idle gap, and `requests` alone would double its size (§20's idle cost
    target). Replies go out through TelegramClient, loaded only when there is something to say.
    """

    def __init__(self, tg, redactor, deadline=None, clock=time.time):
        self.tg = tg
        self.redactor = redactor
        self.deadline = deadline  # epoch time no call may outlast (None: no limit but each call's own)
        self.clock = clock
        self.conn = None

    def scrub(self, text):
        return scrub_with_token(self.redactor, self.tg.bot_token, text)

    def _exchange(self, method, params, read_timeout):
        """(status, reason, body bytes) of one POST; the whole body has arrived by `read_timeout` seconds."""
        # Imported here, not at the top: the supervisor reads off_reason() from this module and stays small.
        from .net import Connection, within
        if self.conn is None:
            self.conn = Connection(self.tg.api_base_url)
        url = f"{self.tg.api_base_url}/bot{self.tg.bot_token}/{method}"
        try:
            # The connection ends the exchange at read_timeout once connected; `within` also bounds a name
            # lookup that stalls, which no socket timeout covers.
            resp = within(read_timeout + 0.5, self.conn.request, "POST", url, json.dumps(params).encode("utf-8"),
                          {"Content-Type": "application/json"}, min(CONNECT_TIMEOUT_S, read_timeout),
                          read_timeout, MAX_BODY_BYTES)
        except TimeoutError:
            self.close()  # the abandoned exchange must not keep the connection
            raise
        if not resp.complete:
            raise ValueError(f"answer over {MAX_BODY_BYTES} bytes")
        return resp.status, resp.reason, resp.body

    def call(self, method, params, read_timeout=CALL_TIMEOUT_S):
        from http.client import HTTPException
        if self.deadline is not None:
            read_timeout = min(read_timeout, self.deadline - self.clock())
            if read_timeout <= 0:
                raise BotApiError(None, "not sent: the run's end time was reached")
        try:
            status, reason, raw = self._exchange(method, params, max(0.1, read_timeout))
        except (OSError, HTTPException, ValueError) as e:
            raise BotApiError(None, self.scrub(f"{type(e).__name__}: {e}")[:300]) from None
        try:
            data = json.loads(raw)
        except ValueError:
            data = None
        if not isinstance(data, dict):
            data = {}
        if status == 200 and data.get("ok") is True:
            return data.get("result")
        # A proxy's HTML error page says nothing its status line does not.
        description = data.get("description") or (reason if status != 200 else "not a Bot API answer")
        params_out = data.get("parameters") if isinstance(data.get("parameters"), dict) else {}
        retry = params_out.get("retry_after")
        if not isinstance(retry, (int, float)) or isinstance(retry, bool) or retry < 0:
            retry = None
        status = status if status != 200 else 502  # a 200 without ok:true is a server fault
        raise BotApiError(status, self.scrub(" ".join(str(description).split()))[:300], retry)

    def get_updates(self, offset, timeout, read_timeout=None):
        """Updates from `offset` on (which confirms every one below it), waiting up to `timeout` seconds."""
        timeout = max(0, min(int(timeout), MAX_POLL_S))
        params = {"timeout": timeout, "allowed_updates": ALLOWED_UPDATES}
        if offset:
            params["offset"] = offset
        if read_timeout is None:
            read_timeout = timeout + POLL_SLACK_S
        result = self.call("getUpdates", params, read_timeout=read_timeout)
        if not isinstance(result, list):
            raise BotApiError(502, "getUpdates returned no list")
        return [u for u in result if isinstance(u, dict) and _is_int(u.get("update_id"))]

    def get_me(self):
        result = self.call("getMe", {})
        return result if isinstance(result, dict) else {}

    def answer_callback(self, query_id, text, alert=False):
        """Answer a button press; a late or repeated answer (400) is harmless and only logged."""
        try:
            self.call("answerCallbackQuery", {"callback_query_id": query_id, "text": text[:200],
                                              "show_alert": bool(alert)})
            return True
        except BotApiError as e:
            log.warning("answerCallbackQuery failed: %s", e)
            return False

    def edit_text(self, chat_id, message_id, text):
        """Replace a post's text and drop its buttons; "not modified" counts as done."""
        try:
            self.call("editMessageText", {"chat_id": chat_id, "message_id": message_id, "text": text[:4096]})
            return True
        except BotApiError as e:
            if "not modified" in e.description:
                return True
            log.warning("editMessageText failed: %s", e)
            return False

    def close(self):
        conn, self.conn = self.conn, None
        if conn is not None:
            conn.close()


def _is_int(value):
    return isinstance(value, int) and not isinstance(value, bool)


def same_chat(chat_id, configured):
    """Whether a chat id from an update is the configured one (the config may hold it as a string)."""
    return _is_int(chat_id) and str(chat_id) == str(configured).strip()


def classify(update, tg):
    """("message", msg), ("callback", query) or ("ignored", reason) for one update (§20's filter).

    Only the gate: a button press by someone not allowed still comes back as "callback" so it can be
    refused out loud; `allowed(query, tg)` says whether the presser may decide anything.
    """
    if "callback_query" in update:
        query = update["callback_query"]
        return ("callback", query) if isinstance(query, dict) else ("ignored", "other kind")
    if "edited_message" in update or "edited_channel_post" in update:
        return "ignored", "edited"
    if "channel_post" in update:
        return "ignored", "channel post"
    msg = update.get("message")
    if not isinstance(msg, dict):
        return "ignored", "other kind"
    chat = msg.get("chat") if isinstance(msg.get("chat"), dict) else {}
    if not same_chat(chat.get("id"), tg.chat_id):
        return "ignored", "other chat"
    sender = msg.get("from") if isinstance(msg.get("from"), dict) else {}
    # An anonymous admin or a linked channel speaks as a chat, and a message sent through an inline bot is
    # the bot's text: none of them is the allowed person typing.
    if sender.get("is_bot") is not False or msg.get("sender_chat") or msg.get("via_bot"):
        return "ignored", "bot"
    if not allowed(sender, tg):
        return "ignored", "other user"
    if msg.get("edit_date"):
        return "ignored", "edited"
    text = msg.get("text")
    if not isinstance(text, str) or not text.strip():
        return "ignored", "not text"  # a photo or a file, with or without a caption
    return "message", msg


def allowed(sender, tg):
    """Whether this Telegram user (a `from` object) is one of telegram.inbound.allowed_user_ids."""
    if not isinstance(sender, dict) or sender.get("is_bot") is not False:
        return False
    uid = sender.get("id")
    return _is_int(uid) and uid in tg.inbound.allowed_user_ids


def sender_name(sender):
    """The name to show for a sender: first and last name, else @username, else the numeric id."""
    if not isinstance(sender, dict):
        return "unknown"
    name = " ".join(str(sender.get(k) or "") for k in ("first_name", "last_name")).strip()
    if not name and sender.get("username"):
        name = "@" + str(sender["username"])
    return name or str(sender.get("id", "unknown"))


def topic_of(msg):
    """The forum topic a message is in, or 0 (General, or a chat without topics)."""
    tid = msg.get("message_thread_id")
    # Only a topic message's thread id names a topic; a reply in General carries one too (protocols §3.6).
    if msg.get("is_topic_message") is True and _is_int(tid) and tid > 1:
        return tid
    return 0


def off_reason(cfg):
    """Why Telegram inbound is off (for the supervisor's start-up lines and the config check), or None."""
    tg = cfg.telegram
    if not tg.inbound.enabled:
        return "telegram.inbound.enabled is false"
    if not tg.inbound.allowed_user_ids:
        return "telegram.inbound.allowed_user_ids is empty"
    if not tg.bot_token:
        return "telegram.bot_token is not set"
    if not tg.enabled:
        return "telegram.chat_id is not set"
    return None
