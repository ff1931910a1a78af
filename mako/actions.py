"""Run the actions a tick's reply asks for (§12), or queue them for the operator when they are gated (§13).

`run_action` never raises: every outcome, including a refusal or a crash inside an action, comes back as a
result dict whose strings have been scrubbed of secrets. Subprocesses (shell, git) run in their own process
group with their output going to temporary files rather than pipes, so a command that leaves a background
child behind cannot hold the tick open, and a command past its timeout is killed with all its children.

The shell denylist is a tripwire against the obviously catastrophic, not a sandbox: the agent is root.
"""

import logging
import os
import posixpath
import re
import shlex
import signal
import subprocess
import tempfile
import time
from dataclasses import dataclass
from fnmatch import fnmatch
from urllib.parse import urlsplit

import requests

from .approvals import valid_pence
from .config import SECRET_ENV
from .errors import PathRefused
from .fileio import ensure_dir, read_head
from .paths import WRITE_MODES
from .report import truncate
from .telegram import resolve_thread

log = logging.getLogger(__name__)

GATED_TYPES = ("email_send", "cf_api", "http_post", "http_put", "http_delete")
WRITE_MAX_BYTES = 1024 * 1024
# Output is scrubbed before it is cut, so a secret straddling the cut is still caught; read this much past
# the cap to give the scrubber the whole secret.
SCRUB_MARGIN = 64 * 1024
SUMMARY_MAX = 200
POST_MAX_CHARS = 16000  # four Telegram messages
MIN_TIME_LEFT_S = 1.0
SECRET_ENV_NAMES = frozenset(SECRET_ENV.values())


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


class ActionFailed(Exception):
    """An action that cannot or may not run; becomes an error or refused result."""

    def __init__(self, message, status="error", **fields):
        super().__init__(message)
        self.status = status
        self.fields = fields


# -- results -----------------------------------------------------------------------------------------------

def short(text, limit=SUMMARY_MAX):
    text = " ".join(str(text).split())
    return text if len(text) <= limit else text[:limit - 1] + "…"


def _identity(action):
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
            "error": message, **_identity(action), **fields}


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
    if is_gated(action, ctx.cfg.tick.approval_threshold_pence):
        qid = ctx.queue.enqueue(action, ctx.tick_n)
        return {"type": kind, "ok": True, "status": "queued", "id": qid,
                "summary": short(f"{kind} queued as {qid} for approval"), **_identity(action)}
    if kind == "spend":
        return _record_spend(ctx, kind, action["amount_pence"], action["reason"])
    handler = HANDLERS.get(kind)
    if handler is None:
        known = ", ".join(sorted(HANDLERS) + ["spend"] + list(GATED_TYPES))
        raise ActionFailed(f"unknown action type {short(kind, 60)!r} (known: {known})")
    if spend is not None:
        fits, message = ctx.queue.check_spend(spend["amount_pence"])
        if not fits:
            raise ActionFailed(message, "refused", amount_pence=spend["amount_pence"])
    result = handler(ctx, action)
    # The spend counts once the action was attempted; one refused or malformed never got that far.
    if spend is not None and result["status"] != "refused":
        result["spend"] = _record_spend(ctx, kind, spend["amount_pence"], spend["reason"])["summary"]
    return result


def _check_spend(spend, prefix):
    if not isinstance(spend, dict):
        raise ActionFailed(f"{prefix or 'spend '}must be an object {{amount_pence, reason}}")
    if not valid_pence(spend.get("amount_pence")):
        raise ActionFailed(f"{prefix}amount_pence must be a non-negative integer (pence)")
    reason = spend.get("reason")
    if not isinstance(reason, str) or not reason.strip():
        raise ActionFailed(f"{prefix}reason must be a non-empty string")


def _record_spend(ctx, kind, amount, reason):
    recorded, message = ctx.queue.record_spend(amount, reason, ctx.tick_n)
    if not recorded:
        return _failure(kind, message, "refused", {}, amount_pence=amount)
    return {"type": kind, "ok": True, "status": "ok", "amount_pence": amount,
            "summary": short(f"spend {message}: {reason}")}


def is_gated(action, threshold_pence):
    """Whether an action must wait for the operator instead of running now (§13)."""
    if not isinstance(action, dict):
        return False
    # Anything but absent/false/null asks for approval: a model writing "true" or 1 means it too.
    if action.get("needs_approval") not in (None, False):
        return True
    kind = action.get("type")
    if kind in GATED_TYPES:
        return True

    def over(amount):
        return valid_pence(amount) and amount > threshold_pence

    if kind == "spend" and over(action.get("amount_pence")):
        return True
    spend = action.get("spend")
    return isinstance(spend, dict) and over(spend.get("amount_pence"))


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


def _drop_partial_secret(text, secrets):
    """Cut a secret's leading fragment off the end of text that was read only in part."""
    for secret in secrets:
        for k in range(min(len(secret) - 1, len(text)), 0, -1):
            if text.endswith(secret[:k]):
                text = text[:-k]
                break
    return text


def clip(redactor, data, limit, total=None, encoding="utf-8"):
    """Decode, scrub, then cut to `limit` bytes with a visible marker: (text, truncated).

    `data` is what was read; `total` the full size when known (None: there was more, size unknown).
    """
    partial = total is None or total > len(data)
    text = redactor.text(data.decode(encoding, "replace"))
    if partial:
        text = _drop_partial_secret(text, getattr(redactor, "secrets", ()))
    raw = text.encode("utf-8", "surrogatepass")
    if len(raw) <= limit and not partial:
        return text, False
    kept = raw[:limit].decode("utf-8", "ignore")
    if total is None:
        return kept + f"…[truncated: more than {limit} bytes]", True
    omitted = total - len(data) + len(raw) - len(kept.encode("utf-8", "surrogatepass"))
    return kept + f"…[truncated {omitted} bytes]", True


def _child_env(extra=None):
    """The wrapper's environment minus its secrets (they live in config-overriding env vars)."""
    env = {k: v for k, v in os.environ.items() if k not in SECRET_ENV_NAMES}
    env.update(extra or {})
    return env


def _kill_group(pid):
    try:
        os.killpg(pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


def run_process(argv, cwd, env, timeout, max_bytes, redactor):
    """Run argv in its own session; output to temp files; kill the group at the timeout.

    Returns exit_code (None when killed), timed_out, and each stream scrubbed and clipped.
    """
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        proc = subprocess.Popen(argv, cwd=cwd, env=env, stdin=subprocess.DEVNULL, stdout=out, stderr=err,
                                start_new_session=True, close_fds=True)
        timed_out = False
        try:
            code = proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            timed_out = True
            _kill_group(proc.pid)
            proc.wait()
            code = None
        except BaseException:
            # SIGTERM from the supervisor (or anything else) mid-command: never leave the group behind.
            _kill_group(proc.pid)
            proc.wait()
            raise
        result = {"exit_code": code, "timed_out": timed_out}
        for name, f in (("stdout", out), ("stderr", err)):
            # A background child may still be writing: take a snapshot of what is there now.
            f.seek(0, os.SEEK_END)
            size = f.tell()
            f.seek(0)
            data = f.read(min(size, max_bytes + SCRUB_MARGIN))
            result[name], result[f"{name}_truncated"] = clip(redactor, data, max_bytes, max(size, len(data)))
        return result


def _process_summary(label, run, timeout):
    if run["timed_out"]:
        return short(f"{label} → killed after {timeout:.0f}s timeout")
    first = (run["stdout"].strip() or run["stderr"].strip()).splitlines()
    tail = f": {first[0]}" if first else ""
    return short(f"{label} → exit {run['exit_code']}{tail}")


# -- shell -------------------------------------------------------------------------------------------------

def do_shell(ctx, action):
    cmd = _text_arg(action, "cmd")
    entry = denylist_match(cmd, ctx.cfg.guardrails.shell_denylist_substrings)
    if entry is not None:
        raise ActionFailed(f"matches denylist entry {entry!r}", "refused", cmd=cmd, denylist_entry=entry)
    timeout = _time_left(ctx, ctx.cfg.tick.shell_timeout_s)
    workdir = ensure_dir(ctx.cfg.paths.workdir)
    run = run_process(["/bin/sh", "-c", cmd], workdir, _child_env(), timeout,
                      ctx.cfg.tick.shell_output_max_bytes, ctx.redactor)
    ok = run["exit_code"] == 0 and not run["timed_out"]
    return {"type": "shell", "ok": ok, "status": "ok" if ok else "error", "cmd": cmd, **run,
            "summary": _process_summary(f"$ {short(cmd, 100)}", run, timeout)}


# -- the denylist ------------------------------------------------------------------------------------------

ONE_WORD_RE = re.compile(r"^[a-z0-9_.+-]+$")
ASSIGN_RE = re.compile(r"^[a-z_][a-z0-9_]*\+?=")
KEYWORDS = frozenset(("if", "then", "else", "elif", "fi", "do", "done", "while", "until", "!", "{", "}",
                      "time", "case", "esac", "coproc"))
# Commands that run the command named by a later word: {name: (options taking a value, positional args)}.
# Everything is lower-cased before matching, so `sudo -U` shows up as `-u`.
WRAPPERS = {
    "sudo": ({"-u", "-g", "-h", "-p", "-c", "-r", "-t", "-d"}, 0),
    "doas": ({"-u", "-c"}, 0),
    "env": ({"-u", "-c", "-s"}, 0),
    "nohup": (set(), 0),
    "exec": ({"-a"}, 0),
    "command": (set(), 0),
    "builtin": (set(), 0),
    "nice": ({"-n"}, 0),
    "ionice": ({"-c", "-n", "-p"}, 0),
    "timeout": ({"-s", "-k"}, 1),
    "stdbuf": ({"-i", "-o", "-e"}, 0),
    "setsid": (set(), 0),
    "xargs": ({"-a", "-d", "-e", "-i", "-l", "-n", "-p", "-s"}, 0),
    "watch": ({"-n", "-d"}, 0),
    "chroot": (set(), 1),
    "flock": ({"-w", "-e", "-s"}, 1),
    "taskset": (set(), 1),
    "chrt": (set(), 1),
    "busybox": (set(), 0),
    "unbuffer": (set(), 0),
}
SHELLS = frozenset(("sh", "bash", "dash", "zsh", "ksh", "ash", "mksh"))
SYSTEM_DIRS = ("bin", "boot", "dev", "etc", "home", "lib", "lib32", "lib64", "libx32", "media", "mnt", "opt",
               "proc", "root", "run", "sbin", "snap", "srv", "sys", "usr", "var")
HOME_TARGETS = frozenset(("~", "~/*", "/root", "/root/*"))
ROOT_TARGETS = frozenset({"/", "/*", "/.*"} | HOME_TARGETS | {f"/{d}" for d in SYSTEM_DIRS}
                         | {f"/{d}/*" for d in SYSTEM_DIRS})


def _substitution(text, i):
    """The text inside a `...` or $(...) starting at i, and the index just past it."""
    if text[i] == "`":
        j = i + 1
        while j < len(text) and text[j] != "`":
            j += 2 if text[j] == "\\" else 1
        return text[i + 1:j], j + 1
    depth, j = 1, i + 2
    while j < len(text) and depth:
        c = text[j]
        if c == "'":
            end = text.find("'", j + 1)
            j = len(text) if end < 0 else end + 1
            continue
        depth += {"(": 1, ")": -1}.get(c, 0)
        j += 1
    return text[i + 2:j - 1 if depth == 0 else j], j


def shell_segments(text):
    """Split shell text into simple commands (lists of words, quotes removed) roughly as sh would.

    Returns (segments, substitutions): command substitutions come back as texts to be read on their own.
    """
    segments, words, word, nested = [], [], [], []
    state = {"in_word": False, "redirect": False}

    def end_word():
        if state["in_word"]:
            if not state["redirect"]:
                words.append("".join(word))
            state["redirect"] = False
        word.clear()
        state["in_word"] = False

    def end_segment():
        end_word()
        state["redirect"] = False
        if words:
            segments.append(list(words))
            words.clear()

    i, n = 0, len(text)
    while i < n:
        c = text[i]
        if c == "\\":
            if i + 1 < n and text[i + 1] != "\n":
                word.append(text[i + 1])
                state["in_word"] = True
            i += 2
        elif c == "'":
            end = text.find("'", i + 1)
            end = n if end < 0 else end
            word.append(text[i + 1:end])
            state["in_word"] = True
            i = end + 1
        elif c == '"':
            j, buf = i + 1, []
            while j < n and text[j] != '"':
                if text[j] == "\\" and j + 1 < n:
                    buf.append(text[j + 1])
                    j += 2
                elif text[j] == "`" or text.startswith("$(", j):
                    inner, j = _substitution(text, j)
                    nested.append(inner)
                else:
                    buf.append(text[j])
                    j += 1
            word.append("".join(buf))
            state["in_word"] = True
            i = j + 1
        elif c == "`" or text.startswith("$(", i):
            inner, i = _substitution(text, i)
            nested.append(inner)
            word.append("$")
            state["in_word"] = True
        elif c == "#" and not state["in_word"]:
            end = text.find("\n", i)
            i = n if end < 0 else end
        elif c in " \t\r":
            end_word()
            i += 1
        elif c in ";&|()\n":
            end_segment()
            i += 1
        elif c in "<>":
            if state["in_word"] and "".join(word).isdigit():
                word.clear()  # the fd number of `2>file`
                state["in_word"] = False
            end_word()
            i += 1
            while i < n and text[i] in "<>&|":
                i += 1
            state["redirect"] = True
        else:
            word.append(c)
            state["in_word"] = True
            i += 1
    end_segment()
    return segments, nested


def _fold(text):
    """Lower-case, collapse whitespace, and drop it around shell punctuation (`> /dev/sda` = `>/dev/sda`)."""
    text = " ".join(text.lower().split())
    return re.sub(r"\s*([(){};|&<>:])\s*", r"\1", text)


def _contains(hay, needle):
    """Substring match that does not fire inside a longer word, nor on `/` followed by more path."""
    def word(ch):
        return ch.isalnum() or ch in "_-."

    root_end = needle.endswith(" /") or needle == "/"
    start = 0
    while (k := hay.find(needle, start)) >= 0:
        before = hay[k - 1] if k else ""
        after = hay[k + len(needle):k + len(needle) + 1]
        # A number at the end must end there too: "kill -9 1" is not "kill -9 1234".
        number_end = needle[-1].isdigit() and after.isdigit()
        if not (word(needle[0]) and before and word(before)) and not (root_end and after and
                                                                       (word(after) or after in "~/")) \
                and not number_end:
            return True
        start = k + 1
    return False


def _norm_target(t):
    for home in ("${home}", "$home"):
        if t == home or t.startswith(home + "/"):
            t = "~" + t[len(home):]
    if t.startswith("~"):
        p = posixpath.normpath("/" + t[1:].lstrip("/"))
        return "~" if p == "/" else "~" + p
    if t.startswith("/"):
        return posixpath.normpath("/" + t.lstrip("/"))
    return t


def _rm_parse(args):
    """(recursive?, targets) of an rm command's arguments, options in any order."""
    recursive, targets, options = False, [], True
    for a in args:
        if options and a == "--":
            options = False
        elif options and a.startswith("--"):
            name = a[2:].split("=", 1)[0]
            recursive = recursive or (len(name) >= 3 and "recursive".startswith(name))
        elif options and a.startswith("-") and len(a) > 1:
            recursive = recursive or "r" in a[1:]
        else:
            targets.append(_norm_target(a))
    return recursive, targets


class _Denylist:
    def __init__(self, entries):
        self.one_word, self.rm, self.phrases = [], [], []
        for entry in entries:
            if not isinstance(entry, str) or not entry.strip():
                continue
            folded = " ".join(entry.lower().split())
            if ONE_WORD_RE.match(folded):
                self.one_word.append((folded, entry))
                continue
            segments, _ = shell_segments(folded)
            if len(segments) == 1 and segments[0][0] == "rm":
                recursive, targets = _rm_parse(segments[0][1:])
                self.rm.append((entry, recursive, targets))
            else:
                self.phrases.append((_fold(entry), entry))

    def match(self, cmd, depth=0):
        if depth > 8:
            return None
        text = cmd.lower()
        segments, nested = shell_segments(text)
        folded = [_fold(text)] + [_fold(" ".join(words)) for words in segments]
        for needle, entry in self.phrases:
            if any(_contains(hay, needle) for hay in folded):
                return entry
        for inner in nested:
            hit = self.match(inner, depth + 1)
            if hit:
                return hit
        for words in segments:
            hit = self._simple(words, depth)
            if hit:
                return hit
        return None

    def _simple(self, words, depth):
        """The entry a simple command hits, looking through sudo/env/... to the command it runs."""
        i = 0
        while i < len(words):
            w = words[i]
            if w in KEYWORDS or ASSIGN_RE.match(w):
                i += 1
                continue
            name = posixpath.basename(w.rstrip("/")) or w
            for folded, entry in self.one_word:
                if name == folded or name.startswith(folded + "."):
                    return entry
            rest = words[i + 1:]
            if name in WRAPPERS:
                takes_value, positional = WRAPPERS[name]
                i += 1
                while i < len(words) and words[i].startswith("-") and len(words[i]) > 1:
                    if words[i] == "--":
                        i += 1
                        break
                    i += 2 if words[i] in takes_value else 1
                while i < len(words) and ASSIGN_RE.match(words[i]):
                    i += 1
                i += positional
                continue
            if name in SHELLS or name == "su":
                script = _dash_c_script(rest)
                return self.match(script, depth + 1) if script else None
            if name == "eval":
                return self.match(" ".join(rest), depth + 1)
            if name == "rm":
                return self._rm(rest)
            return None
        return None

    def _rm(self, args):
        recursive, targets = _rm_parse(args)
        entries = [(entry, wants) for entry, needs_recursive, wants in self.rm if recursive or not needs_recursive]
        for entry, wants in entries:  # an entry naming the target exactly is the clearer report
            if (not wants and targets) or set(wants) & set(targets):
                return entry
        for entry, wants in entries:
            for want in wants:
                covered = ROOT_TARGETS if want in ("/", "/*") else HOME_TARGETS if want in HOME_TARGETS else ()
                if any(t in covered for t in targets):
                    return entry
        return None


def _dash_c_script(args):
    """The script given to `sh -c` / `bash -lc` / `su -c` / `su --command=`, if any."""
    for k, a in enumerate(args):
        if a.startswith("--command="):
            return a.split("=", 1)[1]
        if a == "--command" or (a.startswith("-") and not a.startswith("--") and "c" in a[1:]):
            return args[k + 1] if k + 1 < len(args) else None
    return None


def denylist_match(cmd, entries):
    """The denylist entry a shell command hits, or None (§12: a tripwire, not a sandbox)."""
    return _Denylist(entries).match(cmd)


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


def do_http_get(ctx, action):
    url = _text_arg(action, "url").strip()
    try:
        parts = urlsplit(url)
    except ValueError as e:
        raise ActionFailed(f"not a URL: {e}", url=url) from None
    if parts.scheme.lower() not in ("http", "https") or not parts.netloc:
        raise ActionFailed("http_get takes an http:// or https:// URL", url=url)
    timeout = _time_left(ctx, ctx.cfg.tick.http_timeout_s)
    limit = ctx.cfg.tick.http_response_max_bytes
    give_up = time.monotonic() + timeout
    try:
        with requests.get(url, stream=True, timeout=(min(10.0, timeout), timeout),
                          headers={"User-Agent": "mako-zero"}) as resp:
            body, truncated = bytearray(), False
            for chunk in resp.iter_content(chunk_size=min(limit + 1, 65536)):
                body += chunk
                if len(body) > limit:
                    truncated = True
                    break
                if time.monotonic() > give_up:
                    raise ActionFailed(f"body not complete within {timeout:.0f}s", url=url,
                                       http_status=resp.status_code)
            content_type = resp.headers.get("Content-Type", "")
            text, cut = clip(ctx.redactor, bytes(body[:limit]), limit, None if truncated else len(body),
                             _charset(content_type))
            status, final_url = resp.status_code, resp.url
    except requests.RequestException as e:
        raise ActionFailed(f"{e.__class__.__name__}: {e}", url=url) from None
    ok = status < 400
    return {"type": "http_get", "ok": ok, "status": "ok" if ok else "error", "url": url,
            "http_status": status, "final_url": final_url, "content_type": content_type, "body": text,
            "truncated": cut,
            "summary": short(f"GET {short(url, 100)} → {status} {content_type.split(';')[0]}, "
                             f"{len(text)} chars{' (truncated)' if cut else ''}")}


# -- files -------------------------------------------------------------------------------------------------

def do_write_file(ctx, action):
    path = _text_arg(action, "path")
    content = action.get("content")
    if not isinstance(content, str):
        raise ActionFailed("'content' must be a string")
    mode = action.get("mode") or "write"
    if mode not in WRITE_MODES:
        raise ActionFailed(f"'mode' must be one of {', '.join(WRITE_MODES)}, got {short(mode, 40)!r}")
    size = len(content.encode("utf-8", "replace"))
    if size > WRITE_MAX_BYTES:
        raise ActionFailed(f"content is {size} bytes, over the {WRITE_MAX_BYTES} byte (1 MB) limit",
                           "refused")
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

GIT_SUBCOMMANDS = frozenset((
    "init", "status", "add", "commit", "log", "diff", "show", "branch", "checkout", "switch", "restore", "rm",
    "mv", "tag", "reset", "stash", "rev-parse", "ls-files", "blame", "grep", "config", "merge", "cherry-pick",
    "revert", "shortlog", "describe", "clean", "clone", "ls-tree", "cat-file", "rev-list", "reflog",
    "merge-base", "show-ref", "for-each-ref", "name-rev", "check-ignore", "count-objects", "fsck", "gc",
    "apply", "diff-tree", "range-diff", "notes",
))
GIT_NETWORK = frozenset(("fetch", "pull", "ls-remote", "remote", "submodule", "send-email", "request-pull",
                         "daemon", "archive", "instaweb", "http-backend", "upload-pack", "receive-pack",
                         "http-fetch", "svn", "p4", "cvsimport", "imap-send", "bundle"))
GIT_SAFE_GLOBALS = frozenset(("--no-pager", "-p", "-P", "--paginate", "--bare", "--no-replace-objects",
                              "--literal-pathspecs", "--glob-pathspecs", "--noglob-pathspecs",
                              "--icase-pathspecs", "--no-optional-locks", "--no-advice", "--version"))
# Long options that run another program, fetch, or write outside the repo (git accepts abbreviations).
GIT_BANNED_LONG = ("upload-pack", "receive-pack", "exec", "ext-diff", "textconv", "output",
                   "open-files-in-pager", "config", "template", "separate-git-dir", "recurse-submodules")
GIT_BUILTIN_STRATEGIES = frozenset(("ort", "recursive", "resolve", "octopus", "ours", "subtree"))
GIT_CONFIG_SCOPES = frozenset(("--global", "--system", "--file", "-f", "--blob"))
# Config keys that name a program to run, pull in other config, or reach the network.
GIT_DANGEROUS_KEYS = (
    "alias.*", "core.pager", "core.editor", "core.sshcommand", "core.hookspath", "core.fsmonitor",
    "core.askpass", "core.gitproxy", "core.worktree", "*.textconv", "diff.external", "diff.*.command",
    "merge.*.driver", "filter.*", "credential.*", "sequence.editor", "gpg.*", "pager.*", "*.cmd", "*.path",
    "*.program", "include.*", "includeif.*", "url.*", "remote.*", "http.*", "ssh.*", "protocol.*",
    "uploadpack.*", "receive.*", "submodule.*", "browser.*", "web.browser", "man.*", "help.*", "instaweb.*",
)


def _inside(path, root):
    real = os.path.realpath(path)
    return real == root or real.startswith(root.rstrip("/") + "/")


def git_refusal(args, workdir):
    """Why `git <args>` may not run, or None when it may."""
    root = os.path.realpath(workdir)
    cwd = root
    i = 0
    while i < len(args) and args[i].startswith("-"):
        a = args[i]
        name, has_value, value = a.partition("=")
        if a.startswith("-c") or name in ("--config-env", "--exec-path"):
            return f"git {name} is refused: it can make git run other programs"
        if a == "-C" or name in ("--git-dir", "--work-tree"):
            if not has_value:
                if i + 1 >= len(args):
                    return f"git {a} needs a value"
                i += 1
                value = args[i]
            target = os.path.join(cwd, value)
            if not _inside(target, root):
                return f"git {name} must stay inside workdir/"
            if a == "-C":
                cwd = os.path.realpath(target)
        elif name == "--namespace":
            i += 0 if has_value else 1
        elif a not in GIT_SAFE_GLOBALS:
            return f"git option {short(a, 40)} is not allowed"
        i += 1
    if i >= len(args):
        return None if "--version" in args else "no git subcommand given"
    sub, rest = args[i], args[i + 1:]
    if sub == "push":
        return "git push is refused: nothing leaves this box by git"
    if sub in GIT_NETWORK:
        return f"git {sub} is refused: network subcommands are not run"
    if sub not in GIT_SUBCOMMANDS:
        return f"git {short(sub, 40)!r} is not an allowed git subcommand (aliases are not run)"
    return _git_args_refusal(sub, rest)


def _git_args_refusal(sub, rest):
    options = rest[:rest.index("--")] if "--" in rest else rest
    for k, a in enumerate(options):
        if a.startswith("--"):
            name = a[2:].split("=", 1)[0]
            if name and any(banned.startswith(name) for banned in GIT_BANNED_LONG):
                return f"git {sub} {short(a, 40)} is refused: it can run programs, fetch or write elsewhere"
            if sub in ("merge", "cherry-pick", "revert") and name == "strategy":
                value = a.split("=", 1)[1] if "=" in a else (options[k + 1] if k + 1 < len(options) else "")
                if value not in GIT_BUILTIN_STRATEGIES:
                    return f"git {sub}: only built-in merge strategies are allowed"
        elif a.startswith("-") and len(a) > 1:
            if sub == "merge" and a.startswith("-s"):
                value = a[2:] or (options[k + 1] if k + 1 < len(options) else "")
                if value not in GIT_BUILTIN_STRATEGIES:
                    return f"git {sub}: only built-in merge strategies are allowed"
            if sub == "clone" and a[1] in "uc":
                return f"git clone {a[:2]} is refused: it can run programs or set config"
            if sub == "grep" and (a.startswith("-O") or (a[1:].isalpha() and "O" in a[1:])):
                return "git grep -O is refused: it runs a pager program"
    if sub == "clone":
        for a in rest:
            if not a.startswith("-") and (":" in a or a.startswith("git@")):
                return "git clone of a URL is refused: network access is not run"
    if sub == "config":
        if any(a in GIT_CONFIG_SCOPES or a.startswith(("--file=", "--blob=")) for a in options):
            return "git config outside the repository (--global, --system, --file) is refused"
        keys = [a for a in rest if not a.startswith("-")][:2]
        for key in keys:
            if any(fnmatch(key.lower(), pattern) for pattern in GIT_DANGEROUS_KEYS):
                return f"git config {short(key, 60)} is refused: that key can run programs or reach out"
    return None


def _git_env():
    env = {k: v for k, v in _child_env().items() if not k.startswith("GIT_")}
    env.update({"GIT_TERMINAL_PROMPT": "0", "GIT_PAGER": "cat", "PAGER": "cat", "GIT_EDITOR": "true",
                "EDITOR": "true", "VISUAL": "true", "GIT_CONFIG_NOSYSTEM": "1"})
    return env


def do_git(ctx, action):
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
    timeout = _time_left(ctx, ctx.cfg.tick.shell_timeout_s)
    run = run_process(["git", *args], workdir, _git_env(), timeout, ctx.cfg.tick.shell_output_max_bytes,
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


def do_telegram_post(ctx, action):
    text = _post_text(ctx, action)
    thread = action.get("thread")
    thread = "log" if thread is None else thread
    thread_id = resolve_thread(ctx.cfg.telegram, thread)
    if thread_id is None:
        raise ActionFailed(f"unknown thread {short(repr(thread), 60)} (use log, requests, approvals, digest "
                           "or a thread number)")
    delivered = bool(ctx.telegram.send(text, thread=thread_id))
    return {"type": "telegram_post", "ok": delivered, "status": "ok" if delivered else "error",
            "thread": thread, "delivered": delivered,
            "summary": short(f"posted to {thread}" if delivered else
                             f"not delivered to {thread} (Telegram off or failing)")}


def do_ask_chris(ctx, action):
    text = _post_text(ctx, action)
    thread = ctx.cfg.telegram.first_thread("requests", "log")
    delivered = bool(ctx.telegram.send(text, thread=thread or "log"))
    return {"type": "ask_chris", "ok": delivered, "status": "ok" if delivered else "error",
            "delivered": delivered,
            "summary": "asked Chris (requests thread)" if delivered else
                       "question not delivered (Telegram off or failing)"}


HANDLERS = {
    "shell": do_shell,
    "http_get": do_http_get,
    "write_file": do_write_file,
    "read_file": do_read_file,
    "git": do_git,
    "telegram_post": do_telegram_post,
    "ask_chris": do_ask_chris,
}
