"""Tests for mako.response: extracting the reply's JSON object and validating its fields."""

import json

import pytest

from mako.errors import ResponseError
from mako.response import (
    extract_json, normalise_slug, parse_reply, parse_scribe, validate_reply, validate_scribe,
)

GOOD = {"work_done": "read the notes", "telegram": "hi"}


def reply(**fields):
    obj = {"work_done": "did a thing"}
    obj.update(fields)
    return obj


def check(obj, *, limit=3, inbox=False):
    return validate_reply(obj, max_requested_notes=limit, inbox_present=inbox)


def refused(obj, match, **kw):
    with pytest.raises(ResponseError, match=match):
        check(obj, **kw)


# --- extract_json ---------------------------------------------------------------------------------

def test_extract_json_fenced_block():
    text = "Here is my reply.\n```json\n" + json.dumps(GOOD) + "\n```\nDone."
    assert extract_json(text) == GOOD


def test_extract_json_plain_fence():
    assert extract_json("```\n" + json.dumps(GOOD) + "\n```") == GOOD


def test_extract_json_uppercase_tag_and_crlf():
    assert extract_json("```JSON\r\n" + json.dumps(GOOD) + "\r\n```\r\n") == GOOD


def test_extract_json_bare_object_with_prose_around():
    text = "I looked at the state. " + json.dumps(GOOD) + " That is all."
    assert extract_json(text) == GOOD


def test_extract_json_bare_object_only():
    assert extract_json(json.dumps(GOOD)) == GOOD


def test_extract_json_json_tag_preferred_over_plain_example():
    text = ("An example:\n```\n{\"work_done\": \"example\"}\n```\nThe reply:\n```json\n"
            + json.dumps(GOOD) + "\n```")
    assert extract_json(text) == GOOD


def test_extract_json_skips_fenced_block_that_is_not_an_object():
    text = "```json\n[1, 2]\n```\n```json\n" + json.dumps(GOOD) + "\n```"
    assert extract_json(text) == GOOD


def test_extract_json_skips_invalid_fenced_block_for_next_one():
    text = "```json\n{\"work_done\": oops}\n```\n```json\n" + json.dumps(GOOD) + "\n```"
    assert extract_json(text) == GOOD


def test_extract_json_ignores_other_language_fences():
    text = "```python\nx = {'a': 1}\n```\n" + json.dumps(GOOD)
    assert extract_json(text) == {"work_done": "read the notes", "telegram": "hi"}


def test_extract_json_unclosed_fence_runs_to_end():
    assert extract_json("```json\n" + json.dumps(GOOD) + "\n") == GOOD


def test_extract_json_backticks_inside_string_do_not_close_fence():
    obj = {"work_done": "x", "files": [{"path": "notes/a.md", "content": "```python\nprint(1)\n```\n"}]}
    assert extract_json("```json\n" + json.dumps(obj, indent=2) + "\n```") == obj


def test_extract_json_braces_inside_strings_do_not_count():
    obj = {"work_done": "closed } and { opened", "thinking": "\"}\" \\ {{"}
    assert extract_json("Prose first. " + json.dumps(obj) + " {trailing") == obj


def test_extract_json_fallback_when_fences_hold_nothing_valid():
    text = "```\nnot json\n```\n" + json.dumps(GOOD)
    assert extract_json(text) == GOOD


@pytest.mark.parametrize("text", ["PARSE_ERROR", "  \n PARSE_ERROR: could not comply",
                                  "\ufeffPARSE_ERROR " + json.dumps(GOOD)])
def test_extract_json_parse_error_reply_fails(text):
    with pytest.raises(ResponseError, match="PARSE_ERROR"):
        extract_json(text)


def test_extract_json_parse_error_later_in_text_is_not_special():
    assert extract_json(json.dumps({"work_done": "PARSE_ERROR seen earlier"})) == {
        "work_done": "PARSE_ERROR seen earlier"}


@pytest.mark.parametrize("text", ["", "no json here", "[1, 2, 3]", "```json\n[1]\n```", "{\"a\": 1",
                                  "\"just a string\""])
def test_extract_json_nothing_found_fails(text):
    with pytest.raises(ResponseError, match="no JSON object"):
        extract_json(text)


def test_extract_json_never_takes_object_nested_in_invalid_outer():
    inner = json.dumps({"work_done": "inner", "type": "web_fetch"})
    text = '{"work_done": "outer", "actions": [' + inner + '], oops}'
    with pytest.raises(ResponseError, match="no JSON object"):
        extract_json(text)


def test_extract_json_never_takes_object_nested_in_unclosed_outer():
    text = '{"work_done": "outer", "actions": [{"type": "note"}]'
    with pytest.raises(ResponseError, match="never closed"):
        extract_json(text)


def test_extract_json_nested_in_invalid_fence_is_not_taken():
    text = "```json\n{\"thinking\": x, \"inner\": {\"work_done\": \"no\"}}\n```"
    with pytest.raises(ResponseError):
        extract_json(text)


@pytest.mark.parametrize("text", [
    json.dumps([{"work_done": "inside an array"}]),
    "My reply:\n" + json.dumps([{"work_done": "inside an array"}, {"work_done": "another"}]) + "\nDone.",
    "```json\n" + json.dumps([{"work_done": "inside a fenced array"}]) + "\n```",
    "```\n" + json.dumps([[{"work_done": "deeper"}]]) + "\n```\n" + json.dumps({"work_done": "later"}),
])
def test_extract_json_top_level_array_is_a_parse_error(text):
    with pytest.raises(ResponseError, match="array, not an object"):
        extract_json(text)


def test_extract_json_prose_brackets_before_the_object_are_stepped_over():
    assert extract_json("Notes [1] and [see below, then " + json.dumps(GOOD)) == GOOD
    assert extract_json("[" * 20000 + json.dumps(GOOD)) == GOOD


def test_extract_json_later_sibling_after_prose_braces():
    assert extract_json("I use {placeholders} in notes. " + json.dumps(GOOD)) == GOOD


@pytest.mark.parametrize("text, key", [
    ('{"work_done": "a", "work_done": "b"}', "work_done"),
    ('{"work_done": "a", "actions": [{"type": "x", "type": "y"}]}', "type"),
    ('```json\n{"a": {"b": 1, "b": 2}}\n```', "b"),
])
def test_extract_json_duplicate_keys_fail(text, key):
    with pytest.raises(ResponseError, match=f"duplicate key '{key}'"):
        extract_json(text)


@pytest.mark.parametrize("text", ['{"work_done": NaN}', '{"work_done": "x", "n": Infinity}'])
def test_extract_json_non_standard_constants_refused(text):
    with pytest.raises(ResponseError):
        extract_json(text)


def test_extract_json_rejects_non_text():
    with pytest.raises(ResponseError):
        extract_json(None)


def test_extract_json_control_and_odd_characters_in_strings():
    obj = {"work_done": "tab\there \u0000 \udcff é 🚀"}
    assert extract_json(json.dumps(obj)) == obj


@pytest.mark.parametrize("text", [
    '{"work_done": "x", "a": ' + "[" * 100_000 + "]" * 100_000 + "}",
    "```json\n" + "[" * 100_000 + "\n```",
    "{" * 100_000 + "}" * 100_000,
    '{"a": ' * 100_000 + "1" + "}" * 100_000,
], ids=["brackets-in-object", "brackets-in-fence", "braces", "nested-objects"])
def test_extract_json_deep_nesting_is_a_response_error(text):
    with pytest.raises(ResponseError):
        extract_json(text)


def test_extract_json_ten_megabyte_content_string():
    content = ("line with {braces} and \"quotes\" and \\ slashes\n" * 220_000)[:10_000_000]
    obj = {"work_done": "big", "files": [{"path": "workdir/big.txt", "content": content}]}
    got = parse_reply("```json\n" + json.dumps(obj) + "\n```", max_requested_notes=3, inbox_present=False)
    assert got["files"][0]["content"] == content


def test_extract_json_twenty_megabytes_of_prose_then_reply():
    text = ("The model rambles on without any structure at all. " * 400_000)[:20_000_000]
    assert extract_json(text + json.dumps(GOOD) + text) == GOOD


@pytest.mark.parametrize("text", [
    "{" * 4_000_000,
    "x{" * 2_000_000,
    "```\n{\n```\n" * 500_000,
    '"{' * 2_000_000,
    "{" * 2_000_000 + "}" * 2_000_000,
], ids=["open-braces", "spaced-open-braces", "fence-flood", "quote-brace-flood", "deep-balanced"])
def test_extract_json_hostile_sizes_finish(text):
    with pytest.raises(ResponseError):
        extract_json(text)


def test_extract_json_many_empty_objects_takes_first():
    assert extract_json("{}" * 2_000_000) == {}


# --- validate_reply -------------------------------------------------------------------------------

def test_validate_reply_minimal_fills_defaults():
    assert check({"work_done": "ok"}) == {
        "thinking": "", "work_done": "ok", "files": [], "state_md": None, "next_md": None,
        "persona_update": None, "actions": [], "request_notes": [], "telegram": None,
        "compact_now": False, "drift_flag": None, "extra": {},
    }


def test_validate_reply_full_reply_normalised():
    obj = {
        "thinking": "hmm", "work_done": "wrote a note",
        "files": [{"path": "notes/a.md", "content": "A"}, {"path": "../x", "content": "", "mode": "append"}],
        "state_md": "# State\n", "next_md": "# Next\n",
        "persona_update": {"mode": "append", "content": "- likes tea"},
        "actions": [{"type": "web_fetch", "url": "https://example.com", "opts": {"n": 1}}],
        "request_notes": ["plan.md", "notes/b.md"], "telegram": "hello", "compact_now": True,
        "drift_flag": "mission drift", "mood": "good", "score": 3,
    }
    got = check(obj)
    assert got["files"] == [{"path": "notes/a.md", "content": "A", "mode": "write"},
                            {"path": "../x", "content": "", "mode": "append"}]
    assert got["persona_update"] == {"mode": "append", "content": "- likes tea"}
    assert got["actions"] == [{"type": "web_fetch", "url": "https://example.com", "opts": {"n": 1}}]
    assert got["request_notes"] == ["plan.md", "notes/b.md"]
    assert (got["state_md"], got["next_md"], got["telegram"]) == ("# State\n", "# Next\n", "hello")
    assert (got["compact_now"], got["drift_flag"], got["thinking"]) == (True, "mission drift", "hmm")
    assert got["extra"] == {"mood": "good", "score": 3}


def test_validate_reply_returns_new_containers():
    obj = reply(actions=[{"type": "note"}], request_notes=["a.md"])
    got = check(obj)
    got["actions"][0]["type"] = "changed"
    got["request_notes"].append("b.md")
    assert obj["actions"][0]["type"] == "note" and obj["request_notes"] == ["a.md"]


@pytest.mark.parametrize("field", ["thinking", "state_md", "next_md", "persona_update", "telegram",
                                   "drift_flag", "files", "actions", "request_notes"])
def test_validate_reply_null_means_absent(field):
    assert check(reply(**{field: None})) == check(reply())


@pytest.mark.parametrize("field", ["state_md", "next_md", "telegram", "drift_flag"])
@pytest.mark.parametrize("blank", ["", "  \n\t"])
def test_validate_reply_blank_optional_text_is_none(field, blank):
    assert check(reply(**{field: blank}))[field] is None


WRONG_TYPES = [
    ("thinking", 1, "a string"), ("thinking", ["x"], "a string"), ("thinking", True, "a string"),
    ("work_done", 5, "a string"), ("work_done", {"a": 1}, "a string"), ("work_done", False, "a string"),
    ("files", "notes/a.md", "an array"), ("files", {"path": "a"}, "an array"), ("files", 0, "an array"),
    ("state_md", 1, "a string"), ("state_md", ["x"], "a string"), ("state_md", False, "a string"),
    ("next_md", 2.5, "a string"), ("next_md", {}, "a string"),
    ("persona_update", "append", "an object"), ("persona_update", [], "an object"),
    ("persona_update", True, "an object"),
    ("actions", {"type": "x"}, "an array"), ("actions", "web_fetch", "an array"),
    ("request_notes", "plan.md", "an array"), ("request_notes", 3, "an array"),
    ("telegram", 1, "a string"), ("telegram", ["hi"], "a string"), ("telegram", True, "a string"),
    ("compact_now", "true", "a boolean"), ("compact_now", 1, "a boolean"), ("compact_now", None, "a boolean"),
    ("compact_now", 0, "a boolean"),
    ("drift_flag", True, "a string"), ("drift_flag", 0, "a string"), ("drift_flag", {}, "a string"),
]


@pytest.mark.parametrize("field, value, expected", WRONG_TYPES)
def test_validate_reply_wrong_type_names_field(field, value, expected):
    refused(reply(**{field: value}), f"^{field}: expected {expected}, got ")


@pytest.mark.parametrize("entry, message", [
    ("notes/a.md", r"^files\[0\]: expected an object, got string"),
    ({"content": "x"}, r"^files\[0\]\.path: required"),
    ({"path": "a"}, r"^files\[0\]\.content: required"),
    ({"path": 7, "content": "x"}, r"^files\[0\]\.path: expected a string, got number"),
    ({"path": None, "content": "x"}, r"^files\[0\]\.path: expected a string, got null"),
    ({"path": "a", "content": 7}, r"^files\[0\]\.content: expected a string, got number"),
    ({"path": "a", "content": None}, r"^files\[0\]\.content: expected a string, got null"),
    ({"path": "a", "content": ["x"]}, r"^files\[0\]\.content: expected a string, got array"),
    ({"path": "a", "content": "x", "mode": "overwrite"}, r"^files\[0\]\.mode: expected 'write' or 'append'"),
    ({"path": "a", "content": "x", "mode": None}, r"^files\[0\]\.mode: "),
    ({"path": "a", "content": "x", "mode": "WRITE"}, r"^files\[0\]\.mode: "),
    ({"path": "a", "content": "x", "mode": True}, r"^files\[0\]\.mode: "),
])
def test_validate_reply_file_faults(entry, message):
    refused(reply(files=[{"path": "ok.md", "content": "fine"}, entry][1:]), message)


def test_validate_reply_file_fault_index_is_the_entry():
    files = [{"path": "a", "content": "x"}, {"path": "b", "content": "y"}, {"path": "c", "content": 3}]
    refused(reply(files=files), r"^files\[2\]\.content: expected a string, got number$")


def test_validate_reply_file_unknown_keys_dropped():
    got = check(reply(files=[{"path": "a", "content": "x", "mode": "append", "why": "note"}]))
    assert got["files"] == [{"path": "a", "content": "x", "mode": "append"}]


@pytest.mark.parametrize("update, expected", [
    ({"mode": "skip"}, {"mode": "skip", "content": ""}),
    ({"mode": "skip", "content": None}, {"mode": "skip", "content": ""}),
    ({"mode": "skip", "content": "ignored"}, {"mode": "skip", "content": "ignored"}),
    ({"mode": "append", "content": "- new trait"}, {"mode": "append", "content": "- new trait"}),
    ({"mode": "write", "content": "# Persona\n"}, {"mode": "write", "content": "# Persona\n"}),
])
def test_validate_reply_persona_update_variants(update, expected):
    assert check(reply(persona_update=update))["persona_update"] == expected


@pytest.mark.parametrize("update, message", [
    ({}, r"^persona_update\.mode: expected"),
    ({"content": "x"}, r"^persona_update\.mode: expected"),
    ({"mode": "replace", "content": "x"}, r"^persona_update\.mode: expected"),
    ({"mode": "append"}, r"^persona_update\.content: required"),
    ({"mode": "write", "content": None}, r"^persona_update\.content: expected a string, got null"),
    ({"mode": "append", "content": 3}, r"^persona_update\.content: expected a string, got number"),
    ({"mode": "skip", "content": 3}, r"^persona_update\.content: expected a string, got number"),
])
def test_validate_reply_persona_update_faults(update, message):
    refused(reply(persona_update=update), message)


@pytest.mark.parametrize("actions, message", [
    (["web_fetch"], r"^actions\[0\]: expected an object, got string"),
    ([{"url": "x"}], r"^actions\[0\]\.type: required"),
    ([{"type": "note"}, {"type": 3}], r"^actions\[1\]\.type: expected a string, got number"),
    ([{"type": None}], r"^actions\[0\]\.type: expected a string, got null"),
    ([{"type": "  "}], r"^actions\[0\]\.type: must not be blank"),
])
def test_validate_reply_action_faults(actions, message):
    refused(reply(actions=actions), message)


def test_validate_reply_request_notes_at_limit():
    assert check(reply(request_notes=["a.md", "b.md"]), limit=2)["request_notes"] == ["a.md", "b.md"]


def test_validate_reply_request_notes_over_limit():
    refused(reply(request_notes=["a.md", "b.md", "c.md"]), r"^request_notes: 3 names, at most 2", limit=2)


def test_validate_reply_request_notes_entry_type():
    refused(reply(request_notes=["a.md", 4]), r"^request_notes\[1\]: expected a string, got number")


@pytest.mark.parametrize("obj", [{}, {"work_done": None}, {"work_done": ""}, {"work_done": " \n "}])
def test_validate_reply_blank_work_done_with_inbox(obj):
    refused(obj, "^work_done: .*INBOX must be acknowledged", inbox=True)


@pytest.mark.parametrize("obj, message", [
    ({}, "^work_done: required"), ({"work_done": None}, "^work_done: required"),
    ({"work_done": ""}, "^work_done: must not be blank"),
    ({"work_done": "\t"}, "^work_done: must not be blank"),
])
def test_validate_reply_blank_work_done_without_inbox(obj, message):
    refused(obj, message, inbox=False)


def test_validate_reply_work_done_wrong_type_with_inbox_names_type():
    refused({"work_done": 3}, "^work_done: expected a string, got number", inbox=True)


def test_validate_reply_inbox_acknowledged():
    assert check({"work_done": "Read the INBOX; doing it."}, inbox=True)["work_done"] == \
        "Read the INBOX; doing it."


@pytest.mark.parametrize("obj", [[], "text", None, 3])
def test_validate_reply_not_an_object(obj):
    refused(obj, "^reply: expected an object")


def test_parse_reply_end_to_end():
    text = "Thinking done.\n```json\n" + json.dumps(reply(extra_field=[1], telegram="sent")) + "\n```"
    got = parse_reply(text, max_requested_notes=3, inbox_present=True)
    assert got["work_done"] == "did a thing" and got["telegram"] == "sent"
    assert got["extra"] == {"extra_field": [1]}


def test_parse_reply_extraction_error_propagates():
    with pytest.raises(ResponseError, match="PARSE_ERROR"):
        parse_reply("PARSE_ERROR", max_requested_notes=3, inbox_present=False)


# --- scribe ---------------------------------------------------------------------------------------

def draft(**fields):
    d = {"slug": "my-post", "title": "My post", "body_md": "Body.", "summary_for_chris": "short"}
    d.update(fields)
    return {"kind": "draft", "draft": d}


def test_validate_scribe_draft():
    assert validate_scribe(draft()) == {
        "kind": "draft", "skip": None,
        "draft": {"slug": "my-post", "title": "My post", "body_md": "Body.", "summary_for_chris": "short"},
    }


def test_validate_scribe_summary_optional():
    obj = draft()
    del obj["draft"]["summary_for_chris"]
    assert validate_scribe(obj)["draft"]["summary_for_chris"] == ""


@pytest.mark.parametrize("raw, slug", [
    ("Hello, World!", "hello-world"),
    ("  --Already-fine--  ", "already-fine"),
    ("../../etc/passwd", "etc-passwd"),
    ("Café Über 2024", "caf-ber-2024"),
    ("a" * 59 + " bcd", "a" * 59),
    ("x" * 100, "x" * 60),
])
def test_validate_scribe_slug_normalised(raw, slug):
    assert validate_scribe(draft(slug=raw))["draft"]["slug"] == slug
    assert normalise_slug(raw) == slug


def test_validate_scribe_slug_empty_after_normalising():
    with pytest.raises(ResponseError, match="^draft.slug: nothing left"):
        validate_scribe(draft(slug="!!! ---"))


def test_validate_scribe_skip():
    assert validate_scribe({"kind": "skip", "skip": {"reason": "nothing new"}, "draft": None}) == {
        "kind": "skip", "draft": None, "skip": {"reason": "nothing new"}}


@pytest.mark.parametrize("obj, message", [
    ({}, "^kind: expected 'draft' or 'skip'"),
    ({"kind": "post"}, "^kind: expected"),
    ({"kind": "draft"}, "^draft: required"),
    ({"kind": "draft", "draft": "text"}, "^draft: expected an object, got string"),
    (draft(slug=None), r"^draft\.slug: required"),
    (draft(title=""), r"^draft\.title: must not be blank"),
    (draft(body_md=5), r"^draft\.body_md: expected a string, got number"),
    (draft(summary_for_chris=["x"]), r"^draft\.summary_for_chris: expected a string, got array"),
    ({"kind": "skip"}, "^skip: required"),
    ({"kind": "skip", "skip": "because"}, "^skip: expected an object"),
    ({"kind": "skip", "skip": {}}, r"^skip\.reason: required"),
    ({"kind": "skip", "skip": {"reason": " "}}, r"^skip\.reason: must not be blank"),
    ([], "^reply: expected an object"),
])
def test_validate_scribe_faults(obj, message):
    with pytest.raises(ResponseError, match=message):
        validate_scribe(obj)


def test_parse_scribe_from_fenced_text():
    text = "Draft below.\n```json\n" + json.dumps(draft(slug="Weekly Notes")) + "\n```"
    assert parse_scribe(text)["draft"]["slug"] == "weekly-notes"


def test_parse_scribe_parse_error():
    with pytest.raises(ResponseError):
        parse_scribe("PARSE_ERROR nothing to say")
