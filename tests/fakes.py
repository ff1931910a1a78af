"""Local fake servers for Ollama, OpenAI-compatible (OpenCode Go) and the Telegram Bot API.

Each fake binds 127.0.0.1 on a free port, serves from a daemon thread, records every request, and answers
with the real wire formats (protocols.md §5). Tests script faults per path with `push(path, Reply(...))`;
when a path's queue is empty the fake's happy handler answers. No dependency beyond the standard library.
"""

import json
import re
import socket
import threading
import time
import uuid
from collections import Counter, defaultdict, deque
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qsl, urlsplit

MODES = (None, "hang", "close_early", "html", "empty_body", "malformed", "drip")
HTML_502 = b"<html>\r\n<head><title>502 Bad Gateway</title></head>\r\n<body>\r\n<center><h1>502 Bad Gateway" \
           b"</h1></center>\r\n<hr><center>cloudflare</center>\r\n</body>\r\n</html>\r\n"


class Reply:
    """One scripted response.

    body: dict/list (sent as JSON), str or bytes (sent raw), or a callable taking the Recorded request and
    returning one of those (used to echo the requested model). mode: None | "hang" (no answer until the
    server closes) | "close_early" (drop the connection without a response) | "html" (text/html 502 page;
    status 502 unless another non-200 status is given) | "empty_body" | "malformed" (b'{"mess') | "drip"
    (headers at once, then the body one byte every `delay_s`).
    """

    def __init__(self, status=200, body=None, headers=None, delay_s=0.0, mode=None):
        if mode not in MODES:
            raise ValueError(f"unknown reply mode {mode!r}")
        self.status = status
        self.body = body
        self.headers = dict(headers or {})
        self.delay_s = delay_s
        self.mode = mode

    def __repr__(self):
        return f"Reply(status={self.status}, mode={self.mode}, delay_s={self.delay_s})"


class Recorded:
    """One request as the server received it."""

    def __init__(self, method, path, headers, body):
        self.method = method
        self.path = path
        self.headers = headers
        self.body = body
        try:
            self.json = json.loads(body) if body else None
        except (ValueError, UnicodeDecodeError):
            self.json = None

    @property
    def route(self):
        """The path without its query string."""
        return urlsplit(self.path).path

    def header(self, name, default=None):
        """A header by case-insensitive name."""
        low = name.lower()
        for k, v in self.headers.items():
            if k.lower() == low:
                return v
        return default

    def __repr__(self):
        return f"Recorded({self.method} {self.path})"


def _encode(body):
    """(bytes, default content type) for a reply body."""
    if body is None:
        return b"", "application/json"
    if isinstance(body, bytes):
        return body, "application/octet-stream"
    if isinstance(body, str):
        return body.encode("utf-8"), "text/plain; charset=utf-8"
    return json.dumps(body).encode("utf-8"), "application/json; charset=utf-8"


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    # Handlers parked in "hang" are released by the closing event; never join them on close.
    block_on_close = False

    def handle_error(self, request, client_address):
        # Clients that time out and hang up mid-reply are the point of several tests, not an error.
        pass


class FakeServer:
    """Base fake: request log, per-path reply queues, a happy `default(req)` answer."""

    def __init__(self, tls=None):
        """`tls`: a server-side ssl.SSLContext to serve HTTPS with instead of HTTP."""
        self.requests = []
        self._queues = defaultdict(deque)
        self._lock = threading.Lock()
        self._closing = threading.Event()
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self):
                fake._serve(self)

            do_POST = do_PUT = do_DELETE = do_PATCH = do_HEAD = do_GET

            def log_message(self, *args):
                pass

        self._server = _Server(("127.0.0.1", 0), Handler)
        if tls is not None:
            self._server.socket = tls.wrap_socket(self._server.socket, server_side=True)
        self.port = self._server.server_address[1]
        self.url = f"{'https' if tls else 'http'}://127.0.0.1:{self.port}"
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.05},
                                        name=f"{type(self).__name__}:{self.port}", daemon=True)
        self._thread.start()

    # -- scripting ---------------------------------------------------------------------------------------

    def push(self, path, *replies):
        """Queue replies for `path`; each request to it takes the next one, then the happy handler answers."""
        for reply in replies:
            if not isinstance(reply, Reply):
                raise TypeError(f"push() takes Reply objects, got {type(reply).__name__}")
        with self._lock:
            self._queues[path].extend(replies)

    def pending(self, path=None):
        """How many scripted replies are still queued (for one path, or in all)."""
        with self._lock:
            if path is not None:
                return len(self._queues.get(path, ()))
            return sum(len(q) for q in self._queues.values())

    def queue_keys(self, route):
        """Queue names a request to `route` may take a scripted reply from, most specific first."""
        return [route]

    def _take(self, route):
        with self._lock:
            for key in self.queue_keys(route):
                queue = self._queues.get(key)
                if queue:
                    return queue.popleft()
        return None

    def on_request(self, req):
        """Called (under the lock) for every request as it is recorded."""

    def default(self, req):
        """The happy answer; subclasses override."""
        return Reply(404, {"error": "not found"})

    # -- serving -----------------------------------------------------------------------------------------

    def _serve(self, handler):
        length = int(handler.headers.get("Content-Length") or 0)
        body = handler.rfile.read(length) if length > 0 else b""
        req = Recorded(handler.command, handler.path, dict(handler.headers.items()), body)
        with self._lock:
            self.requests.append(req)
            self.on_request(req)
        reply = self._take(req.route)
        if reply is None:
            reply = self.default(req)
        try:
            self._send(handler, req, reply)
        except (BrokenPipeError, ConnectionResetError, ConnectionAbortedError, socket.timeout):
            pass

    def _send(self, handler, req, reply):
        if reply.mode == "hang":
            self._closing.wait()
            handler.close_connection = True
            return
        if reply.delay_s and reply.mode != "drip":
            if self._closing.wait(reply.delay_s):
                return
        if reply.mode == "close_early":
            handler.close_connection = True
            try:
                handler.connection.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            return
        body = reply.body(req) if callable(reply.body) else reply.body
        status = reply.status
        data, ctype = _encode(body)
        if reply.mode == "html":
            data, ctype = HTML_502, "text/html"
            status = 502 if status == 200 else status
        elif reply.mode == "empty_body":
            data = b""
        elif reply.mode == "malformed":
            data, ctype = b'{"mess', "application/json"
        headers = {"Content-Type": ctype, "Content-Length": str(len(data))}
        for k, v in reply.headers.items():
            headers = {hk: hv for hk, hv in headers.items() if hk.lower() != k.lower()}
            headers[k] = str(v)
        handler.send_response(status)
        for k, v in headers.items():
            handler.send_header(k, v)
        handler.end_headers()
        if req.method == "HEAD":
            return
        if reply.mode == "drip":
            for i in range(len(data)):
                if self._closing.wait(reply.delay_s):
                    return
                handler.wfile.write(data[i:i + 1])
                handler.wfile.flush()
            return
        handler.wfile.write(data)

    # -- lifecycle ---------------------------------------------------------------------------------------

    def close(self):
        """Stop serving and release any handler parked in "hang" or a delay."""
        if self._closing.is_set():
            return
        self._closing.set()
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def requests_to(self, route):
        """Recorded requests whose path (without query) is `route`."""
        with self._lock:
            return [r for r in self.requests if r.route == route]


def _bearer_ok(req, api_key):
    return req.header("Authorization", "") == f"Bearer {api_key}"


def _tokens(text):
    return max(1, len(text) // 4)


def _prompt_text(req):
    messages = (req.json or {}).get("messages") or []
    return "".join(str(m.get("content", "")) for m in messages if isinstance(m, dict))


def _split_extra(extra, message_keys, choice_keys=()):
    """Route reply_content() extras to the message, the choice, or the top level."""
    parts = {"message": {}, "choice": {}, "top": {}}
    for k, v in extra.items():
        where = "message" if k in message_keys else "choice" if k in choice_keys else "top"
        parts[where][k] = v
    return parts


def _apply(target, updates):
    """Set keys; a None value removes the key (to script a field the provider omitted)."""
    for k, v in updates.items():
        if v is None:
            target.pop(k, None)
        else:
            target[k] = v


# ------------------------------------------------------------------------------------------------------
# Ollama

def ollama_usage_limit():
    """429 with the cloud's usage-limit text and, as reported, no Retry-After header."""
    return Reply(429, {"error": "you (mako) have reached your session usage limit, upgrade for higher limits: "
                                "https://ollama.com/upgrade or add extra usage: https://ollama.com/settings "
                                f"(ref: {uuid.UUID(int=7)})"})


def ollama_thinking_only(thinking="Let me think about the plan step by step before answering..."):
    """200 whose whole budget went to thinking: content "", done_reason "length"."""
    def body(req):
        return _ollama_body(req, "", message={"thinking": thinking}, top={"done_reason": "length"})
    return Reply(200, body)


def _ollama_body(req, content, message=None, top=None):
    data = req.json if isinstance(req.json, dict) else {}
    out = {
        "model": data.get("model", ""),
        "created_at": time.strftime("%Y-%m-%dT%H:%M:%S.000000000Z", time.gmtime()),
        "message": {"role": "assistant", "content": content},
        "done": True,
        "done_reason": "stop",
        "total_duration": 2481000000,
        "load_duration": 1200000,
        "prompt_eval_count": _tokens(_prompt_text(req)),
        "prompt_eval_duration": 90000000,
        "eval_count": _tokens(content),
        "eval_duration": 2300000000,
    }
    _apply(out["message"], message or {})
    _apply(out, top or {})
    return out


class FakeOllama(FakeServer):
    """Ollama native API: POST /api/chat, GET /api/tags. `api_key` set = cloud mode (Bearer required)."""

    MESSAGE_KEYS = ("role", "thinking", "tool_calls")

    def __init__(self, api_key=None, content='{"work_done": "ok"}', models=("qwen3.5",), tls=None):
        self.api_key = api_key
        self.content = content
        self.models = list(models)
        super().__init__(tls)

    ollama_usage_limit = staticmethod(ollama_usage_limit)
    ollama_thinking_only = staticmethod(ollama_thinking_only)

    def reply_content(self, text, **extra):
        """Queue one happy /api/chat reply with this content. Extras go to `message` (thinking, role) or the
        top level (done_reason, eval_count, ...); a None extra removes that field."""
        parts = _split_extra(extra, self.MESSAGE_KEYS)
        self.push("/api/chat", Reply(200, lambda req: _ollama_body(req, text, parts["message"], parts["top"])))

    def chat_requests(self):
        return [r.json for r in self.requests_to("/api/chat")]

    def _known(self, model):
        names = set(self.models) | {m + ":latest" for m in self.models if ":" not in m}
        return model in names

    def default(self, req):
        if req.route == "/api/tags" and req.method == "GET":
            if self.api_key and not _bearer_ok(req, self.api_key):
                return Reply(401, {"error": "unauthorized"})
            return Reply(200, {"models": [
                {"name": m, "model": m, "modified_at": "2026-01-05T00:00:00Z", "size": 1000, "digest": "b1c2d3e4f5a6",
                 "details": {"parent_model": "", "format": "", "family": "", "families": None,
                             "parameter_size": "", "quantization_level": ""}} for m in self.models]})
        if req.route != "/api/chat":
            return Reply(404, "404 page not found")
        if req.method != "POST":
            return Reply(405, "405 method not allowed")
        if self.api_key and not _bearer_ok(req, self.api_key):
            return Reply(401, {"error": "unauthorized"})
        data = req.json
        if not isinstance(data, dict):
            return Reply(400, {"error": "invalid character 'x' looking for beginning of value"})
        model = data.get("model")
        if not model:
            return Reply(400, {"error": "model is required"})
        if not self._known(model):
            return Reply(404, {"error": f'model "{model}" not found, try pulling it first'})
        messages = data.get("messages")
        if not isinstance(messages, list) or not all(isinstance(m, dict) and "role" in m for m in messages):
            return Reply(400, {"error": "invalid message format"})
        body = _ollama_body(req, self.content)
        if data.get("stream", True) is not False:
            return Reply(200, self._ndjson(body), headers={"Content-Type": "application/x-ndjson"})
        return Reply(200, body)

    @staticmethod
    def _ndjson(final):
        content = final["message"]["content"]
        pieces = [content[i:i + 8] for i in range(0, len(content), 8)] or [""]
        lines = []
        for piece in pieces:
            lines.append({"model": final["model"], "created_at": final["created_at"],
                          "message": {"role": "assistant", "content": piece}, "done": False})
        last = dict(final, message={"role": "assistant", "content": ""})
        lines.append(last)
        return "".join(json.dumps(line) + "\n" for line in lines).encode("utf-8")


# ------------------------------------------------------------------------------------------------------
# OpenAI-compatible / OpenCode Go

def _opencode_error(error_type, message, **extra):
    return dict({"type": "error", "error": {"type": error_type, "message": message}}, **extra)


def go_usage_limit(retry_after=3600):
    """OpenCode Go 429 GoUsageLimitError, with retry-after (seconds; None = no header) and metadata."""
    headers = {"retry-after": str(retry_after)} if retry_after is not None else {}
    return Reply(429, _opencode_error("GoUsageLimitError", "Weekly usage limit reached. Resets in 19hr",
                                      metadata={"workspace": "wrk_01FAKE", "limitName": "weekly"}),
                 headers=headers)


def error_envelope_200(error_type="api_error", message="Error from provider (Console Go): Upstream request "
                                                          "failed: Endpoint is unavailable."):
    """HTTP 200 whose body is OpenCode's {"type":"error",...} envelope (pass "GoUsageLimitError" for the
    reported usage-limit variant)."""
    return Reply(200, _opencode_error(error_type, message))


def reasoning_only(content="", reasoning="First I consider the inbox, then the state file, then..."):
    """200 whose budget went to reasoning: content "" (or None), reasoning_content, finish_reason length."""
    def body(req):
        return _openai_body(req, content, message={"reasoning_content": reasoning},
                            choice={"finish_reason": "length"}, opencode=True)
    return Reply(200, body)


def _openai_body(req, content, message=None, choice=None, top=None, opencode=True):
    data = req.json if isinstance(req.json, dict) else {}
    prompt = _tokens(_prompt_text(req))
    completion = _tokens(content or "")
    out = {
        "id": "chatcmpl-" + uuid.uuid4().hex[:12],
        "object": "chat.completion",
        "created": int(time.time()),
        "model": data.get("model", ""),
        "choices": [{"index": 0, "finish_reason": "stop", "logprobs": None,
                     "message": {"role": "assistant", "content": content, "refusal": None}}],
        "usage": {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion},
        "system_fingerprint": None,
    }
    if opencode:
        out["cost"] = "0.00123400"
    _apply(out["choices"][0]["message"], message or {})
    _apply(out["choices"][0], choice or {})
    _apply(out, top or {})
    return out


class FakeOpenAI(FakeServer):
    """OpenAI-compatible chat completions at the root: POST /chat/completions, GET /models.

    opencode=True behaves like OpenCode Go: `cost` in bodies, error envelopes {"type":"error",...}, an
    unknown model is 401 ModelError. require_session=True answers 400 MissingSessionID without
    x-opencode-session.
    """

    MESSAGE_KEYS = ("role", "reasoning_content", "reasoning", "refusal", "tool_calls")
    CHOICE_KEYS = ("finish_reason", "logprobs", "index")

    def __init__(self, api_key=None, content='{"work_done": "ok"}', models=("qwen3.6",), opencode=True,
                 require_session=False, tls=None):
        self.api_key = api_key
        self.content = content
        self.models = list(models)
        self.opencode = opencode
        self.require_session = require_session
        super().__init__(tls)

    go_usage_limit = staticmethod(go_usage_limit)
    error_envelope_200 = staticmethod(error_envelope_200)
    reasoning_only = staticmethod(reasoning_only)

    def reply_content(self, text, **extra):
        """Queue one happy reply with this content. Extras go to the message (reasoning_content, ...), the
        choice (finish_reason) or the top level (usage, cost, ...); a None extra removes that field."""
        parts = _split_extra(extra, self.MESSAGE_KEYS, self.CHOICE_KEYS)
        self.push("/chat/completions", Reply(200, lambda req: _openai_body(
            req, text, parts["message"], parts["choice"], parts["top"], self.opencode)))

    def chat_requests(self):
        return [r.json for r in self.requests_to("/chat/completions")]

    def _error(self, status, opencode_type, message, openai_type, code):
        if self.opencode:
            return Reply(status, _opencode_error(opencode_type, message))
        return Reply(status, {"error": {"message": message, "type": openai_type, "param": None, "code": code}})

    def _auth(self, req):
        if not self.api_key:
            return None
        auth = req.header("Authorization")
        if not auth:
            return self._error(401, "AuthError", "Missing API key.", "invalid_request_error", "invalid_api_key")
        if not _bearer_ok(req, self.api_key):
            return self._error(401, "AuthError", "Invalid API key.", "invalid_request_error", "invalid_api_key")
        return None

    def default(self, req):
        if req.route == "/models" and req.method == "GET":
            return self._auth(req) or Reply(200, {"object": "list", "data": [
                {"id": m, "object": "model", "created": 1767600000, "owned_by": "opencode"} for m in self.models]})
        if req.route != "/chat/completions":
            return self._error(404, "NotFoundError", "Not Found", "invalid_request_error", "not_found")
        if req.method != "POST":
            return self._error(405, "error", "Method Not Allowed", "invalid_request_error", None)
        denied = self._auth(req)
        if denied:
            return denied
        if self.require_session and not req.header("x-opencode-session"):
            return self._error(400, "MissingSessionID", "Missing x-opencode-session header.",
                               "invalid_request_error", None)
        data = req.json
        if not isinstance(data, dict):
            return self._error(400, "error", "Invalid JSON body", "invalid_request_error", None)
        model = data.get("model")
        if model not in self.models:
            if self.opencode:
                return Reply(401, _opencode_error("ModelError", f"Model {model} not supported"))
            return self._error(404, "", f"The model `{model}` does not exist or you do not have access to it.",
                               "invalid_request_error", "model_not_found")
        messages = data.get("messages")
        if not isinstance(messages, list) or not messages or not all(
                isinstance(m, dict) and isinstance(m.get("role"), str) and "content" in m for m in messages):
            return self._error(400, "error", "Invalid 'messages'", "invalid_request_error", None)
        body = _openai_body(req, self.content, opencode=self.opencode)
        if data.get("stream") is True:
            return Reply(200, self._sse(body), headers={"Content-Type": "text/event-stream"})
        return Reply(200, body)

    def _sse(self, body):
        chunks = []
        content = body["choices"][0]["message"]["content"] or ""
        for i in range(0, len(content), 8):
            chunks.append({"id": body["id"], "object": "chat.completion.chunk", "created": body["created"],
                           "model": body["model"], "choices": [{"index": 0, "delta": {"content": content[i:i + 8]},
                                                                "finish_reason": None}]})
        chunks.append({"id": body["id"], "object": "chat.completion.chunk", "created": body["created"],
                       "model": body["model"], "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]})
        if self.opencode:
            chunks.append({"id": body["id"], "object": "chat.completion.chunk", "choices": [], "cost": body["cost"]})
        text = "".join(f"data: {json.dumps(c)}\n\n" for c in chunks) + "data: [DONE]\n\n"
        return text.encode("utf-8")


# ------------------------------------------------------------------------------------------------------
# Telegram

def tg_error(status, description, **parameters):
    """A Bot API failure: {"ok": false, "error_code": status, "description": ...[, "parameters": ...]}."""
    body = {"ok": False, "error_code": status, "description": description}
    if parameters:
        body["parameters"] = parameters
    return Reply(status, body)


def tg_429(retry_after=1):
    return tg_error(429, f"Too Many Requests: retry after {retry_after}", retry_after=retry_after)


def utf16_len(text):
    return len(text.encode("utf-16-le", "surrogatepass")) // 2


TG_PATH_RE = re.compile(r"^/bot([^/]+)/([A-Za-z]+)$")


class FakeTelegram(FakeServer):
    """Bot API at /bot<token>/<method> (method names case-insensitive).

    Scripted replies for a method may be pushed under the full path, "/<method>" or just "<method>"
    (e.g. `push("sendMessage", tg_429())`). `messages` holds every sendMessage body received, delivered
    or not; `texts()` only the delivered ones. `threads`, when given, is the set of valid
    message_thread_id values (1, General, is always refused, as by the real server).
    """

    def __init__(self, token="123456789:AAE-fake-test-token-abcdefghijklmnopq", chat_id=None, threads=None,
                 tls=None):
        self.token = token
        self.chat_id = chat_id
        self.threads = set(threads) if threads is not None else None
        self.messages = []
        self.delivered = []
        self._next_id = 900
        # getUpdates: pending updates (dropped once an offset above them is sent), the sticky allowed_updates,
        # the highest offset ever sent, and the generation of the newest poll (an older one is terminated).
        self.updates = []
        self.allowed_updates = None
        self.confirmed = 0
        self.polls = 0
        self._next_update_id = 500000
        self._poll_gen = 0
        self._changed = threading.Condition()
        self.answers = []
        self.edits = []
        self.deliveries = Counter()  # update_id -> how many times a poll returned it
        super().__init__(tls)

    tg_429 = staticmethod(tg_429)
    tg_error = staticmethod(tg_error)

    def queue_keys(self, route):
        m = TG_PATH_RE.match(route)
        if not m:
            return [route]
        return [route, "/" + m.group(2), m.group(2), m.group(2).lower()]

    def _params(self, req):
        if isinstance(req.json, dict):
            return req.json
        ctype = req.header("Content-Type", "")
        if "x-www-form-urlencoded" in ctype:
            return dict(parse_qsl(req.body.decode("utf-8", "replace")))
        return dict(parse_qsl(urlsplit(req.path).query))

    def on_request(self, req):
        m = TG_PATH_RE.match(req.route)
        if m and m.group(2).lower() == "sendmessage":
            self.messages.append(self._params(req))

    def default(self, req):
        m = TG_PATH_RE.match(req.route)
        if not m:
            return tg_error(404, "Not Found")
        token, method = m.group(1), m.group(2).lower()
        if token != self.token:
            return tg_error(401, "Unauthorized")
        if method == "getme":
            return Reply(200, {"ok": True, "result": self._bot()})
        if method in ("deletewebhook", "setmycommands"):
            return Reply(200, {"ok": True, "result": True})
        if method == "getupdates":
            return self._get_updates(self._params(req))
        if method == "sendmessage":
            return self._send_message(self._params(req))
        if method == "answercallbackquery":
            return self._answer_callback(self._params(req))
        if method == "editmessagetext":
            return self._edit_message(self._params(req))
        return tg_error(404, "Not Found")

    # -- inbound: updates, long polling, button presses --------------------------------------------------

    def add_update(self, **kinds):
        """Queue one update (`message=...`, `callback_query=...`, `edited_message=...`); returns its id."""
        with self._changed:
            self._next_update_id += 1
            update = dict(kinds, update_id=self._next_update_id)
            self.updates.append(update)
            self._changed.notify_all()
        return update["update_id"]

    def user(self, user_id, first_name="Chris", is_bot=False, username=None):
        out = {"id": user_id, "is_bot": is_bot, "first_name": first_name}
        if username:
            out["username"] = username
        return out

    def send_text(self, text, user_id, chat_id=None, thread=None, reply_to=None, first_name="Chris", **extra):
        """Queue a message as a person would type it; `reply_to` is a message dict (e.g. one the bot sent)
        or a message_id of a delivered post. Returns the update_id."""
        with self._lock:
            self._next_id += 1
            message_id = self._next_id
        message = {"message_id": message_id, "from": self.user(user_id, first_name),
                   "chat": {"id": chat_id if chat_id is not None else self.chat_id, "type": "supergroup",
                            "title": "Fake ops", "is_forum": True},
                   "date": int(time.time())}
        if text is not None:
            message["text"] = text
        if thread:
            message["message_thread_id"] = thread
            message["is_topic_message"] = True
        if isinstance(reply_to, int):
            reply_to = self.sent_message(reply_to)
        if reply_to is not None:
            message["reply_to_message"] = reply_to
        message.update(extra)
        return self.add_update(message=message)

    def press(self, data, user_id, message=None, first_name="Chris"):
        """Queue a button press on `message` (a delivered post, or its message_id). Returns the update_id."""
        if isinstance(message, int):
            message = self.sent_message(message)
        query = {"id": uuid.uuid4().hex[:16], "from": self.user(user_id, first_name),
                 "chat_instance": "-42", "data": data}
        if message is not None:
            query["message"] = message
        return self.add_update(callback_query=query)

    def sent_message(self, message_id):
        """The bot's delivered post with this id (as last edited), or None."""
        with self._lock:
            for _, message in self.delivered:
                if message["message_id"] == message_id:
                    return dict(message)
        return None

    def _get_updates(self, params):
        try:
            offset = int(params.get("offset") or 0)
            timeout = float(params.get("timeout") or 0)
            limit = int(params.get("limit") or 100)
        except (TypeError, ValueError):
            return tg_error(400, "Bad Request: wrong parameter type")
        allowed = params.get("allowed_updates")
        if isinstance(allowed, str):
            try:
                allowed = json.loads(allowed)
            except ValueError:
                return tg_error(400, "Bad Request: can't parse allowed updates")
        deadline = time.monotonic() + max(0.0, min(timeout, 50.0))
        with self._changed:
            self.polls += 1
            self._poll_gen += 1
            gen = self._poll_gen
            self._changed.notify_all()  # an older poll still waiting is terminated (it gets 409)
            if allowed is not None:
                self.allowed_updates = list(allowed)
            if offset:
                # Sending an offset confirms every update below it: they are gone for good.
                self.confirmed = max(self.confirmed, offset)
                self.updates = [u for u in self.updates if u["update_id"] >= offset]
            while True:
                if gen != self._poll_gen:
                    return tg_error(409, "Conflict: terminated by other getUpdates request; make sure that only "
                                         "one bot instance is running")
                ready = [u for u in self.updates if self._wanted(u)][:max(1, min(limit, 100))]
                left = deadline - time.monotonic()
                if ready or left <= 0 or self._closing.is_set():
                    for u in ready:
                        self.deliveries[u["update_id"]] += 1
                    return Reply(200, {"ok": True, "result": ready})
                self._changed.wait(min(left, 0.5))

    def _wanted(self, update):
        kinds = [k for k in update if k != "update_id"]
        allowed = self.allowed_updates
        if not allowed:  # None or []: everything but the member/reaction kinds
            return True
        return any(k in allowed for k in kinds)

    def _answer_callback(self, params):
        if not params.get("callback_query_id"):
            return tg_error(400, "Bad Request: query is too old and response timeout expired or query ID is "
                                 "invalid")
        text = params.get("text") or ""
        if utf16_len(text) > 200:
            return tg_error(400, "Bad Request: MESSAGE_TOO_LONG")
        with self._lock:
            self.answers.append(dict(params))
        return Reply(200, {"ok": True, "result": True})

    def _edit_message(self, params):
        text = params.get("text")
        if not isinstance(text, str) or not text.strip():
            return tg_error(400, "Bad Request: message text is empty")
        if utf16_len(text) > 4096:
            return tg_error(400, "Bad Request: message is too long")
        try:
            message_id = int(params.get("message_id"))
        except (TypeError, ValueError):
            return tg_error(400, "Bad Request: message identifier is not specified")
        with self._lock:
            for sent, message in self.delivered:
                if message["message_id"] != message_id or str(message["chat"]["id"]) != str(params.get("chat_id")):
                    continue
                markup = params.get("reply_markup")
                if message["text"] == text and message.get("reply_markup") == markup:
                    return tg_error(400, "Bad Request: message is not modified: specified new message content "
                                         "and reply markup are exactly the same as a current content and reply "
                                         "markup of the message")
                message["text"] = text
                message["edit_date"] = int(time.time())
                if markup:
                    message["reply_markup"] = markup
                else:
                    message.pop("reply_markup", None)
                self.edits.append(dict(params))
                return Reply(200, {"ok": True, "result": dict(message)})
        return tg_error(400, "Bad Request: message to edit not found")

    def close(self):
        super().close()
        with self._changed:
            self._changed.notify_all()  # a parked poll sees the closing flag now, not at its timeout

    @staticmethod
    def _bot():
        return {"id": 123456789, "is_bot": True, "first_name": "Mako", "username": "mako_fake_bot",
                "can_join_groups": True, "can_read_all_group_messages": False, "supports_inline_queries": False}

    def _send_message(self, params):
        chat_id = params.get("chat_id")
        text = params.get("text")
        if chat_id in (None, ""):
            return tg_error(400, "Bad Request: chat_id is empty")
        if self.chat_id is not None and str(chat_id) != str(self.chat_id):
            return tg_error(400, "Bad Request: chat not found")
        if not isinstance(text, str) or not text.strip():
            return tg_error(400, "Bad Request: message text is empty")
        if utf16_len(text) > 4096:
            return tg_error(400, "Bad Request: message is too long")
        thread = params.get("message_thread_id")
        if thread is not None:
            try:
                thread = int(thread)
            except (TypeError, ValueError):
                return tg_error(400, "Bad Request: invalid message thread identifier specified")
            if thread == 1 or (self.threads is not None and thread not in self.threads):
                return tg_error(400, "Bad Request: message thread not found")
        with self._lock:
            self._next_id += 1
            message = {"message_id": self._next_id, "from": self._bot(),
                       "chat": {"id": chat_id, "title": "Fake ops", "type": "supergroup", "is_forum": True},
                       "date": int(time.time()), "text": text}
            if thread:
                message["message_thread_id"] = thread
                message["is_topic_message"] = True
            if params.get("link_preview_options"):
                message["link_preview_options"] = params["link_preview_options"]
            if params.get("reply_markup"):
                message["reply_markup"] = params["reply_markup"]
            self.delivered.append((dict(params), message))
        return Reply(200, {"ok": True, "result": message})

    def texts(self, thread_id=...):
        """Delivered texts in order; with thread_id, only those sent to that thread (None = no thread)."""
        with self._lock:
            out = []
            for params, _ in self.delivered:
                tid = params.get("message_thread_id")
                tid = int(tid) if tid not in (None, "") else None
                if thread_id is ... or tid == thread_id:
                    out.append(params["text"])
            return out


class RawServer:
    """A 127.0.0.1 server that answers every connection with `respond(conn, stop)`: raw bytes, any pace."""

    def __init__(self, respond):
        self.respond = respond
        self.stop = threading.Event()
        self.sock = socket.socket()
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.sock.settimeout(0.2)
        self.port = self.sock.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self.hits = 0
        threading.Thread(target=self._loop, daemon=True).start()

    def _loop(self):
        while not self.stop.is_set():
            try:
                conn, _ = self.sock.accept()
            except OSError:
                continue
            self.hits += 1
            threading.Thread(target=self._one, args=(conn,), daemon=True).start()

    def _one(self, conn):
        try:
            conn.settimeout(5)
            conn.recv(65536)
            self.respond(conn, self.stop)
        except OSError:
            pass
        finally:
            conn.close()

    def close(self):
        self.stop.set()
        self.sock.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def drip(head, body_len=100000, every=0.3):
    """Headers `head` at once (or, with head=None, the headers themselves a byte at a time), then a body
    dripping one byte every `every` seconds until the client goes away."""
    def respond(conn, stop):
        if head is None:
            conn.sendall(b"HTTP/1.1 200 OK\r\n")
            while not stop.wait(every):
                conn.sendall(b"X")
            return
        conn.sendall(head % body_len)
        while not stop.wait(every):
            conn.sendall(b"x")
    return respond


class FakeProxy(RawServer):
    """An HTTP forward proxy on 127.0.0.1: CONNECT tunnels (for https://) and absolute-form requests (for
    http://), each relayed to its target with `Connection: close`. `seen` holds (request line,
    Proxy-Authorization or None) for every request it was asked."""

    def __init__(self):
        self.seen = []
        super().__init__(respond=None)

    def _one(self, conn):
        with conn:
            try:
                self._forward(conn)
            except OSError:  # the target refused or went away: what a real proxy answers
                try:
                    conn.sendall(b"HTTP/1.1 502 Bad Gateway\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
                except OSError:
                    pass

    @staticmethod
    def _head(conn):
        data = b""
        while b"\r\n\r\n" not in data:
            chunk = conn.recv(4096)
            if not chunk:
                return None, b""
            data += chunk
        head, _, rest = data.partition(b"\r\n\r\n")
        return head.decode("latin-1").split("\r\n"), rest

    def _forward(self, conn):
        lines, rest = self._head(conn)
        if not lines:
            return
        auth = next((line.split(":", 1)[1].strip() for line in lines[1:]
                     if line.lower().startswith("proxy-authorization:")), None)
        self.seen.append((lines[0], auth))
        method, target, version = lines[0].split(" ", 2)
        if method == "CONNECT":
            host, _, port = target.rpartition(":")
            with socket.create_connection((host, int(port)), timeout=10) as upstream:
                conn.sendall(b"HTTP/1.1 200 Connection established\r\n\r\n")
                self._relay(conn, upstream, rest)
            return
        parts = urlsplit(target)
        headers = [line for line in lines[1:] if not line.lower().startswith(("proxy-", "connection:"))]
        head = [f"{method} {parts.path or '/'}{'?' + parts.query if parts.query else ''} {version}",
                *headers, "Connection: close"]
        with socket.create_connection((parts.hostname, parts.port or 80), timeout=10) as upstream:
            upstream.sendall(("\r\n".join(head) + "\r\n\r\n").encode("latin-1"))
            self._relay(conn, upstream, rest)

    @staticmethod
    def _relay(client, upstream, first):
        import selectors
        if first:
            upstream.sendall(first)
        sel = selectors.DefaultSelector()
        sel.register(client, selectors.EVENT_READ, upstream)
        sel.register(upstream, selectors.EVENT_READ, client)
        while True:
            events = sel.select(timeout=10)
            if not events:
                return
            for key, _ in events:
                data = key.fileobj.recv(65536)
                if not data:
                    return
                key.data.sendall(data)
