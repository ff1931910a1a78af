"""Hostile model replies, as data: every entry of tests/hostile_corpus.json goes through a real tick, then a
normal tick that must succeed ("no tick wedges the next").

An entry is an object:

- `id`, `description`: what the reply tries and why the expected outcome is the right one.
- `reply`: the model's content. A string is sent as it is; an object is sent in a ```json fence (with a
  `work_done` added unless `bare` is true, and `ascii: true` to escape every non-ASCII character).
- `repeat`: `{name: {unit, times}}` for enormous values kept out of the file. `{{R:name}}` inside a string
  becomes `unit * times`; a list item that is exactly `"{{R:name}}"` with a non-string unit becomes
  `times` copies of the unit.
- Placeholders in any string: `{{ROOT}}`, `{{CANARY}}` (a folder outside the root that must never change),
  `{{REPO}}`, `{{PROMPTS}}`, `{{PRIMARY_KEY}}`, `{{FALLBACK_KEY}}`, `{{BOT_TOKEN}}`, `{{TELEGRAM_URL}}`.
- `config`: overrides merged into the test config. `setup`: shell commands run in the root (with $ROOT,
  $CANARY, $REPO, $PROMPTS set) after the layout exists. `first`: a reply for an earlier tick that must
  succeed with every action ok (how a model plants a symlink with `shell`). `inbox`: operator text.
  `subprocess: true` runs the hostile tick as `python3 tick.py`, as the supervisor would.
- `expect`: `rc` (0 or 1, default 0), `error` (text in the tick's recorded errors: the field that was
  wrong), `outcome` (default ok / parse_error), `files` (statuses of the
  `files[]` writes, in order), `actions` (statuses of the actions; an item may be a list of allowed
  statuses), `action_counts` ({status: n}), `untouched` / `absent` / `exists` (paths, root-relative unless
  absolute), `contains` / `lacks` ({path: text}), `payload_contains` (texts in the tick's payload), `queue`
  (lines in pending/pending_actions.jsonl), `max_posts` (Telegram sendMessage calls during the tick),
  `provider` (the slot that answered, default primary: a reply the client turned away would make every
  other expectation vacuous), `next_request_lacks` (texts the next tick must not send to the provider).
- `shell_copies`: files the entry's own shell filled with a secret (the agent is root and may copy the
  config); left out of the file scan, while everything the wrapper writes or sends from them is still
  checked.

Checked for every entry whatever it expects: no configured secret in any file under the root other than
config.yaml, in any Telegram message, or in any request body sent to a provider; nothing outside the root
changed (a canary folder beside it, symlink targets included) and the corpus marker never reached the
code or prompts; the tick returned 0 or 1 and raised nothing; a
failed tick wrote logs/error-N.log whose exception is one of EXPECTED_ERRORS, a good one wrote none; no
action result carries a programming error (TypeError, ValueError, ...) caught by the action guard.

The shell denylist is a tripwire and this suite runs as whatever user runs pytest (often root): every
`shell` action expected to be refused is checked against the denylist *before* its tick runs, so a
regression fails the test instead of running `rm -fr /`.
"""

import copy
import hashlib
import json
import os
import re
import subprocess
from pathlib import Path

import pytest

from conftest import BOT_TOKEN, FALLBACK_KEY, PRIMARY_KEY, REPO, SECRETS, deep_merge, reply

from mako.denylist import denylist_match

HERE = Path(__file__).resolve().parent
CORPUS_FILE = HERE / "hostile_corpus.json"
CORPUS = json.loads(CORPUS_FILE.read_text(encoding="utf-8"))["entries"]

# A failed tick may only fail the ways a hostile reply is supposed to make it fail.
EXPECTED_ERRORS = {"ResponseError", "AllProvidersFailed"}
# An action result naming one of these means the action guard caught a bug, not a refusal.
PROGRAMMING_ERRORS = ("TypeError", "AttributeError", "KeyError", "IndexError", "ValueError", "UnicodeError",
                      "UnicodeEncodeError", "UnicodeDecodeError", "RecursionError", "AssertionError",
                      "NameError", "OverflowError", "ZeroDivisionError", "NotImplementedError")
CRASH_RE = re.compile(r"^(?:%s)\b" % "|".join(PROGRAMMING_ERRORS))
MARK = "HOSTILE-CORPUS-MARK"  # what the entries aimed at the code and prompts try to write there
CORPUS_CONFIG = {"tick": {"shell_timeout_s": 2, "http_timeout_s": 2}}


# -- expanding an entry --------------------------------------------------------------------------------------

def _expand(value, names, repeats):
    if isinstance(value, str):
        for key, text in names.items():
            value = value.replace("{{%s}}" % key, text)
        for key, spec in repeats.items():
            token = "{{R:%s}}" % key
            if token in value and isinstance(spec["unit"], str):
                value = value.replace(token, spec["unit"] * spec["times"])
        return value
    if isinstance(value, list):
        out = []
        for item in value:
            if isinstance(item, str) and item.startswith("{{R:") and item.endswith("}}") and item[4:-2] in repeats:
                spec = repeats[item[4:-2]]
                unit = _expand(spec["unit"], names, repeats)
                out.extend(copy.deepcopy(unit) for _ in range(spec["times"]))
                continue
            out.append(_expand(item, names, repeats))
        return out
    if isinstance(value, dict):
        return {_expand(k, names, repeats): _expand(v, names, repeats) for k, v in value.items()}
    return value


def reply_text(spec, names, repeats, bare=False, ascii_only=False):
    body = _expand(spec, names, repeats)
    if isinstance(body, str):
        return body
    if not bare:
        body.setdefault("work_done", "hostile entry")
    return "```json\n" + json.dumps(body, ensure_ascii=ascii_only) + "\n```\n"


# -- what must not change -----------------------------------------------------------------------------------

def tree_state(folder, skip=None):
    """{relative path: (kind, content hash or link target, mtime)} of everything under folder."""
    out = {}
    for dirpath, dirs, files in os.walk(folder):
        if skip is not None:
            dirs[:] = [d for d in dirs if Path(dirpath, d) != skip]
        for name in dirs + files:
            full = Path(dirpath) / name
            if full == skip:
                continue
            st = full.lstat()
            if full.is_symlink():
                out[str(full.relative_to(folder))] = ("link", os.readlink(full), st.st_mtime_ns)
            elif full.is_file():
                out[str(full.relative_to(folder))] = ("file", hashlib.sha256(full.read_bytes()).hexdigest(),
                                                     st.st_mtime_ns)
            else:
                out[str(full.relative_to(folder))] = ("dir", None, None)
    return out


def repo_marked():
    """Code, prompts and seeds carrying the corpus marker: a write through a symlink reached them.

    Other changes to the checkout are not this suite's business (and may be happening as it runs)."""
    hits = []
    for pattern in ("*.py", "mako/*.py", "prompts/*", "seed/**/*"):
        for path in sorted(REPO.glob(pattern)):
            if path.is_file() and MARK.encode() in path.read_bytes():
                hits.append(str(path.relative_to(REPO)))
    return hits


def file_bytes(path):
    return path.read_bytes() if path.is_file() and not path.is_symlink() else None


def secret_hits(root, skip=()):
    """(where, secret) for every secret found anywhere the system writes or sends, except config.yaml (and
    copies of it an entry's own shell command made: the agent is root, what matters is that nothing the
    wrapper writes or sends from them carries a secret)."""
    hits = []
    for dirpath, _dirs, files in os.walk(root.path):
        for name in files:
            full = Path(dirpath) / name
            if full == root.config_path or full in skip or full.is_symlink() or not full.is_file():
                continue
            data = full.read_bytes()
            hits += [(str(full), s) for s in SECRETS if s.encode() in data]
    for msg in root.telegram.messages:
        hits += [("telegram", s) for s in SECRETS if s in str(msg.get("text"))]
    for req in root.ollama.requests + root.openai.requests:
        hits += [(f"provider {req.path}", s) for s in SECRETS if s.encode() in req.body]
    return hits


def final_exception(trace):
    """The class name of the exception a traceback ends with."""
    lines = trace.splitlines()
    starts = [i for i, line in enumerate(lines) if line.startswith("Traceback")]
    for line in lines[(starts[-1] + 1) if starts else 0:]:
        if line and not line[0].isspace():
            return line.split(":", 1)[0].rsplit(".", 1)[-1]
    return None


# -- running ------------------------------------------------------------------------------------------------

class Run:
    """One corpus entry against a fresh root."""

    def __init__(self, entry, root, tmp_path):
        self.entry = entry
        self.root = root
        self.expect = entry.get("expect", {})
        self.canary = tmp_path / "canary"
        (self.canary / "sub").mkdir(parents=True)
        (self.canary / "target.txt").write_text("canary: must never change\n")
        (self.canary / "sub" / "inner.txt").write_text("inner canary\n")
        self.outside = tmp_path
        self.names = {"ROOT": str(root.path), "CANARY": str(self.canary), "REPO": str(REPO),
                      "PROMPTS": str(REPO / "prompts"), "PRIMARY_KEY": PRIMARY_KEY, "FALLBACK_KEY": FALLBACK_KEY,
                      "BOT_TOKEN": BOT_TOKEN, "TELEGRAM_URL": root.telegram.url}
        self.repeats = entry.get("repeat", {})
        self.problems = []

    def expand(self, value):
        return _expand(value, self.names, self.repeats)

    def path(self, rel):
        rel = self.expand(rel)
        return Path(rel) if os.path.isabs(rel) else self.root.path / rel

    def tick_n(self):
        return int(self.root.read("state/tick_counter.txt").strip())

    def prepare(self):
        root, entry = self.root, self.entry
        root.write_config(**deep_merge(copy.deepcopy(CORPUS_CONFIG), entry.get("config", {})))
        root.layout()
        env = {**os.environ, **{k: v for k, v in self.names.items() if k in ("ROOT", "CANARY", "REPO", "PROMPTS")}}
        for cmd in entry.get("setup", []):
            subprocess.run(cmd, shell=True, cwd=root.path, env=env, check=True, timeout=30)
        if "first" in entry:
            root.ollama.reply_content(reply_text(entry["first"], self.names, self.repeats))
            assert root.tick() == 0, "the entry's first tick failed"
            first = root.payload(self.tick_n())
            assert all(a["status"] == "ok" for a in first["actions"]), first["actions"]
        if "inbox" in entry:
            root.p("state/INBOX.md").write_text(entry["inbox"])

    def preflight(self):
        """Refuse to run a tick whose 'refused' shell command the denylist would let through."""
        statuses = self.expect.get("actions") or []
        body = self.entry["reply"]
        actions = body.get("actions") if isinstance(body, dict) else None
        if not isinstance(actions, list):
            return
        denylist = self.root.cfg().guardrails.shell_denylist_substrings
        for action, status in zip(actions, statuses):
            if isinstance(action, dict) and action.get("type") == "shell" and status == "refused":
                cmd = _expand(action.get("cmd"), self.names, self.repeats)
                if denylist_match(cmd, denylist) is None:
                    pytest.fail(f"not running {cmd!r}: the denylist no longer refuses it")

    def hostile_tick(self, text):
        root = self.root
        root.ollama.reply_content(text)
        posts_before = len(root.telegram.messages)
        if self.entry.get("subprocess"):
            proc = root.run("tick.py", timeout=120)
            rc = proc.returncode
            if "Traceback (most recent call last)" in proc.stderr:
                self.uncaught(f"traceback on stderr: {proc.stderr[-800:]}")
            for s in SECRETS:
                if s in proc.stdout or s in proc.stderr:
                    self.problems.append(("leak", f"secret on the tick's stdout/stderr: {s[:6]}…"))
        else:
            try:
                rc = root.tick()
            except BaseException as e:  # noqa: BLE001 — the figure being measured
                self.uncaught(f"tick raised {type(e).__name__}: {e}")
                return None
        self.posts = len(root.telegram.messages) - posts_before
        return rc

    def uncaught(self, message):
        self.problems.append(("uncaught", message))

    def check_failure_record(self, n, rc):
        log = self.root.p(f"logs/error-{n}.log")
        if rc == 1:
            if not log.exists():
                self.uncaught(f"tick {n} failed without logs/error-{n}.log")
            else:
                kind = final_exception(log.read_text(encoding="utf-8", errors="replace"))
                if kind not in EXPECTED_ERRORS:
                    self.uncaught(f"tick {n} failed with an unexpected {kind}")
        elif rc == 0 and log.exists():
            self.uncaught(f"tick {n} succeeded but wrote {log.name}")
        elif rc not in (0, 1):
            self.uncaught(f"tick {n} exited {rc}")
        raw = self.root.p(f"logs/ticks/{n:08d}.json").read_bytes()
        try:
            payload = json.loads(raw.decode("utf-8"))
        except UnicodeDecodeError as e:
            self.problems.append(("invalid", f"tick {n}'s payload is not UTF-8: {e}"))
            payload = json.loads(raw.decode("utf-8", "replace"))
        for result in payload["actions"] + payload["files_written"]:
            if result.get("status") == "error" and CRASH_RE.match(str(result.get("error", ""))):
                self.uncaught(f"tick {n}: {result.get('type')} crashed: {result['error'][:200]}")
        for err in payload["errors"]:
            if "while recording the failure" in err:
                self.uncaught(f"tick {n}: {err[:200]}")
        return payload


def _status_ok(actual, allowed):
    return actual in allowed if isinstance(allowed, list) else actual == allowed


def check_expectations(run, payload, rc):
    """The entry's own expectations, right after its tick."""
    expect, root = run.expect, run.root
    want_rc = expect.get("rc", 0)
    assert rc == want_rc, (rc, payload["errors"], payload["actions"][:3])
    assert payload["outcome"] == expect.get("outcome", "ok" if want_rc == 0 else "parse_error")
    if "error" in expect:
        assert any(expect["error"] in e for e in payload["errors"]), payload["errors"]
    row = next(r for r in root.metrics() if r["tick_n"] == str(payload["tick_n"]))
    # A reply the provider client turned away would leave every other expectation vacuous.
    assert row["provider_used"] == expect.get("provider", "primary"), row["provider_used"]
    if "files" in expect:
        files = [w["status"] for w in payload["files_written"] if "mode" in w]
        assert len(files) == len(expect["files"]), payload["files_written"]
        for got, want in zip(files, expect["files"]):
            assert _status_ok(got, want), payload["files_written"]
    if "actions" in expect:
        got = [a["status"] for a in payload["actions"]]
        assert len(got) == len(expect["actions"]), payload["actions"]
        for status, want, result in zip(got, expect["actions"], payload["actions"]):
            assert _status_ok(status, want), result
    if "action_counts" in expect:
        counts = {}
        for a in payload["actions"]:
            counts[a["status"]] = counts.get(a["status"], 0) + 1
        assert counts == expect["action_counts"]
    for rel in expect.get("exists", []):
        assert os.path.lexists(run.path(rel)), f"{rel} missing"
    for rel, text in expect.get("contains", {}).items():
        assert run.expand(text) in run.path(rel).read_text(errors="replace"), rel
    for rel, text in expect.get("lacks", {}).items():
        assert run.expand(text) not in run.path(rel).read_text(errors="replace"), rel
    dumped = json.dumps(payload, ensure_ascii=False)
    for text in expect.get("payload_contains", []):
        assert text in dumped, text
    if "queue" in expect:
        queue = root.p("pending/pending_actions.jsonl")
        lines = queue.read_text().splitlines() if queue.exists() else []
        assert len(lines) == expect["queue"]
        for line in lines:
            json.loads(line)
    if "max_posts" in expect:
        assert run.posts <= expect["max_posts"], run.posts


def check_untouched(run, before):
    """Files that must not change and paths that must not appear, after the hostile tick and the next."""
    for path, data in before.items():
        assert file_bytes(path) == data, f"{path} changed"
    for rel in run.expect.get("absent", []):
        assert not os.path.lexists(run.path(rel)), f"{rel} exists"


ALWAYS_UNTOUCHED = ("config.yaml", "state/MISSION.md", "state/CAPABILITIES.md")


@pytest.mark.parametrize("entry", [pytest.param(entry, id=entry["id"]) for entry in CORPUS])
def test_hostile_reply_contained_and_next_tick_runs(entry, root, tmp_path):
    run = Run(entry, root, tmp_path)
    run.prepare()
    text = reply_text(entry["reply"], run.names, run.repeats, bare=entry.get("bare", False),
                      ascii_only=entry.get("ascii", False))
    run.preflight()
    outside_before = tree_state(run.outside, skip=root.path)
    watched = [run.path(p) for p in (*ALWAYS_UNTOUCHED, *run.expect.get("untouched", []))]
    before = {p: file_bytes(p) for p in watched}

    rc = run.hostile_tick(text)
    n = run.tick_n()
    payload = run.check_failure_record(n, rc) if rc is not None else None
    requests_before = len(root.ollama.requests)
    if payload is not None:
        check_expectations(run, payload, rc)
        check_untouched(run, before)

    # No tick wedges the next: an ordinary reply right after must succeed.
    root.ollama.reply_content(reply(work_done="ordinary tick after a hostile one"))
    try:
        next_rc = root.tick()
    except BaseException as e:  # noqa: BLE001
        run.uncaught(f"the next tick raised {type(e).__name__}: {e}")
        next_rc = None
    if next_rc != 0:
        run.problems.append(("wedged", f"the next tick returned {next_rc}"))
    else:
        run.check_failure_record(n + 1, 0)
    later = b"".join(r.body for r in root.ollama.requests[requests_before:])
    for text_ in run.expect.get("next_request_lacks", []):
        assert run.expand(text_).encode() not in later, text_

    outside_after = tree_state(run.outside, skip=root.path)
    changed = sorted(k for k in set(outside_before) | set(outside_after)
                     if outside_before.get(k) != outside_after.get(k))
    if changed:
        run.problems.append(("escape", f"outside the root: {changed[:5]} changed"))
    if repo_marked():
        run.problems.append(("escape", f"the code or prompts were written: {repo_marked()}"))
    leaks = secret_hits(root, skip=[run.path(p) for p in entry.get("shell_copies", [])])
    if leaks:
        run.problems.append(("leak", f"secrets found: {leaks[:5]}"))
    # Every problem of every kind (escape, leak, uncaught, wedged) fails the entry: the corpus figures are 0.
    assert not run.problems, run.problems
    check_untouched(run, before)


ENTRY_KEYS = {"id", "description", "reply", "repeat", "config", "setup", "first", "inbox", "subprocess", "expect",
              "bare", "ascii", "shell_copies"}
EXPECT_KEYS = {"rc", "error", "outcome", "provider", "files", "actions", "action_counts", "untouched", "absent", "exists",
               "contains", "lacks", "payload_contains", "queue", "max_posts", "next_request_lacks"}


def test_hostile_corpus_is_large_and_well_formed():
    ids = [e["id"] for e in CORPUS]
    assert len(ids) >= 60 and len(set(ids)) == len(ids)
    for e in CORPUS:
        assert e.get("description") and "reply" in e and "expect" in e, e.get("id")
        assert set(e) <= ENTRY_KEYS and set(e["expect"]) <= EXPECT_KEYS, e["id"]
    assert sum(1 for e in CORPUS if e.get("subprocess")) >= 4
