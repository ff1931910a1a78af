"""Extraction and validation of the model's reply (SPEC §10, §6, §7, §18).

Pure functions of strings and dicts: the tick and the scribe call `parse_reply` / `parse_scribe` and apply
nothing unless they return. Every failure is a `ResponseError` whose text names the field at fault, so the
operator reading LAST_RESULTS or the payload sees exactly what the model got wrong.

Replies are untrusted and may be huge or hostile, so extraction stays linear in the text's length: the
brace matcher jumps between interesting characters with compiled regexes, and each candidate span is
handed to `json.loads` at most once. Validation replaces lone surrogates (half a UTF-16 pair, which JSON
can spell as an escape) with U+FFFD, so everything written or sent from a reply is valid UTF-8.
"""

import json
import re

from mako.errors import ResponseError
from mako.text import short

FILE_MODES = ("write", "append")
PERSONA_MODES = ("append", "write", "skip")
SCRIBE_KINDS = ("draft", "skip")
SLUG_MAX = 60
MAX_FENCED_BLOCKS = 50

KNOWN_FIELDS = (
    "thinking", "work_done", "files", "state_md", "next_md", "persona_update", "actions",
    "request_notes", "telegram", "compact_now", "drift_flag",
)

# A fence line: optional indent, three backticks, an optional info string ("json", "python", ...).
_FENCE = re.compile(r"^[ \t]*```[ \t]*([^\n`]*)$", re.M)
_BRACE_OR_QUOTE = re.compile(r'[{}"]')
_BRACKET_OR_QUOTE = re.compile(r'[\[\]"]')
_OPENER = re.compile(r"[{\[]")
_BRACE = re.compile(r"{")
# The rest of a JSON string after its opening quote, up to and including the closing quote (unrolled so
# it never backtracks).
_STRING_TAIL = re.compile(r'[^"\\]*(?:\\.[^"\\]*)*"', re.S)
_SLUG_JUNK = re.compile(r"[^a-z0-9]+")
# JSON may spell half a surrogate pair ("\ud800"): no file, journal line or request can carry one as UTF-8.
_LONE_SURROGATE = re.compile("[\ud800-\udfff]")
# A requested note name is looked up on disk every later tick: one the file system cannot take would
# fail every one of them.
NOTE_NAME_MAX = 255


class _DuplicateKey(Exception):
    """A JSON object repeats a key: the reply is ambiguous, never a parse to skip past."""


def _object_from_pairs(pairs):
    obj = {}
    for key, value in pairs:
        if key in obj:
            raise _DuplicateKey(key)
        obj[key] = value
    return obj


def _reject_constant(name):
    raise ValueError(f"{name} is not valid JSON")


def _loads(text):
    """json.loads refusing duplicate keys and NaN/Infinity; nesting too deep becomes a ValueError."""
    try:
        return json.loads(text, object_pairs_hook=_object_from_pairs, parse_constant=_reject_constant)
    except RecursionError:
        raise ValueError("JSON nested too deeply") from None


def _duplicate(exc):
    return ResponseError(f"duplicate key {short(exc.args[0], 80)!r} in the reply's JSON")


def _fenced_blocks(text):
    """Yield (info, body) for each fenced block; an unclosed fence runs to the end of the text."""
    opening = None
    for m in _FENCE.finditer(text):
        info = m.group(1).strip()
        if opening is None:
            opening = m
        elif not info:
            yield opening.group(1).strip().lower(), text[opening.end():m.start()]
            opening = None
    if opening is not None:
        yield opening.group(1).strip().lower(), text[opening.end():]


def _object_end(text, start, marks=_BRACE_OR_QUOTE):
    """Index just past the object (or, with `_BRACKET_OR_QUOTE`, the array) opening at text[start], or -1
    if it never closes.

    Braces inside JSON strings do not count; the other kind of bracket is not tracked because a mismatch
    there makes the span invalid JSON anyway.
    """
    opener = text[start]
    depth = 0
    pos = start
    while True:
        m = marks.search(text, pos)
        if m is None:
            return -1
        ch = m.group()
        if ch == '"':
            tail = _STRING_TAIL.match(text, m.end())
            if tail is None:
                return -1
            pos = tail.end()
            continue
        pos = m.end()
        depth += 1 if ch == opener else -1
        if depth == 0:
            return pos


def _from_fences(text, errors):
    blocks = [(info, body) for info, body in _fenced_blocks(text) if info in ("json", "")]
    # An explicitly tagged block wins over a plain one that may just be an example in the prose.
    blocks.sort(key=lambda block: block[0] != "json")
    # A real reply has a handful of fences; the cap keeps a flood of them from costing a parse each.
    for _, body in blocks[:MAX_FENCED_BLOCKS]:
        body = body.strip()
        if body.startswith("["):
            _refuse_array(body)
        if not body.startswith("{"):
            continue
        try:
            obj = _loads(body)
        except _DuplicateKey as exc:
            raise _duplicate(exc) from None
        except ValueError as exc:
            errors.append(f"fenced block: {exc}")
            continue
        if isinstance(obj, dict):
            return obj
    return None


def _holds_object(value):
    """Whether a JSON array holds an object, at any depth of arrays (iteratively: nesting may be deep)."""
    stack = [value]
    while stack:
        items = stack.pop()
        if isinstance(items, list):
            if any(isinstance(item, dict) for item in items):
                return True
            stack.extend(items)
    return False


def _refuse_array(span):
    """A JSON array holding an object is a reply in the wrong shape, never a wrapper to look inside (§10)."""
    try:
        value = _loads(span)
    except (_DuplicateKey, ValueError):
        return
    if _holds_object(value):
        raise ResponseError("the reply's JSON is an array, not an object; an object inside it is never "
                            "taken as the reply")


def _from_top_level(text, errors):
    """The first top-level {...} span that is valid JSON; spans are disjoint, never entered when invalid.

    A [...] span before it is stepped over whole when it is valid JSON (or invalid), so an object inside an
    array is never taken; an array of objects is refused outright."""
    pos = 0
    opener = _OPENER
    while True:
        start = opener.search(text, pos)
        if start is None:
            return None
        start = start.start()
        if text[start] == "[":
            end = _object_end(text, start, _BRACKET_OR_QUOTE)
            if end < 0:
                # Prose such as "[see below"; no later bracket closes either, so stop looking for them
                # (scanning to the end once per bracket would be quadratic).
                opener = _BRACE
                pos = start + 1
                continue
            _refuse_array(text[start:end])
            pos = end
            continue
        end = _object_end(text, start)
        if end < 0:
            errors.append(f"object starting at offset {start} is never closed")
            return None
        try:
            return _loads(text[start:end])
        except _DuplicateKey as exc:
            raise _duplicate(exc) from None
        except ValueError as exc:
            errors.append(f"object at offset {start}: {exc}")
            pos = end


def extract_json(text):
    """The reply's one JSON object: a ```json (or plain ```) fenced block, else the first top-level object."""
    if not isinstance(text, str):
        raise ResponseError(f"reply: expected text, got {type(text).__name__}")
    if text.lstrip().lstrip("\ufeff").startswith("PARSE_ERROR"):
        raise ResponseError(f"reply is a PARSE_ERROR: {short(text.strip(), 200)}")
    errors = []
    obj = _from_fences(text, errors)
    if obj is None:
        obj = _from_top_level(text, errors)
    if obj is None:
        reason = f": {errors[0]}" if errors else ""
        raise ResponseError(f"no JSON object in the reply{reason}")
    return obj


def _fix_text(text):
    return _LONE_SURROGATE.sub("\ufffd", text) if _LONE_SURROGATE.search(text) else text


def clean_surrogates(value):
    """Replace every lone surrogate in a parsed reply by U+FFFD, in place (iteratively: a reply may nest as
    deep as the parser allows). Returns the value."""
    if isinstance(value, str):
        return _fix_text(value)
    stack = [value]
    while stack:
        node = stack.pop()
        items = list(node.items()) if isinstance(node, dict) else list(enumerate(node))
        for key, item in items:
            if isinstance(item, str):
                item = _fix_text(item)
            elif isinstance(item, (dict, list)):
                stack.append(item)
            if isinstance(key, str) and _LONE_SURROGATE.search(key):
                del node[key]
                key = _fix_text(key)
            node[key] = item
    return value


def _kind(value):
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, (int, float)):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    if isinstance(value, dict):
        return "object"
    return type(value).__name__


def _wrong(field, expected, value):
    return ResponseError(f"{field}: expected {expected}, got {_kind(value)}")


def _str(field, value, optional=False):
    if value is None and optional:
        return None
    if not isinstance(value, str):
        raise _wrong(field, "a string", value)
    return value


def _list(field, value):
    """A list; null or absent is an empty one (the optional list fields)."""
    if value is None:
        return []
    if not isinstance(value, list):
        raise _wrong(field, "an array", value)
    return value


def _object(field, value):
    if not isinstance(value, dict):
        raise _wrong(field, "an object", value)
    return value


def _blank_to_none(field, value):
    text = _str(field, value, optional=True)
    return text if text and text.strip() else None


def _required_text(obj, key, field=None):
    field = field or key
    if obj.get(key) is None:
        raise ResponseError(f"{field}: required")
    text = _str(field, obj[key])
    if not text.strip():
        raise ResponseError(f"{field}: must not be blank")
    return text


def _files(value):
    files = []
    for i, entry in enumerate(_list("files", value)):
        field = f"files[{i}]"
        _object(field, entry)
        if "path" not in entry:
            raise ResponseError(f"{field}.path: required")
        if "content" not in entry:
            raise ResponseError(f"{field}.content: required")
        path = _str(f"{field}.path", entry["path"])
        content = _str(f"{field}.content", entry["content"])
        mode = entry.get("mode", "write")
        if mode not in FILE_MODES:
            raise ResponseError(f"{field}.mode: expected 'write' or 'append', got {short(json.dumps(mode), 80)}")
        files.append({"path": path, "content": content, "mode": mode})
    return files


def _persona_update(value):
    if value is None:
        return None
    _object("persona_update", value)
    mode = value.get("mode")
    if mode not in PERSONA_MODES:
        raise ResponseError(
            f"persona_update.mode: expected 'append', 'write' or 'skip', got {short(json.dumps(mode), 80)}")
    content = value.get("content")
    if mode == "skip":
        content = _str("persona_update.content", content, optional=True) or ""
    else:
        if "content" not in value:
            raise ResponseError(f"persona_update.content: required when mode is {mode!r}")
        content = _str("persona_update.content", content)
    return {"mode": mode, "content": content}


def _actions(value):
    actions = []
    for i, action in enumerate(_list("actions", value)):
        field = f"actions[{i}]"
        _object(field, action)
        if "type" not in action:
            raise ResponseError(f"{field}.type: required")
        kind = _str(f"{field}.type", action["type"])
        if not kind.strip():
            raise ResponseError(f"{field}.type: must not be blank")
        actions.append(dict(action))
    return actions


def _request_notes(value, limit):
    notes = _list("request_notes", value)
    for i, name in enumerate(notes):
        _str(f"request_notes[{i}]", name)
        if len(name) > NOTE_NAME_MAX or "\x00" in name:
            raise ResponseError(f"request_notes[{i}]: not a file name (a NUL byte, or over {NOTE_NAME_MAX} chars)")
    if len(notes) > limit:
        raise ResponseError(f"request_notes: {len(notes)} names, at most {limit} allowed")
    return list(notes)


def validate_reply(obj, *, max_requested_notes, inbox_present):
    """A new dict with every §10 field present and normalised; ResponseError naming the field otherwise."""
    _object("reply", obj)
    clean_surrogates(obj)
    given = obj.get("work_done")
    if inbox_present and (given is None or (isinstance(given, str) and not given.strip())):
        raise ResponseError("work_done: blank, but the INBOX must be acknowledged in work_done")
    work_done = _required_text(obj, "work_done")
    compact_now = obj.get("compact_now", False)
    if not isinstance(compact_now, bool):
        raise _wrong("compact_now", "a boolean", compact_now)
    return {
        "thinking": _str("thinking", obj.get("thinking"), optional=True) or "",
        "work_done": work_done,
        "files": _files(obj.get("files")),
        "state_md": _blank_to_none("state_md", obj.get("state_md")),
        "next_md": _blank_to_none("next_md", obj.get("next_md")),
        "persona_update": _persona_update(obj.get("persona_update")),
        "actions": _actions(obj.get("actions")),
        "request_notes": _request_notes(obj.get("request_notes"), max_requested_notes),
        "telegram": _blank_to_none("telegram", obj.get("telegram")),
        "compact_now": compact_now,
        "drift_flag": _blank_to_none("drift_flag", obj.get("drift_flag")),
        "extra": {k: v for k, v in obj.items() if k not in KNOWN_FIELDS},
    }


def parse_reply(text, *, max_requested_notes, inbox_present):
    return validate_reply(extract_json(text), max_requested_notes=max_requested_notes,
                          inbox_present=inbox_present)


def normalise_slug(raw):
    """Lowercase, runs of anything but [a-z0-9] become one '-', trimmed, at most SLUG_MAX chars."""
    slug = _SLUG_JUNK.sub("-", raw.lower()).strip("-")
    return slug[:SLUG_MAX].rstrip("-")


def validate_scribe(obj):
    """The scribe's {kind: draft|skip, draft: {...}, skip: {...}} reply, normalised."""
    _object("reply", obj)
    clean_surrogates(obj)
    kind = obj.get("kind")
    if kind not in SCRIBE_KINDS:
        raise ResponseError(f"kind: expected 'draft' or 'skip', got {short(json.dumps(kind), 80)}")
    if kind == "skip":
        if obj.get("skip") is None:
            raise ResponseError("skip: required when kind is 'skip'")
        skip = _object("skip", obj["skip"])
        reason = _required_text(skip, "reason", "skip.reason")
        return {"kind": "skip", "draft": None, "skip": {"reason": reason}}
    if obj.get("draft") is None:
        raise ResponseError("draft: required when kind is 'draft'")
    draft = _object("draft", obj["draft"])
    fields = {name: _required_text(draft, name, f"draft.{name}") for name in ("slug", "title", "body_md")}
    slug = normalise_slug(fields["slug"])
    if not slug:
        raise ResponseError(f"draft.slug: nothing left of {short(fields['slug'], 80)!r} after normalising")
    summary = _str("draft.summary_for_chris", draft.get("summary_for_chris"), optional=True) or ""
    return {
        "kind": "draft",
        "draft": {"slug": slug, "title": fields["title"], "body_md": fields["body_md"],
                  "summary_for_chris": summary},
        "skip": None,
    }


def parse_scribe(text):
    return validate_scribe(extract_json(text))
