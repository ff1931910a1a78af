"""The scribe run (§18): draft or skip, never overwrite, never touch worker state, always recorded."""

import hashlib
import json
import os
from datetime import date, datetime

import pytest
import yaml
from conftest import BOT_TOKEN, FALLBACK_KEY, PRIMARY_KEY, SECRETS, THREADS

import scribe as scribe_entry
from fakes import Reply
from mako.scribe import draft_text, recent_notes

DRAFTS = "state/outbox/blog/drafts"
JOURNAL = "".join(f"#{i} 2026-01-0{1 + i // 50}T10:00:00+00:00 — journal line {i}\n" for i in range(1, 101))


def scribe_reply(kind="draft", **fields):
    if kind == "skip":
        obj = {"kind": "skip", "skip": {"reason": fields.get("reason", "nothing new")}}
    else:
        draft = {"slug": "first-week", "title": "First week: picking an idea",
                 "body_md": "I am Mako, an AI.\n\nThis week I compared five ideas.",
                 "summary_for_chris": "Why the ideas list came out the way it did."}
        draft.update(fields)
        obj = {"kind": "draft", "draft": draft}
    return "Here it is.\n```json\n" + json.dumps(obj, ensure_ascii=False) + "\n```\n"


def today():
    return datetime.now().astimezone().strftime("%Y-%m-%d")


def run_scribe(root):
    return scribe_entry.main(["--config", str(root.config_path)])


def scribe_payload(root, n):
    return json.loads(root.read(f"logs/scribe/{n:08d}.json"))


def drafts(root):
    folder = root.p(DRAFTS)
    return sorted(os.listdir(folder)) if folder.exists() else []


def user_message(request):
    return [m for m in request["messages"] if m["role"] == "user"][0]["content"]


def worker_state(root):
    """Hash of every file the worker owns: state/ (minus the scribe's outbox and the wrapper's folder),
    notes/, workdir/, pending/, archive/."""
    out = {}
    for top in ("state", "notes", "workdir", "pending", "archive"):
        for dirpath, dirs, files in os.walk(root.p(top)):
            rel_dir = os.path.relpath(dirpath, root.path)
            if rel_dir.startswith(("state/.mako", "state/outbox")):
                continue
            for name in files:
                rel = os.path.join(rel_dir, name)
                out[rel] = hashlib.sha256(root.p(rel).read_bytes()).hexdigest()
    return out


@pytest.fixture
def seeded(root):
    """A root that has had some worker history: a journal, an index and a few notes."""
    root.p("state").mkdir(parents=True, exist_ok=True)
    root.p("state/JOURNAL.md").write_text(JOURNAL, encoding="utf-8")
    root.p("notes").mkdir(parents=True, exist_ok=True)
    root.p("notes/INDEX.md").write_text("# Notes index\n- ideas.md — five ideas\n", encoding="utf-8")
    root.p("notes/ideas.md").write_text("Idea list: a tiny price-tracker site.\n", encoding="utf-8")
    root.p("state/STATE.md").write_text("Focus: pick an idea\n", encoding="utf-8")
    return root


def test_scribe_draft_writes_file_with_front_matter_and_pings_approvals(seeded, ollama, telegram):
    ollama.reply_content(scribe_reply())
    before = today()
    assert run_scribe(seeded) == 0
    assert drafts(seeded) in ([f"{before}-first-week.md"], [f"{today()}-first-week.md"])
    name = drafts(seeded)[0]
    date = name[:10]
    assert seeded.read(f"{DRAFTS}/{name}") == (
        '---\ntitle: "First week: picking an idea"\n'
        f"date: {date}\nstatus: draft\n---\n\n"
        "I am Mako, an AI.\n\nThis week I compared five ideas.\n")
    pings = telegram.texts(THREADS["approvals"])
    assert len(pings) == 1
    assert "First week: picking an idea" in pings[0]
    assert name in pings[0]
    assert "Why the ideas list came out the way it did." in pings[0]
    assert telegram.texts(THREADS["log"]) == []

    payload = scribe_payload(seeded, 1)
    assert payload["tick_n"] == 1 and payload["mode"] == "scribe" and payload["outcome"] == "ok"
    assert payload["actions"] == []
    assert payload["files_written"][0]["path"] == f"{DRAFTS}/{name}"
    assert payload["parsed_response"]["kind"] == "draft"
    assert payload["llm_attempts"] and payload["raw_content"] == scribe_reply()
    assert [p.get("ok") for p in payload["telegram_posts"]] == [True]
    assert seeded.read("state/.mako/scribe_counter.txt").strip() == "1"


def test_scribe_reads_mission_persona_journal_tail_notes_and_drafts(seeded, ollama):
    seeded.write_config(scribe={"recent_journal_lines": 5})
    seeded.p("state/MISSION.md").write_text("MISSION-MARKER earn honestly\n", encoding="utf-8")
    seeded.p("state/PERSONA.md").write_text("PERSONA-MARKER dry wit\n", encoding="utf-8")
    seeded.p(DRAFTS).mkdir(parents=True)
    seeded.p(f"{DRAFTS}/2026-01-01-hello.md").write_text('---\ntitle: "Hello world"\n---\n', encoding="utf-8")
    ollama.reply_content(scribe_reply("skip"))
    assert run_scribe(seeded) == 0
    request = ollama.chat_requests()[0]
    message = user_message(request)
    system = [m for m in request["messages"] if m["role"] == "system"][0]["content"]
    assert system == (seeded.cfg().paths.prompts / "scribe.md").read_text(encoding="utf-8")
    for expected in ("MISSION-MARKER", "PERSONA-MARKER", "journal line 100", "journal line 96",
                     "five ideas", "tiny price-tracker", "2026-01-01-hello.md", "Hello world"):
        assert expected in message
    assert "journal line 95" not in message
    assert message.index("MISSION-MARKER") < message.index("PERSONA-MARKER") < message.index("journal line 96")


def test_scribe_same_slug_never_overwrites(seeded, ollama, telegram):
    ollama.reply_content(scribe_reply(body_md="first body"))
    ollama.reply_content(scribe_reply(body_md="second body"))
    assert run_scribe(seeded) == 0
    first = drafts(seeded)[0]
    assert run_scribe(seeded) == 0
    names = drafts(seeded)
    assert len(names) == 2
    second = [n for n in names if n != first][0]
    assert second == first[:-3] + "-2.md"
    assert seeded.read(f"{DRAFTS}/{first}").endswith("first body\n")
    assert seeded.read(f"{DRAFTS}/{second}").endswith("second body\n")
    # The second run was shown the first draft, so it can avoid repeating its topic.
    assert first in user_message(ollama.chat_requests()[1])
    assert second in telegram.texts(THREADS["approvals"])[1]
    assert scribe_payload(seeded, 2)["tick_n"] == 2


def test_scribe_skip_posts_reason_to_log_thread(seeded, ollama, telegram):
    ollama.reply_content(scribe_reply("skip", reason="Nothing new since the domain post."))
    assert run_scribe(seeded) == 0
    assert drafts(seeded) == []
    log_posts = telegram.texts(THREADS["log"])
    assert len(log_posts) == 1 and "Nothing new since the domain post." in log_posts[0]
    assert telegram.texts(THREADS["approvals"]) == []
    payload = scribe_payload(seeded, 1)
    assert payload["outcome"] == "ok"
    assert payload["parsed_response"]["skip"]["reason"] == "Nothing new since the domain post."
    assert payload["files_written"] == []


@pytest.mark.parametrize("content", [
    "I would rather not write today.",
    '```json\n{"kind": "draft", "draft": {"slug": "x", "title": "T"}}\n```',
    '```json\n{"kind": "publish"}\n```',
    '```json\n{"kind": "skip", "skip": {"reason": "   "}}\n```',
    'PARSE_ERROR: could not decide',
])
def test_scribe_bad_reply_is_a_recorded_failure(seeded, ollama, telegram, content):
    ollama.reply_content(content)
    assert run_scribe(seeded) == 1
    assert drafts(seeded) == []
    payload = scribe_payload(seeded, 1)
    assert payload["outcome"] == "parse_error"
    assert payload["raw_content"] == content
    assert payload["parsed_response"] is None
    assert payload["errors"] and payload["errors"][0].startswith("ResponseError")
    assert seeded.p("logs/scribe/error-1.log").exists()
    log_posts = telegram.texts(THREADS["log"])
    assert len(log_posts) == 1 and "scribe #1 FAIL" in log_posts[0]
    assert telegram.texts(THREADS["approvals"]) == []


def test_scribe_providers_down_is_a_recorded_failure(seeded, ollama, openai, telegram):
    ollama.push("/api/chat", Reply(500, {"error": "Internal Server Error"}))
    openai.push("/chat/completions", Reply(mode="html"))
    assert run_scribe(seeded) == 1
    payload = scribe_payload(seeded, 1)
    assert payload["outcome"] == "provider_error"
    assert len(payload["llm_attempts"]) == 2
    assert payload["raw_content"] is None
    assert seeded.p("logs/scribe/error-1.log").exists()
    assert "FAIL" in telegram.texts(THREADS["log"])[0]
    assert drafts(seeded) == []
    # A failed run still used its number; the next one does not reuse it.
    ollama.reply_content(scribe_reply("skip"))
    assert run_scribe(seeded) == 0
    assert scribe_payload(seeded, 2)["outcome"] == "ok"


@pytest.mark.parametrize("content", [scribe_reply(), scribe_reply("skip"), "not json"])
def test_scribe_leaves_worker_state_alone(seeded, ollama, content):
    ollama.reply_content(scribe_reply("skip"))
    assert run_scribe(seeded) == 0  # first run seeds any missing layout
    before = worker_state(seeded)
    assert "state/JOURNAL.md" in before and "state/MISSION.md" in before
    ollama.reply_content(content)
    run_scribe(seeded)
    assert worker_state(seeded) == before
    assert not seeded.p("state/tick_counter.txt").exists()
    assert not seeded.p("logs/metrics.csv").exists()
    assert not seeded.p("logs/ticks").exists() or os.listdir(seeded.p("logs/ticks")) == []


def test_scribe_writes_no_secret_anywhere(seeded, ollama, telegram):
    leaked = f"my key is {PRIMARY_KEY} and the bot is {BOT_TOKEN}, also {FALLBACK_KEY}"
    ollama.reply_content(scribe_reply(title=f"Keys {PRIMARY_KEY}", body_md=leaked, summary_for_chris=leaked))
    assert run_scribe(seeded) == 0
    ollama.reply_content(f"garbage {PRIMARY_KEY}")
    assert run_scribe(seeded) == 1
    for rel, data in seeded.all_files_text():
        for secret in SECRETS:
            assert secret.encode() not in data, rel
    for text in [m.get("text", "") for m in telegram.messages]:
        for secret in SECRETS:
            assert secret not in text
    assert "<redacted>" in seeded.read(f"{DRAFTS}/{drafts(seeded)[0]}")


@pytest.mark.parametrize("threads,expected", [
    ({"approvals_thread_id": 0}, "requests"),
    ({"approvals_thread_id": 0, "requests_thread_id": 0}, "log"),
])
def test_scribe_approval_ping_falls_back_to_requests_then_log(seeded, ollama, telegram, threads, expected):
    seeded.write_config(telegram=threads)
    ollama.reply_content(scribe_reply())
    assert run_scribe(seeded) == 0
    assert len(telegram.texts(THREADS[expected])) == 1
    assert "Draft for review" in telegram.texts(THREADS[expected])[0]


def test_scribe_works_with_telegram_off(seeded, ollama, telegram):
    seeded.write_config(telegram={"bot_token": ""})
    ollama.reply_content(scribe_reply())
    assert run_scribe(seeded) == 0
    assert len(drafts(seeded)) == 1
    assert telegram.messages == []


def test_scribe_recent_notes_newest_three_capped_no_index_no_symlinks(tmp_path):
    notes = tmp_path / "notes"
    (notes / "deep").mkdir(parents=True)
    for i, name in enumerate(["a.md", "b.md", "c.md", "deep/d.md", "INDEX.md"]):
        (notes / name).write_text(f"note {name}\n" + ("x" * 10000 if name == "c.md" else ""), encoding="utf-8")
        os.utime(notes / name, (1_700_000_000 + i, 1_700_000_000 + i))
    secret = tmp_path / "config.yaml"
    secret.write_text("api_key: hush\n", encoding="utf-8")
    os.symlink(secret, notes / "zz-link.md")
    got = recent_notes(notes)
    assert [name for name, _ in got] == ["deep/d.md", "c.md", "b.md"]
    assert len(got[1][1]) < 4200 and "truncated" in got[1][1]
    assert all("hush" not in text for _, text in got)


def test_scribe_front_matter_title_is_one_quoted_line():
    text = draft_text('He said "hi"\nthen left', "2026-02-03", "body")
    assert text.splitlines()[:5] == ["---", 'title: "He said \\"hi\\" then left"', "date: 2026-02-03",
                                     "status: draft", "---"]
    meta = yaml.safe_load(text.split("---\n")[1])
    assert meta == {"title": 'He said "hi" then left', "date": date(2026, 2, 3), "status": "draft"}


def test_scribe_real_subprocess_run_drafts(seeded, ollama, telegram):
    ollama.reply_content(scribe_reply(slug="From The Shell!"))
    proc = seeded.run("scribe.py", timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert [n[11:] for n in drafts(seeded)] == ["from-the-shell.md"]
    assert len(telegram.texts(THREADS["approvals"])) == 1
    for secret in SECRETS:
        assert secret not in proc.stdout + proc.stderr


def test_scribe_bad_config_exits_78(tmp_path):
    bad = tmp_path / "config.yaml"
    bad.write_text("scribe:\n  approval_thread: nowhere\n", encoding="utf-8")
    assert scribe_entry.main(["--config", str(bad)]) == 78
