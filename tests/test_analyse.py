"""analyse.py and mako.stats: exact figures from known metrics, junk rows, empty and missing files, a year."""

import importlib.util
import traceback
from datetime import datetime, timedelta, timezone

import pytest

import analyse
from conftest import REPO
from mako.errors import AllProvidersFailed, ResponseError
from mako.llm import LLMResult
from mako.logs import METRICS_COLUMNS, metrics_row_text, write_error_log
from mako.redact import Redactor
from mako.report import metrics_row
from mako.response import validate_reply
from mako.stats import histogram, parse_ts, percentile, read_table, summarize

START = datetime(2025, 3, 1, 12, 0, tzinfo=timezone.utc)
HEADER = ",".join(METRICS_COLUMNS) + "\n"


def tick_row(n, outcome="ok", mode="normal", slot="primary", drift_flag=None, compact_now=False, ts=None,
             wall_s=None):
    """Tick n's metrics row as the worker builds it (mako.report.metrics_row) for a tick that ended in
    `outcome`: ok/fail after a valid reply (two actions: one run, one queued; none in a compaction),
    parse_error after a reply that failed validation, timeout/provider_error with no reply at all. Wall n s
    (unless given), 1000n input tokens, 100n output chars."""
    ts = ts or (START + timedelta(minutes=5 * (n - 1))).isoformat(timespec="seconds")
    llm = reply = None
    actions = []
    if outcome not in ("timeout", "provider_error"):
        llm = LLMResult(slot=slot, type="ollama" if slot == "primary" else "openai_compat",
                        model="qwen3.5" if slot == "primary" else "qwen3.6", content="x" * (100 * n),
                        prompt_tokens=900, completion_tokens=50, wall_s=1.0)
    if outcome in ("ok", "fail"):
        work = [] if mode == "compact" else [{"type": "shell", "cmd": "true"}, {"type": "email_send"}]
        reply = validate_reply({"work_done": f"tick {n}", "actions": work, "drift_flag": drift_flag,
                                "compact_now": compact_now}, max_requested_notes=3, inbox_present=False)
        actions = [{"type": "shell", "ok": True, "status": "ok"},
                   {"type": "email_send", "ok": True, "status": "queued", "id": f"q{n}"}][:len(work)]
    return metrics_row(ts, n, mode, float(n) if wall_s is None else wall_s, outcome, llm, reply, actions, (),
                       1000 * n)


def known_rows():
    """20 ticks 5 minutes apart, wall 1..20 s; 3 failures, 2 compactions, 4 fallbacks, 2 drift flags."""
    rows = []
    for n in range(1, 21):
        rows.append(tick_row(
            n, outcome={5: "parse_error", 10: "timeout", 15: "parse_error"}.get(n, "ok"),
            mode="compact" if n in (7, 13) else "normal", slot="fallback" if n in (2, 3, 4, 18) else "primary",
            drift_flag="off mission" if n in (8, 19) else None, compact_now=n == 8))
    return rows


def failure_logs(logs):
    """The error-N.log files the worker writes for the failed ticks of known_rows()."""
    for n, error in ((5, ResponseError("no JSON object in the reply")),
                     (10, AllProvidersFailed("all providers failed (primary: timeout; fallback: timeout)")),
                     (15, ResponseError("work_done: expected a string, got number"))):
        try:
            raise error
        except Exception:
            write_error_log(logs, n, f"tick {n} (normal) failed at {START.isoformat()}\n"
                            + traceback.format_exc(), Redactor([]))


def write_metrics(path, rows, header=True):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text((HEADER if header else "") + "".join(metrics_row_text(r) for r in rows), encoding="utf-8")
    return path


def run(root, capsys, *args):
    rc = analyse.main(["--config", str(root.config_path), *args])
    out, err = capsys.readouterr()
    return rc, out, err


# -- statistics -----------------------------------------------------------------------------------------

def test_stats_percentile_nearest_rank_by_hand():
    ten = list(range(1, 11))
    assert percentile(ten, 50) == 5
    assert percentile(ten, 95) == 10
    assert percentile(list(range(1, 21)), 95) == 19
    assert percentile(list(range(1, 201)), 99) == 198
    # The textbook nearest-rank example: 15, 20, 35, 40, 50.
    five = [15, 20, 35, 40, 50]
    assert [percentile(five, p) for p in (5, 30, 40, 50, 100)] == [15, 20, 20, 35, 50]
    assert percentile(five, 0) == 15
    assert percentile([], 50) is None


def test_stats_summarize_mean_and_percentiles():
    s = summarize([3.0, 1.0, 2.0, 4.0])
    assert (s.n, s.mean, s.p50, s.p95, s.p99, s.min, s.max) == (4, 2.5, 2.0, 4.0, 4.0, 1.0, 4.0)
    assert summarize([]) is None


def test_stats_histogram_bins_and_fixed_width():
    lines = histogram([0.0, 0.0, 0.0, 5.0, 10.0], bins=2, width=6, fmt="{:.0f}")
    assert lines == ["  [ 0 –  5) ██████       3  60.0%",
                     "  [ 5 – 10] ████         2  40.0%"]
    assert histogram([7.0, 7.0], bins=10) == [f"  [7.0 – 7.0] {'█' * 40}       2 100.0%"]
    assert histogram([]) == []


def test_stats_parse_ts_forms():
    assert parse_ts("2025-03-01T12:00:00+00:00") == START
    assert parse_ts("2025-03-01T13:00:00+01:00") == START
    assert parse_ts("2025-03-01T12:00:00Z") == START
    assert parse_ts("2025-03-01T12:00:00") == START
    assert parse_ts("yesterday") is None
    assert parse_ts("") is None


# -- the report -----------------------------------------------------------------------------------------

def test_analyse_report_exact_figures(root, capsys):
    # 289.5 s interval + 10.5 s mean wall = one tick per 300 s, exactly the rows' spacing.
    root.write_config(supervisor={"tick_interval_s": 289.5})
    write_metrics(root.p("logs/metrics.csv"), known_rows())
    failure_logs(root.p("logs"))
    rc, out, _ = run(root, capsys)
    assert rc == 0
    lines = out.splitlines()
    assert lines[0] == f"metrics: {root.p('logs/metrics.csv')}"
    assert lines[1] == "rows: 20"
    assert "  first   2025-03-01T12:00:00+00:00" in lines
    assert "  last    2025-03-01T13:35:00+00:00" in lines
    assert "  hours   1.58" in lines
    assert "  ticks   20 · 12.63/h · one every 300.0 s on average" in lines
    assert ("  cadence tick_interval_s 289.5 s + mean wall 10.5 s → expected ~20 ticks, actual 20 (100.0%)"
            in lines)
    assert "Outcomes (failed: 3, 15.0%)" in lines
    assert "  ok                 17  85.0%" in lines
    assert "  parse_error         2  10.0%" in lines
    assert "  timeout             1   5.0%" in lines
    # The timed-out tick got no reply to parse: unknown, not failed.
    assert "  parse failures (parse_ok false): 2 (10.0%) · parse_ok unknown: 1" in lines
    assert "  normal          18  90.0%" in lines
    assert "  compact          2  10.0%" in lines
    assert "  primary         15  75.0%" in lines
    assert "  fallback         4  20.0%" in lines
    assert "  (none)           1   5.0%" in lines  # no provider answered tick 10
    assert "  qwen3.5         15  75.0%" in lines
    assert "  qwen3.6          4  20.0%" in lines
    assert "wall_s (s, 20 values): mean 10.50 · p50 10.00 · p95 19.00 · p99 20.00 · max 20.00" in lines
    assert ("input_tokens_est (tokens, 20 values): mean 10,500.00 · p50 10000 · p95 19000 · p99 20000 · "
            "max 20000") in lines
    # 100..2000 without tick 10's 1000: the 10th of 19 is 1100.
    assert "output_chars (chars, 19 values): mean 1,052.63 · p50 1100 · p95 2000 · p99 2000 · max 2000" in lines
    # 17 ticks with a valid reply: 15 with two actions (one run, one queued), 2 compactions with none.
    assert "  count     total         30 · 1.76 per tick" in lines
    assert "  executed  total         15 · 0.88 per tick" in lines
    assert "  queued    total         15 · 0.88 per tick" in lines
    assert "  prompt 17,100 on 19 ticks · completion 950 on 19 ticks" in lines
    assert "  drift flags raised: 2 (10.0%)" in lines
    assert "         2× off mission" in lines
    assert "  compact_now true: 1 · compaction ticks: 2" in lines
    tail = lines[lines.index("Recent failures (last 3 of 3)") + 1:]
    # The reason is the exception that ended the tick, from its logs/error-N.log.
    assert tail == ["  2025-03-01T12:20:00+00:00  #5  parse_error  ResponseError: no JSON object in the reply",
                    "  2025-03-01T12:45:00+00:00  #10  timeout  AllProvidersFailed: all providers failed "
                    "(primary: timeout; fallback: timeout)",
                    "  2025-03-01T13:10:00+00:00  #15  parse_error  ResponseError: work_done: expected a string, "
                    "got number"]


def test_analyse_histograms_cover_every_row(root, capsys):
    write_metrics(root.p("logs/metrics.csv"), known_rows())
    _, out, _ = run(root, capsys)
    lines = out.splitlines()
    start = next(i for i, ln in enumerate(lines) if ln.startswith("wall_s ("))
    bars = lines[start + 1:start + 11]
    assert len(bars) == 10 and all(b.startswith("  [") for b in bars)
    assert sum(int(b.split()[-2]) for b in bars) == 20
    assert len({len(b) for b in bars}) == 1  # fixed width, whatever the count
    assert bars[0].startswith("  [ 1.00 –  2.90) ") and bars[-1].startswith("  [18.10 – 20.00] ")
    assert "█" * 40 in "".join(bars)


def test_analyse_only_last_ten_failures(root, capsys):
    rows = [tick_row(n, outcome="fail" if n % 2 else "ok") for n in range(1, 31)]
    write_metrics(root.p("logs/metrics.csv"), rows)
    _, out, _ = run(root, capsys)
    lines = out.splitlines()
    i = lines.index("Recent failures (last 10 of 15)")
    shown = [ln.split()[1] for ln in lines[i + 1:]]
    assert shown == [f"#{n}" for n in range(11, 30, 2)]


def test_analyse_missing_file_exits_1(root, capsys):
    rc, out, err = run(root, capsys)
    assert rc == 1
    assert out == ""
    assert err.strip() == f"analyse: no metrics file at {root.p('logs/metrics.csv')}"


@pytest.mark.parametrize("content", ["", HEADER])
def test_analyse_empty_file_says_no_rows(root, capsys, content):
    path = root.p("logs/metrics.csv")
    path.parent.mkdir(parents=True)
    path.write_text(content)
    rc, out, _ = run(root, capsys)
    assert rc == 0
    assert out.strip() == f"analyse: no rows in {path}"


def test_analyse_metrics_option_reads_another_file(root, capsys, tmp_path):
    other = write_metrics(tmp_path / "old.csv", known_rows()[:4])
    rc, out, _ = run(root, capsys, "--metrics", str(other))
    assert rc == 0
    assert out.splitlines()[:2] == [f"metrics: {other}", "rows: 4"]


def test_analyse_junk_rows_are_skipped_or_unknown(root, capsys):
    rows = known_rows()[:4]
    good = "".join(metrics_row_text(r) for r in rows)
    lines = good.splitlines(keepends=True)
    junk = [
        "not,a,row\n",                                     # bad ts: skipped
        "\n",                                              # blank: ignored
        metrics_row_text({**tick_row(5), "wall_s": "fast", "input_tokens_est": "lots"}),
        metrics_row_text(tick_row(6))[:60] + "\n",        # torn row: kept, its missing cells unknown
        metrics_row_text(tick_row(7)).rstrip("\n") + ",extra,cells\n",
        "2025-03-01T12:35:00+00:00,8,normal,\"half a quoted cell\n",  # crash mid-field: open quote
        # A quoted cell across two lines, as rows were written before cells were kept to one line.
        metrics_row_text(tick_row(9, outcome="fail", drift_flag="CELL")).replace(
            "CELL", '"line one\nline two, with comma"'),
        metrics_row_text({**tick_row(10), "wall_s": "nan"}).replace("normal", "nor\x00mal"),
    ]
    path = root.p("logs/metrics.csv")
    path.parent.mkdir(parents=True)
    path.write_text(HEADER + "".join(lines[:2]) + "".join(junk) + "".join(lines[2:]))
    table = read_table(path)
    assert table.skipped == 1 and table.blank == 1
    assert [t.strip() for t in table.col("tick_n")] == ["1", "2", "5", "6", "7", "8", "9", "10", "3", "4"]
    assert table.col("drift_flag")[6] == "line one\nline two, with comma"
    assert table.col("mode")[7] == "normal"
    rc, out, _ = run(root, capsys)
    assert rc == 0
    assert "rows: 10 (1 unreadable rows skipped)" in out
    # Readable wall times: ticks 1, 2, 6, 7, 9, 3, 4 (5 "fast", 8 cut inside a quote, 10 nan).
    assert "wall_s (s, 7 values): mean 4.57 · p50 4.00 · p95 9.00 · p99 9.00 · max 9.00" in out
    # A row torn before its outcome is not known to be ok: it counts as a failure of unknown kind.
    failures = out.splitlines()[out.splitlines().index("Recent failures (last 3 of 3)") + 1:]
    assert failures == ["  2025-03-01T12:25:00+00:00  #6  (unknown)",
                        "  2025-03-01T12:35:00+00:00  #8  (unknown)",
                        "  2025-03-01T12:40:00+00:00  #9  fail"]


def test_analyse_headerless_file_uses_standard_columns(tmp_path):
    path = write_metrics(tmp_path / "m.csv", known_rows()[:3], header=False)
    table = read_table(path)
    assert len(table) == 3 and table.col("tick_n") == ["1", "2", "3"]


def test_analyse_bad_config_exits_78(tmp_path, capsys):
    bad = tmp_path / "config.yaml"
    bad.write_text("llm: {}\nsupervisor:\n  tick_interval_s: soon\n")
    assert analyse.main(["--config", str(bad)]) == 78
    assert "supervisor.tick_interval_s" in capsys.readouterr().err


def test_analyse_subprocess_prints_report(root):
    write_metrics(root.p("logs/metrics.csv"), known_rows())
    done = root.run("analyse.py")
    assert done.returncode == 0, done.stderr
    assert "rows: 20" in done.stdout and "Recent failures (last 3 of 3)" in done.stdout


def test_analyse_year_of_ticks(root, capsys, tmp_path):
    spec = importlib.util.spec_from_file_location("analyse_year", REPO / "bench" / "analyse_year.py")
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    path = tmp_path / "year.csv"
    bench.write_year(path, bench.YEAR_ROWS)
    rc, out, _ = run(root, capsys, "--metrics", str(path))
    assert rc == 0
    assert "rows: 105,120" in out
    assert "  first   2025-01-01T00:00:00+00:00" in out
    assert "  last    2025-12-31T23:55:00+00:00" in out


def test_analyse_provider_health_rates_and_kinds(root, capsys):
    from fakes import Reply

    import analyse

    root.ollama.push("/api/chat", *[Reply(500, {"error": "down"})] * 2, Reply(200, mode="malformed"))
    for _ in range(5):
        root.tick()
    assert analyse.main(["--config", str(root.config_path)]) == 0
    lines = capsys.readouterr().out.splitlines()
    at = lines.index("Providers: primary failed on 3 of 5 ticks (60.0%) · fallback answered 3 (60.0%) · "
                     "none answered 0")
    assert lines[at + 1] == "  failure kinds: primary 2 http_500, 1 bad_json"
    assert lines[at - 1] == "" and at < next(i for i, line in enumerate(lines) if line.startswith("Recent failures"))


def test_analyse_reads_what_real_ticks_wrote_with_line_breaks_and_reasons(root, capsys):
    import csv
    from conftest import reply
    flag = 'off\rmission\u2028again\nand, "again"'
    root.ollama.reply_content(reply(drift_flag=flag))
    assert root.tick() == 0
    root.ollama.reply_content("I could not decide what to do.")
    assert root.tick() == 1
    with open(root.p("logs/metrics.csv"), newline="", encoding="utf-8") as f:
        records = list(csv.reader(f))
    assert len(records) == 3 and all(len(r) == 19 for r in records)
    # The cell keeps the whole flag on one line, its breaks shown as escapes.
    assert records[1][records[0].index("drift_flag")] == 'off\\rmission\\u2028again\\nand, "again"'
    assert records[2][records[0].index("failures")] == "0"
    rc, out, _ = run(root, capsys)
    assert rc == 0
    lines = out.splitlines()
    assert "rows: 2" in lines and '         1× off\\rmission\\u2028again\\nand, "again"' in lines
    tail = lines[lines.index("Recent failures (last 1 of 1)") + 1:]
    assert len(tail) == 1 and tail[0].endswith("  #2  parse_error  ResponseError: no JSON object in the reply")
