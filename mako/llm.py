"""Call the configured LLM providers in order (primary, then fallback) and return the first usable reply.

Each provider is tried at most once per call, within the caller's deadline. Every attempt, failed or not,
becomes a redacted record for the payload's `llm_attempts`. A usage-limit 429, or a second timeout in a row,
puts that provider on a cool-down persisted in state/.mako/cooldowns.json, so later runs skip it until the
limit resets (or `llm.timeout_cooldown_s` has passed) instead of waiting on a dead endpoint every time. The
time is shared so the fallback always gets its turn.
Wire formats and quirks: protocols.md §1 (Ollama), §2 and §2.5 (OpenAI-compatible, OpenCode Go).
"""

import json
import logging
import time
from dataclasses import dataclass, field
from email.utils import parsedate_to_datetime

from . import __version__
from .cooldowns import TIMEOUTS_FOR_COOLDOWN, Cooldowns
from .errors import AllProvidersFailed, ProviderError
from .fileio import atomic_write, read_text
from .logs import iso_at
from .net import Connection, EncodingRefused, within
from .text import truncate

log = logging.getLogger(__name__)

USER_AGENT = f"mako-zero/{__version__}"
CONNECT_TIMEOUT_S = 10.0
# Left unspent before the deadline so the run can still record itself after a provider times out.
RESERVE_S = 1.0
MIN_ATTEMPT_S = 2.0
SPLIT_SLACK_S = 0.5
DEFAULT_COOLDOWN_S = 15 * 60
MAX_COOLDOWN_S = 7 * 24 * 3600
RECORD_BODY_MAX = 64 * 1024
MAX_BODY_BYTES = 16 * 1024 * 1024
SESSION_FILE = "opencode-session"


@dataclass
class LLMResult:
    slot: str
    type: str
    model: str
    content: str
    attempts: list = field(default_factory=list)
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    wall_s: float = 0.0


def opencode_session_id(folder):
    """A stable x-opencode-session value: OpenCode routes a session to one upstream (and its prompt cache),
    and newer gateways refuse requests without it."""
    import uuid  # here, not at the top: only OpenAI-compatible calls need it, and it pulls in `platform`

    path = folder / SESSION_FILE
    value = read_text(path, "").strip()
    try:
        return str(uuid.UUID(value))
    except ValueError:
        value = str(uuid.uuid4())
        atomic_write(path, value + "\n")
        return value


def build_request(provider, system, user, session_id=None):
    """(url, headers, body) for one chat call; system and user must already be scrubbed."""
    headers = {"Content-Type": "application/json", "Accept": "application/json", "User-Agent": USER_AGENT,
               # An identity body lets the reader enforce the deadline on raw bytes.
               "Accept-Encoding": "identity"}
    if provider.api_key:
        headers["Authorization"] = f"Bearer {provider.api_key}"
    messages = [{"role": "system", "content": system}, {"role": "user", "content": user}]
    if provider.type == "ollama":
        # think:false because thinking tokens count against num_predict and can leave content empty.
        body = {"model": provider.model, "messages": messages, "stream": False, "think": False,
                "options": {"num_predict": provider.num_predict}}
        return f"{provider.base_url}/api/chat", headers, body
    # max_tokens, not max_completion_tokens: OpenCode's converter silently drops the newer name.
    body = {"model": provider.model, "messages": messages, "max_tokens": provider.num_predict, "stream": False}
    if session_id:
        headers["x-opencode-session"] = session_id
    return f"{provider.base_url}/chat/completions", headers, body


def _post(url, headers, body, read_timeout):
    """(status, body bytes, response headers); transport failures become ProviderError.

    The whole exchange is bounded by `read_timeout` of wall time: a provider dripping its headers or its
    body must not keep the fallback from its turn.
    """
    from http.client import HTTPException
    connect = min(CONNECT_TIMEOUT_S, read_timeout)
    try:
        conn = Connection(url)
    except ValueError as e:
        raise ProviderError("connection", f"bad base_url: {e}") from None

    def exchange():
        resp = conn.request("POST", url, json.dumps(body).encode("utf-8"), headers, connect, read_timeout,
                            MAX_BODY_BYTES)
        if not resp.complete:
            raise ProviderError("bad_json", f"reply larger than {MAX_BODY_BYTES // (1024 * 1024)} MB")
        return resp.status, resp.body, resp.headers

    try:
        return within(read_timeout, exchange)
    except TimeoutError:  # the wall-clock limit, or a socket timeout while connecting or reading
        raise ProviderError("timeout", f"no complete reply within {read_timeout:.1f}s") from None
    except EncodingRefused as e:  # a compressed body that does not decode is refused too
        raise ProviderError("bad_json", f"reply body refused: {e}") from None
    except (HTTPException, OSError, ValueError) as e:
        raise ProviderError("connection", f"{type(e).__name__}: {e}") from None
    finally:
        conn.close()


def _json(text):
    try:
        return json.loads(text)
    except ValueError:
        return None


def _error_text(data, text):
    """The human part of an error body, whatever its shape."""
    if isinstance(data, dict):
        err = data.get("error")
        if isinstance(err, dict):
            return " ".join(str(err.get(k)) for k in ("type", "code", "message") if err.get(k))
        if err:
            return str(err)
        if data.get("message"):
            return str(data["message"])
    return " ".join(text.split())[:300]


def _is_usage_limit(data, text):
    """Ollama's "... usage limit ..." text, OpenCode's *UsageLimitError, OpenAI's insufficient_quota."""
    if "usage limit" in text.lower():
        return True
    err = data.get("error") if isinstance(data, dict) else None
    if isinstance(err, dict):
        kinds = {str(err.get("type") or ""), str(err.get("code") or "")}
        return any(k.endswith("UsageLimitError") or k == "insufficient_quota" for k in kinds)
    return False


def retry_after_s(headers, now):
    """Seconds from a retry-after header (seconds or an HTTP date); None when absent or unreadable."""
    value = (headers or {}).get("retry-after")
    if not value:
        ms = (headers or {}).get("retry-after-ms")
        try:
            return float(ms) / 1000 if ms else None
        except ValueError:
            return None
    try:
        return float(value)
    except ValueError:
        pass
    try:
        return parsedate_to_datetime(value).timestamp() - now
    except (TypeError, ValueError, IndexError):
        return None


def _ndjson(text):
    """A streamed Ollama reply folded into one object, for servers that ignore stream:false."""
    lines = [line for line in text.split("\n") if line.strip()]  # a string may hold U+2028 or U+0085
    if len(lines) < 2:
        return None
    content, thinking, last = [], [], None
    for line in lines:
        item = _json(line)
        if not isinstance(item, dict):
            return None
        if item.get("error"):
            return item
        message = item.get("message") or {}
        content.append(str(message.get("content") or ""))
        thinking.append(str(message.get("thinking") or ""))
        last = item
    folded = dict(last)
    folded["message"] = {"role": "assistant", "content": "".join(content), "thinking": "".join(thinking)}
    return folded


def _int(value):
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _text(value):
    """Message content as a string: OpenAI-style content may also be a list of {type, text} parts."""
    if isinstance(value, str):
        return value
    if isinstance(value, list):
        return "".join(p.get("text", "") for p in value if isinstance(p, dict) and isinstance(p.get("text"), str))
    return ""


def parse_reply(provider_type, status, text, headers, now):
    """(content, prompt_tokens, completion_tokens, finish_reason) from a reply, or ProviderError."""
    data = _json(text)
    if status != 200:
        if status == 429 and _is_usage_limit(data, text):
            raise ProviderError("usage_limit", f"HTTP 429 usage limit: {_error_text(data, text)}", status,
                                usage_limit=True, retry_after=retry_after_s(headers, now))
        raise ProviderError(f"http_{status}", f"HTTP {status}: {_error_text(data, text)}", status)
    if data is None and provider_type == "ollama":
        data = _ndjson(text)
    if data is None:
        what = "an empty body" if not text.strip() else "a body that is not JSON"
        raise ProviderError("bad_json", f"HTTP 200 with {what}: {' '.join(text.split())[:200]}", status)
    if not isinstance(data, dict):
        raise ProviderError("bad_json", f"HTTP 200 with JSON that is not an object ({type(data).__name__})", status)
    # OpenCode has been seen answering 200 with its error envelope (protocols.md §2.5).
    if data.get("type") == "error" or data.get("error"):
        if _is_usage_limit(data, text):
            raise ProviderError("usage_limit", f"HTTP 200 usage-limit envelope: {_error_text(data, text)}",
                                status, usage_limit=True, retry_after=retry_after_s(headers, now))
        raise ProviderError("error_envelope", f"HTTP 200 error envelope: {_error_text(data, text)}", status)
    if provider_type == "ollama":
        message = data.get("message") if isinstance(data.get("message"), dict) else {}
        content, thinking = _text(message.get("content")), _text(message.get("thinking"))
        finish = data.get("done_reason")
        prompt, completion = _int(data.get("prompt_eval_count")), _int(data.get("eval_count"))
    else:
        choices = data.get("choices")
        choice = choices[0] if isinstance(choices, list) and choices and isinstance(choices[0], dict) else {}
        message = choice.get("message") if isinstance(choice.get("message"), dict) else {}
        content = _text(message.get("content"))
        thinking = _text(message.get("reasoning_content")) or _text(message.get("reasoning"))
        finish = choice.get("finish_reason")
        usage = data.get("usage") if isinstance(data.get("usage"), dict) else {}
        prompt, completion = _int(usage.get("prompt_tokens")), _int(usage.get("completion_tokens"))
        if not choice:
            raise ProviderError("empty", "HTTP 200 without choices", status)
    if not content.strip():
        if thinking.strip() or finish == "length":
            raise ProviderError("thinking_only", f"empty content: the output budget went to thinking "
                                                 f"(finish {finish}, {len(thinking)} chars of thinking)", status)
        raise ProviderError("empty", f"HTTP 200 with empty content (finish {finish})", status)
    return content, prompt, completion, finish


def _record(provider, redactor, url=None, request=None):
    return {"slot": provider.name, "type": provider.type, "model": provider.model,
            "url": redactor.text(url) if url else None, "request": request, "status": None,
            "response_body": None, "error": None, "kind": None, "finish_reason": None, "wall_s": 0.0,
            "ok": False, "cooldown_until": None}


def _attempt(provider, system, user, read_timeout, redactor, cooldowns, session_id, clock):
    """One provider call: (record, (content, prompt_tokens, completion_tokens) or None)."""
    url, headers, body = build_request(provider, system, user, session_id)
    rec = _record(provider, redactor, url, {"headers": redactor.headers(headers), "body": redactor.obj(body)})
    start = time.monotonic()
    result = None
    try:
        status, raw, resp_headers = _post(url, headers, body, read_timeout)
        rec["status"] = status
        text = raw.decode("utf-8", "replace")
        rec["response_body"] = truncate(redactor.text(text), RECORD_BODY_MAX)
        content, prompt, completion, finish = parse_reply(provider.type, status, text, resp_headers, clock())
        rec["finish_reason"] = finish if isinstance(finish, str) else None
        rec["ok"] = True
        result = (redactor.text(content), prompt, completion)
    except ProviderError as e:
        rec["kind"] = e.kind
        rec["error"] = redactor.text(str(e))[:2000]
        if e.usage_limit:
            wait = e.retry_after if e.retry_after and e.retry_after > 0 else DEFAULT_COOLDOWN_S
            until = clock() + min(wait, MAX_COOLDOWN_S)
            cooldowns.set(provider, until, rec["error"])
            rec["cooldown_until"] = iso_at(until)
    rec["wall_s"] = round(time.monotonic() - start, 3)
    return rec, result


def _skipped(provider, redactor, kind, error):
    rec = _record(provider, redactor)
    rec.update(kind=kind, error=error)
    return rec


def _plan(providers, cooldowns):
    """(provider, cooling-until or None, try it?) in slot order. When every provider is cooling down, the
    one whose cool-down ends first is still tried: a stale limit must not stop the agent for good."""
    cooling = [(p, cooldowns.until(p)) for p in providers]
    if cooling and all(until for _, until in cooling):
        first = min(cooling, key=lambda pair: pair[1])[0]
        return [(p, until, p is first) for p, until in cooling]
    return [(p, until, until is None) for p, until in cooling]


def _attempt_budget(plan, i, remaining):
    """Seconds provider i may wait: its timeout, less what the next provider to try needs (§9).

    A primary that never answers must not starve the fallback: it leaves the next one its own timeout_s,
    or half the time left when that is less."""
    provider = plan[i][0]
    budget = min(float(provider.timeout_s), remaining)
    later = [p for p, _, go in plan[i + 1:] if go]
    if later:
        # The slack covers what the attempt costs beyond its read timeout (connecting, closing).
        keep = min(max(float(later[0].timeout_s), MIN_ATTEMPT_S) + SPLIT_SLACK_S, remaining / 2)
        budget = min(budget, remaining - keep)
    return budget


def call_providers(cfg, system_prompt, user_message, deadline, redactor, clock=time.time):
    """The first usable reply from cfg.providers, in order, each tried once before the `deadline`
    (an absolute clock() time). Raises AllProvidersFailed (with .attempts) when none gives one."""
    providers = cfg.providers
    cooldowns = Cooldowns(cfg.paths.private, clock)
    system, user = redactor.text(system_prompt), redactor.text(user_message)
    attempts = []
    wall = 0.0
    plan = _plan(providers, cooldowns)
    for i, (provider, cooling_until, go) in enumerate(plan):
        label = f"{provider.name} {provider.type}/{provider.model}"
        if not go:
            attempts.append(_skipped(provider, redactor, "cooling_down",
                                     f"on cool-down until {iso_at(cooling_until)}"))
            log.info("%s: skipped, on cool-down until %s", label, iso_at(cooling_until))
            continue
        remaining = deadline - clock() - RESERVE_S
        if remaining < MIN_ATTEMPT_S:
            attempts.append(_skipped(provider, redactor, "timeout",
                                     f"not started: {max(remaining, 0):.1f}s left before the run deadline"))
            log.warning("%s: not tried, the run deadline is too close", label)
            continue
        session_id = opencode_session_id(cfg.paths.private) if provider.type == "openai_compat" else None
        rec, result = _attempt(provider, system, user, _attempt_budget(plan, i, remaining),
                               redactor, cooldowns, session_id, clock)
        attempts.append(rec)
        wall += rec["wall_s"]
        if result is None:
            # One short line: the whole error text is in the payload's llm_attempts.
            log.warning("%s: failed (%s) in %.1fs", label, rec["kind"], rec["wall_s"])
            if rec["kind"] == "timeout":
                until = cooldowns.timed_out(provider, cfg.llm.timeout_cooldown_s)
                if until:
                    rec["cooldown_until"] = iso_at(until)
                    log.warning("%s: timed out %d times in a row; on cool-down until %s", label,
                                TIMEOUTS_FOR_COOLDOWN, iso_at(until))
            elif not rec["cooldown_until"]:
                cooldowns.end_timeout_row(provider)  # a failure that cost no waiting breaks the row
            continue
        log.info("%s: ok in %.1fs", label, rec["wall_s"])
        cooldowns.clear(provider)
        content, prompt, completion = result
        return LLMResult(slot=provider.name, type=provider.type, model=provider.model, content=content,
                         attempts=attempts, prompt_tokens=prompt, completion_tokens=completion,
                         wall_s=round(wall, 3))
    if not providers:
        summary = "no provider configured"
    else:
        summary = "; ".join(f"{a['slot']}: {a['kind']}" for a in attempts)
    err = AllProvidersFailed(redactor.text(f"all providers failed ({summary})"))
    err.attempts = attempts
    err.wall_s = round(wall, 3)
    raise err
