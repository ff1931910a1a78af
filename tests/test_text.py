"""The one truncation marker and the helpers that cut text (mako/text.py), pinned as an operator reads them."""

from mako.context import head_text, journal_tail_text
from mako.redact import Redactor, clip
from mako.report import last_results
from mako.text import marker, short, truncate


def test_text_marker_is_pinned():
    assert marker(12) == "…[truncated 12 chars]"
    assert marker(300, "bytes") == "…[truncated 300 bytes]"
    assert marker("more than 8192", "bytes") == "…[truncated more than 8192 bytes]"


def test_text_truncate_fits_the_limit_and_counts_what_it_cut():
    assert truncate("x" * 10, 10) == "x" * 10
    cut = truncate("x" * 100, 40)
    assert cut == "x" * 18 + "…[truncated 82 chars]" and len(cut) <= 40


def test_text_short_folds_whitespace_onto_one_line():
    assert short("a\n  b\tc", 80) == "a b c"
    assert short("word " * 100, 50).endswith("chars]") and len(short("word " * 100, 50)) <= 50


def test_text_head_of_a_long_file_says_how_many_bytes_were_left_out(tmp_path):
    path = tmp_path / "STATE.md"
    path.write_text("é" * 100)  # 200 bytes
    assert head_text(path, 30) == "é" * 30 + "\n…[truncated 140 bytes]"
    assert head_text(path, 100) == "é" * 100


def test_text_journal_tail_for_compaction_counts_the_older_bytes(tmp_path):
    path = tmp_path / "JOURNAL.md"
    lines = [f"#{i} line {i}" for i in range(1000)]
    path.write_text("\n".join(lines) + "\n")
    text = journal_tail_text(path, max_chars=100)
    first, rest = text.split("\n", 1)
    assert first == marker(path.stat().st_size - len(rest.encode()), "bytes")
    assert rest.endswith("#999 line 999\n") and len(rest) <= 100


def test_text_clip_marks_bytes_cut_and_unknown_rest():
    r = Redactor([])
    assert clip(r, b"a" * 50, 10, 50) == ("a" * 10 + "…[truncated 40 bytes]", True)
    assert clip(r, b"a" * 11, 10, None) == ("a" * 10 + "…[truncated more than 10 bytes]", True)


def test_text_last_results_over_its_cap_ends_with_the_marker():
    actions = [{"type": "shell", "ok": True, "status": "ok", "summary": "x" * 1500, "cmd": "y" * 1500}] * 20
    text = last_results(1, "normal", "2026-12-01T00:00:00+00:00", "primary", "m", [], actions, ())
    assert len(text.encode()) <= 16 * 1024
    assert text.rstrip("\n").rsplit("\n", 1)[1].startswith("…[truncated ") and text.endswith(" bytes]\n")
