"""Run the actions a tick's reply asks for (§12), or queue them for the operator when they are gated (§13).

`run_action` never raises: every outcome, including a refusal or a crash inside an action, comes back as a
result dict whose strings have been scrubbed of secrets. Subprocesses (shell, git) run in their own process
group with their output going to temporary files rather than pipes, so a command that leaves a background
child behind cannot hold the tick open, and a command past its timeout is killed with all its children.

The shell denylist is a tripwire against the obviously catastrophic, not a sandbox: the agent is root.
"""

import logging
import re
import shlex
import time
import zlib
from dataclasses import dataclass
from urllib.parse import urlsplit

from .approvals import GATED_TYPES, is_gated, spend_problem
from .errors import PathRefused
from .fileio import ensure_dir, read_head
from .ledger import SpendLedger
from .paths import WRITE_MODES
from .net import EncodingRefused, read_body, within
from .redact import clip
from .steering import record_question
from .telegram import resolve_thread
from .text import short, truncate

log = logging.getLogger(__name__)

POST_MAX_CHARS = 16000  # four Telegram messages
MIN_TIME_LEFT_S = 1.0


@dataclass
class ActionContext:
    cfg: object
    policy: object
    redactor: object
    telegram: object
    queue: object
    tick_n: int
    deadline: float
    compaction: bool = False
    # Set when the operator approved the action (approve.py): the gate is passed, the executors of the
    # gated types join the handlers, and a spend past the ceiling was accepted knowingly.
    approved: bool = False
    over_budget: bool = False
    executors: dict = None
    ledger: object = None

    def __post_init__(self):
        if self.ledger is None:
            self.ledger = SpendLedger(self.cfg, self.redactor)


class ActionFailed(Exception):
    """An action that cannot or may not run; becomes an error or refused result."""

    def __init__(self, message, status="error", **fields):
        super().__init__(message)
        self.status = status
        self.fields = fields


# -- results -----------------------------------------------------------------------------------------------

def identity(action):
    """The fields that say which action a failed result belongs to."""
    out = {}
    for key in ("cmd", "url", "path", "thread"):
        value = action.get(key) if isinstance(action, dict) else None
        if isinstance(value, (str, int)) and not isinstance(value, bool):
            out[key] = value
    return out


def _failure(kind, message, status, action, **fields):
    verb = "refused" if status == "refused" else "failed"
    return {"type": kind, "ok": False, "status": status, "summary": short(f"{kind} {verb}: {message}"),
            "error": message, **identity(action), **fields}


def run_action(ctx, action):
    """Run (or queue) one action and return its result; never raises."""
    kind = action.get("type") if isinstance(action, dict) else None
    kind = kind if isinstance(kind, str) and kind.strip() else "?"
    try:
        result = _dispatch(ctx, action, kind)
    except ActionFailed as e:
        result = _failure(kind, str(e), e.status, action, **e.fields)
    except Exception as e:  # an action must never take the tick down with it
        log.warning("action %s crashed: %s", kind, ctx.redactor.text(repr(e)))
        result = _failure(kind, f"{e.__class__.__name__}: {e}", "error", action)
    return ctx.redactor.obj(result)


def _dispatch(ctx, action, kind):
    if not isinstance(action, dict):
        raise ActionFailed("an action must be a JSON object")
    if kind == "?":
        raise ActionFailed("an action needs a non-empty string 'type'")
    if ctx.compaction:
        raise ActionFailed("a compaction tick runs no actions", "refused")
    spend = action.get("spend")
    if spend is not None:
        _check_spend(spend, "spend.")
    if kind == "spend":
        _check_spend(action, "")
    if not ctx.approved and is_gated(action, ctx.cfg.tick.approval_threshold_pence):
        qid, new = ctx.queue.enqueue_once(action, ctx.tick_n)
        if not new:
            return {"type": kind, "ok": True, "status": "waiting", "id": qid,
                    "summary": short(f"{kind} already waiting as {qid} (not queued again)"), **identity(action)}
        return {"type": kind, "ok": True, "status": "queued", "id": qid,
                "summary": short(f"{kind} queued as {qid} for approval"), **identity(action)}
    if kind == "spend":
        return _record_spend(ctx, kind, action["amount_pence"], action["reason"])
    handler = HANDLERS.get(kind) or (ctx.executors or {}).get(kind)
    if handler is None:
        known = ", ".join(sorted(HANDLERS) + ["spend"] + list(GATED_TYPES))
        raise ActionFailed(f"unknown action type {short(kind, 60)!r} (known: {known})")
    if spend is not None and not ctx.over_budget:
        fits, message = ctx.ledger.check_spend(spend["amount_pence"])
        if not fits:
            raise ActionFailed(message, "refused", amount_pence=spend["amount_pence"])
    result = handler(ctx, action)
    # The spend counts once the action was attempted; one refused or malformed never got that far.
    if spend is not None and result["status"] != "refused":
        result["spend"] = _record_spend(ctx, kind, spend["amount_pence"], spend["reason"])["summary"]
    return result


def _check_spend(spend, prefix):
    problem = spend_problem(spend, prefix)
    if problem:
        raise ActionFailed(problem)


def _record_spend(ctx, kind, amount, reason):
    recorded, message = ctx.ledger.record_spend(amount, reason, ctx.tick_n, over_budget=ctx.over_budget)
    if not recorded:
        return _failure(kind, message, "refused", {}, amount_pence=amount)
    return {"type": kind, "ok": True, "status": "ok", "amount_pence": amount,
            "summary": short(f"spend {message}: {reason}")}


# -- helpers shared by the handlers ------------------------------------------------------------------------

def _text_arg(action, key, allow_blank=False):
    value = action.get(key)
    if not isinstance(value, str) or (not allow_blank and not value.strip()):
        raise ActionFailed(f"'{key}' must be a non-empty string")
    # Neither can cross into argv, a URL or a file name: refuse here rather than crash in the OS call.
    if "\x00" in value:
        raise ActionFailed(f"'{key}' contains a NUL byte", "refused")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise ActionFailed(f"'{key}' is not valid text (a lone surrogate)", "refused") from None
    return value


def _time_left(ctx, cap):
    left = ctx.deadline - time.time()
    if left < MIN_TIME_LEFT_S:
        raise ActionFailed("not run: no time left before the tick deadline")
    return min(float(cap), left)



def _process_summary(label, run, timeout):
    if run["timed_out"]:
        return short(f"{label} → killed after {timeout:.0f}s timeout")
    first = (run["stdout"].strip() or run["stderr"].strip()).splitlines()
    tail = f": {first[0]}" if first else ""
    return short(f"{label} → exit {run['exit_code']}{tail}")


# -- shell -------------------------------------------------------------------------------------------------

def do_shell(ctx, action):
    # Imported here: a tick whose reply runs no command never pays for subprocess and the lexer.
    from .children import child_env, run_process
    from .denylist import denylist_match
    cmd = _text_arg(action, "cmd")
    entry = denylist_match(cmd, ctx.cfg.guardrails.shell_denylist_substrings)
    if entry is not None:
        raise ActionFailed(f"matches denylist entry {entry!r}", "refused", cmd=cmd, denylist_entry=entry)
    timeout = _time_left(ctx, ctx.cfg.tick.shell_timeout_s)
    workdir = ensure_dir(ctx.cfg.paths.workdir)
    run = run_process(["/bin/sh", "-c", cmd], workdir, child_env(), timeout,
                      ctx.cfg.tick.shell_output_max_bytes, ctx.redactor)
    ok = run["exit_code"] == 0 and not run["timed_out"]
    return {"type": "shell", "ok": ok, "status": "ok" if ok else "error", "cmd": cmd, **run,
            "summary": _process_summary(f"$ {short(cmd, 100)}", run, timeout)}



# -- http_get ----------------------------------------------------------------------------------------------

CHARSET_RE = re.compile(r"charset=[\"']?([A-Za-z0-9._:-]+)", re.I)


def _charset(content_type):
    m = CHARSET_RE.search(content_type or "")
    if m:
        try:
            "".encode(m.group(1))
            return m.group(1)
        except LookupError:
            pass
    return "utf-8"


def http_url(action, kind):
    """The action's http(s) URL, or ActionFailed."""
    url = _text_arg(action, "url").strip()
    try:
        parts = urlsplit(url)
    except ValueError as e:
        raise ActionFailed(f"not a URL: {e}", url=url) from None
    if parts.scheme.lower() not in ("http", "https") or not parts.netloc:
        raise ActionFailed(f"{kind} takes an http:// or https:// URL", url=url)
    return url


def do_http_get(ctx, action):
    url = http_url(action, "http_get")
    status, final_url, content_type, text, cut = bounded_request(ctx, "GET", url)
    ok = status < 400
    return {"type": "http_get", "ok": ok, "status": "ok" if ok else "error", "url": url,
            "http_status": status, "final_url": final_url, "content_type": content_type, "body": text,
            "truncated": cut,
            "summary": short(f"GET {short(url, 100)} → {status} {content_type.split(';')[0]}, "
                             f"{len(text)} chars{' (truncated)' if cut else ''}")}


def bounded_request(ctx, method, url, **kwargs):
    """One HTTP request within `http_timeout_s` (and the run's deadline), reading at most
    `http_response_max_bytes` of the body: (status, final URL, content type, scrubbed text, truncated?)."""
    import requests  # here, not at the top: only a tick that fetches a page pays for loading it
    import urllib3
    timeout = _time_left(ctx, ctx.cfg.tick.http_timeout_s)
    limit = ctx.cfg.tick.http_response_max_bytes

    def fetch():
        # identity: the body is decoded here, bounded, whatever urllib3 would do with a gzip bomb.
        headers = {"User-Agent": "mako-zero", "Accept-Encoding": "identity", **kwargs.pop("headers", {})}
        with requests.request(method, url, stream=True, timeout=(min(10.0, timeout), timeout), headers=headers,
                              **kwargs) as resp:
            body, complete = read_body(resp, limit, time.monotonic() + timeout)
            return resp.status_code, resp.url, resp.headers.get("Content-Type", ""), body, complete

    try:
        # Wall time, not a read timeout: a server sending a byte every second would reset that for ever.
        status, final_url, content_type, body, complete = within(timeout, fetch)
    except TimeoutError:
        raise ActionFailed(f"no complete answer within {timeout:.0f}s", url=url) from None
    except (EncodingRefused, zlib.error) as e:
        raise ActionFailed(f"body refused: {e}", url=url) from None
    except (requests.RequestException, urllib3.exceptions.HTTPError, OSError) as e:
        raise ActionFailed(f"{e.__class__.__name__}: {e}", url=url) from None
    text, cut = clip(ctx.redactor, body[:limit], limit, len(body) if complete else None, _charset(content_type))
    return status, final_url, content_type, text, cut


# -- files -------------------------------------------------------------------------------------------------

def do_write_file(ctx, action):
    path = _text_arg(action, "path")
    content = action.get("content")
    if not isinstance(content, str):
        raise ActionFailed("'content' must be a string")
    mode = action.get("mode") or "write"
    if mode not in WRITE_MODES:
        raise ActionFailed(f"'mode' must be one of {', '.join(WRITE_MODES)}, got {short(mode, 40)!r}")
    try:
        written = ctx.policy.write(path, content, mode)
    except PathRefused as e:
        raise ActionFailed(str(e), "refused") from None
    verb = "appended" if mode == "append" else "wrote"
    return {"type": "write_file", "ok": True, "status": "ok", "path": path, "mode": mode, "bytes": written,
            "summary": short(f"{verb} {written} bytes to {path}")}


def do_read_file(ctx, action):
    path = _text_arg(action, "path")
    try:
        target = ctx.policy.check_read(path)
    except PathRefused as e:
        raise ActionFailed(str(e), "refused") from None
    limit = ctx.cfg.tick.http_response_max_bytes
    data, _ = read_head(target, limit)
    total = max(target.stat().st_size, len(data))
    text, cut = clip(ctx.redactor, data, limit, total)
    return {"type": "read_file", "ok": True, "status": "ok", "path": path, "content": text, "truncated": cut,
            "summary": short(f"read {path} ({total} bytes{', truncated' if cut else ''})")}


# -- git ---------------------------------------------------------------------------------------------------


def do_git(ctx, action):
    from .children import run_process
    from .gitpolicy import git_argv, git_env, git_refusal, repo_refusal
    cmd = _text_arg(action, "cmd")
    try:
        args = shlex.split(cmd)
    except ValueError as e:
        raise ActionFailed(f"cannot split the git command: {e}", cmd=cmd) from None
    if args and args[0] == "git":
        args = args[1:]
    if not args:
        raise ActionFailed("empty git command", cmd=cmd)
    workdir = ensure_dir(ctx.cfg.paths.workdir)
    problem = git_refusal(args, workdir)
    if problem:
        raise ActionFailed(problem, "refused", cmd=cmd)
    env = git_env(workdir)
    problem = repo_refusal(args, workdir, env)
    if problem:
        raise ActionFailed(problem, "refused", cmd=cmd)
    timeout = _time_left(ctx, ctx.cfg.tick.shell_timeout_s)
    run = run_process(git_argv(args), workdir, env, timeout, ctx.cfg.tick.shell_output_max_bytes,
                      ctx.redactor)
    ok = run["exit_code"] == 0 and not run["timed_out"]
    return {"type": "git", "ok": ok, "status": "ok" if ok else "error", "cmd": cmd,
            "exit_code": run["exit_code"], "stdout": run["stdout"], "stderr": run["stderr"],
            "timed_out": run["timed_out"], "stdout_truncated": run["stdout_truncated"],
            "stderr_truncated": run["stderr_truncated"],
            "summary": _process_summary(f"git {short(' '.join(args), 100)}", run, timeout)}


# -- telegram ----------------------------------------------------------------------------------------------

def _post_text(ctx, action):
    """The text to post, scrubbed and cut with a visible marker: a runaway reply must not become thousands
    of messages."""
    return truncate(ctx.redactor.text(_text_arg(action, "text")), POST_MAX_CHARS)


def _telegram_off(kind, action):
    """With no bot token there is nowhere to post: a supported setup, so the post is skipped, not failed."""
    return {"type": kind, "ok": False, "status": "skipped", "summary": "skipped (Telegram off)",
            **identity(action)}


def do_telegram_post(ctx, action):
    text = _post_text(ctx, action)
    thread = action.get("thread")
    thread = "log" if thread is None else thread
    thread_id = resolve_thread(ctx.cfg.telegram, thread)
    if thread_id is None:
        raise ActionFailed(f"unknown thread {short(repr(thread), 60)} (use log, requests, approvals, digest "
                           "or a thread number)")
    if not ctx.cfg.telegram.enabled:
        return _telegram_off("telegram_post", action)
    delivered = bool(ctx.telegram.send(text, thread=thread_id))
    return {"type": "telegram_post", "ok": delivered, "status": "ok" if delivered else "error",
            "thread": thread, "delivered": delivered,
            "summary": short(f"posted to {thread}" if delivered else
                             f"not delivered to {thread} (Telegram failing)")}


def do_ask_chris(ctx, action):
    text = _post_text(ctx, action)
    if not ctx.cfg.telegram.enabled:
        return _telegram_off("ask_chris", action)
    thread = ctx.cfg.telegram.first_thread("requests", "log")
    delivered = bool(ctx.telegram.send(text, thread=thread or "log"))
    if delivered:
        try:  # so an answer from the chat is marked as one (§20); a lost record costs only that mark
            record_question(ctx.cfg.paths, ctx.telegram.last_message_id)
        except OSError as e:
            log.warning("could not record the question's message id: %s", e)
    return {"type": "ask_chris", "ok": delivered, "status": "ok" if delivered else "error",
            "delivered": delivered,
            "summary": "asked Chris (requests thread)" if delivered else
                       "question not delivered (Telegram failing)"}


HANDLERS = {
    "shell": do_shell,
    "http_get": do_http_get,
    "write_file": do_write_file,
    "read_file": do_read_file,
    "git": do_git,
    "telegram_post": do_telegram_post,
    "ask_chris": do_ask_chris,
}
