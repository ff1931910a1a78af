"""analyse.py and mako.stats: exact figures from known metrics, junk rows, empty and missing files, a year."""

import importlib.util
from datetime import datetime, timedelta, timezone

import pytest

import analyse
from conftest import REPO
from mako.logs import METRICS_COLUMNS, metrics_row_text
from mako.stats import histogram, parse_ts, percentile, read_table, summarize

START = datetime(2025, 3, 1, 12, 0, tzinfo=timezone.utc)
HEADER = ",".join(METRICS_COLUMNS) + "\n"


def tick_row(n, **over):
    row = {"ts": (START + timedelta(minutes=5 * (n - 1))).isoformat(timespec="seconds"), "tick_n": n,
           "mode": "normal", "wall_s": float(n), "provider_used": "primary", "model_used": "qwen3.5",
           "input_tokens_est": 1000 * n, "output_chars": 100 * n, "actions_count": 2, "actions_executed": 1,
           "actions_queued": 1, "parse_ok": True, "drift_flag": "", "compact_now": False, "failures": "",
           "outcome": "ok", "llm_wall_s": 1.0, "prompt_tokens": 900, "completion_tokens": 50}
    row.update(over)
    return row


def known_rows():
    """20 ticks 5 minutes apart, wall 1..20 s; 3 failures, 2 compactions, 4 fallbacks, 2 drift flags."""
    rows = [tick_row(n) for n in range(1, 21)]
    rows[4].update(outcome="parse_error", parse_ok=False, failures="PARSE_ERROR: no json")
    rows[9].update(outcome="timeout", failures="provider timeout, after 180s")
    rows[14].update(outcome="parse_error", parse_ok=False, failures="PARSE_ERROR: bad type")
    for i in (6, 12):
        rows[i].update(mode="compact", actions_count=0, actions_executed=0, actions_queued=0)
    for i in (1, 2, 3, 17):
        rows[i].update(provider_used="fallback", model_used="qwen3.6")
    rows[7].update(drift_flag="off mission", compact_now=True)
    rows[18].update(drift_flag="off mission")
    return rows


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
    assert "  parse failures (parse_ok false): 2 (10.0%)" in lines
    assert "  normal          18  90.0%" in lines
    assert "  compact          2  10.0%" in lines
    assert "  primary         16  80.0%" in lines
    assert "  fallback         4  20.0%" in lines
    assert "  qwen3.6          4  20.0%" in lines
    assert "wall_s (s, 20 values): mean 10.50 · p50 10.00 · p95 19.00 · p99 20.00 · max 20.00" in lines
    assert ("input_tokens_est (tokens, 20 values): mean 10,500.00 · p50 10000 · p95 19000 · p99 20000 · "
            "max 20000") in lines
    assert "output_chars (chars, 20 values): mean 1,050.00 · p50 1000 · p95 1900 · p99 2000 · max 2000" in lines
    assert "  count     total         36 · 1.80 per tick" in lines
    assert "  executed  total         18 · 0.90 per tick" in lines
    assert "  queued    total         18 · 0.90 per tick" in lines
    assert "  prompt 18,000 on 20 ticks · completion 1,000 on 20 ticks" in lines
    assert "  drift flags raised: 2 (10.0%)" in lines
    assert "         2× off mission" in lines
    assert "  compact_now true: 1 · compaction ticks: 2" in lines
    tail = lines[lines.index("Recent failures (last 3 of 3)") + 1:]
    assert tail == ["  2025-03-01T12:20:00+00:00  #5  parse_error  PARSE_ERROR: no json",
                    "  2025-03-01T12:45:00+00:00  #10  timeout  provider timeout, after 180s",
                    "  2025-03-01T13:10:00+00:00  #15  parse_error  PARSE_ERROR: bad type"]


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
        metrics_row_text(tick_row(5, wall_s="fast", input_tokens_est="lots", outcome="ok")),
        metrics_row_text(tick_row(6))[:60] + "\n",        # torn row: kept, its missing cells unknown
        metrics_row_text(tick_row(7)).rstrip("\n") + ",extra,cells\n",
        "2025-03-01T12:35:00+00:00,8,normal,\"half a quoted cell\n",  # crash mid-field: open quote
        metrics_row_text(tick_row(9, wall_s=9.0, failures="line one\nline two, with comma", outcome="fail")),
        metrics_row_text(tick_row(10, wall_s="nan")).replace("normal", "nor\x00mal"),
    ]
    path = root.p("logs/metrics.csv")
    path.parent.mkdir(parents=True)
    path.write_text(HEADER + "".join(lines[:2]) + "".join(junk) + "".join(lines[2:]))
    table = read_table(path)
    assert table.skipped == 1 and table.blank == 1
    assert [t.strip() for t in table.col("tick_n")] == ["1", "2", "5", "6", "7", "8", "9", "10", "3", "4"]
    assert table.col("failures")[6] == "line one\nline two, with comma"
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
                        "  2025-03-01T12:40:00+00:00  #9  fail  line one line two, with comma"]


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
