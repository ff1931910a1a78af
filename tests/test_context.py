"""Hot-context assembly (§8) and the INBOX claim/archive cycle (§7), without providers."""

import os

import pytest

from mako.context import Block, build, journal_tail_text
from mako.inbox import archive, claim, peek


def blocks(**sizes):
    order = ["MISSION", "INBOX", "CAPABILITIES", "STATE", "NEXT", "JOURNAL", "NOTES_INDEX", "DRAFTS",
             "LAST_RESULTS", "PERSONA", "note:notes/a.md", "note:notes/b.md"]
    out = []
    for key in order:
        n = sizes.get(key.replace(":", "_").replace("/", "_").replace(".", "_"), 400)
        if key == "JOURNAL":
            content = "\n".join(f"#{i} line {i}" for i in range(n // 10))
            out.append(Block(key, key, content, keep="tail"))
        else:
            out.append(Block(key, key, key[0].lower() * n))
    return out


def test_context_blocks_in_order_with_headings():
    message, sizes = build("SYS", blocks(), 100000)
    heads = [line[3:] for line in message.splitlines() if line.startswith("## ")]
    assert heads[:3] == ["MISSION", "INBOX", "CAPABILITIES"] and heads[-1] == "note:notes/b.md"
    assert not sizes["over_cap"] and sizes["total"] == -(-(3 + len(message)) // 4)


@pytest.mark.parametrize("cap", [5000, 2000, 1200, 900, 700])
def test_context_never_over_cap_and_keeps_the_core(cap):
    big = blocks(PERSONA=6000, note_notes_a_md=5000, note_notes_b_md=5000, JOURNAL=4000, CAPABILITIES=3000)
    message, sizes = build("S" * 400, big, cap)
    assert sizes["total"] <= cap
    assert sizes["over_cap"]
    for key, letter in (("MISSION", "m"), ("INBOX", "i"), ("STATE", "s"), ("NEXT", "n")):
        assert f"## {key}\n\n{letter * 400}\n" in message


def test_context_shrinks_lowest_priority_first():
    message, sizes = build("", blocks(note_notes_b_md=3000), 1300)
    assert list(sizes["truncated"]) == ["note:notes/b.md"]
    assert "…[truncated" in message and "## PERSONA\n\n" + "p" * 400 in message


def test_context_journal_keeps_newest_lines():
    message, sizes = build("", blocks(JOURNAL=8000, PERSONA=10), 1100)
    journal = message.split("## JOURNAL\n\n", 1)[1].split("\n## ", 1)[0]
    assert journal.startswith("…[truncated") and "#799 line 799" in journal
    assert all(line.startswith("#") or line.startswith("…") for line in journal.strip().splitlines())


def test_context_journal_tail_reads_from_the_end(tmp_path):
    path = tmp_path / "JOURNAL.md"
    with open(path, "w") as f:
        for i in range(200000):
            f.write(f"#{i} 2026-01-01T00:00:00+00:00 — entry {i}\n")
    assert journal_tail_text(path, lines=3).splitlines() == [
        f"#{i} 2026-01-01T00:00:00+00:00 — entry {i}" for i in (199997, 199998, 199999)]
    text = journal_tail_text(path, max_chars=1000)
    assert text.startswith("…[truncated") and text.endswith("entry 199999\n") and len(text) < 1200


class P:
    def __init__(self, root):
        self.state = root / "state"
        self.archive = root / "archive"
        self.private = self.state / ".mako"
        self.state.mkdir(parents=True)


def test_inbox_claim_archive_cycle(tmp_path):
    p = P(tmp_path)
    (p.state / "INBOX.md").write_text("first\n")
    box = claim(p, 1)
    assert box.present and box.text == "first"
    assert not (p.state / "INBOX.md").exists()
    (p.state / "INBOX.md").write_text("second\n")  # arrives mid-tick
    archive(p, box, now=0)
    assert [f.read_text() for f in p.archive.glob("inbox-*")] == ["first\n"]
    box2 = claim(p, 2)
    assert box2.text == "second"


def test_inbox_failed_tick_presents_claims_again_oldest_first(tmp_path):
    p = P(tmp_path)
    (p.state / "INBOX.md").write_text("one\n")
    claim(p, 1)  # tick 1 fails: nothing archived
    (p.state / "INBOX.md").write_text("two\n")
    box = claim(p, 2)
    assert box.text == "one\n\n---\n\ntwo"
    assert peek(p).text == box.text
    archive(p, box, now=0)
    names = sorted(f.name for f in p.archive.glob("inbox-*"))
    assert len(names) == 2 and names[0] != names[1]  # same second: never overwrites
    assert claim(p, 3).present is False


def test_inbox_text_appended_to_a_claim_after_reading_stays(tmp_path):
    p = P(tmp_path)
    (p.state / "INBOX.md").write_text("part one\n")
    box = claim(p, 1)
    with open(box.claims[0].path, "a") as f:  # a writer still holding the old file open
        f.write("part two\n")
    archive(p, box, now=0)
    assert [f.read_text() for f in p.archive.glob("inbox-*")] == ["part one\n"]
    assert claim(p, 2).text == "part two"


def test_inbox_crash_between_link_and_unlink_is_not_shown_again(tmp_path):
    p = P(tmp_path)
    (p.state / "INBOX.md").write_text("msg\n")
    box = claim(p, 1)
    p.archive.mkdir()
    os.link(box.claims[0].path, p.archive / "inbox-20260101-000000.md")  # archived, then killed
    assert claim(p, 2).present is False
    assert len(list(p.archive.iterdir())) == 1
