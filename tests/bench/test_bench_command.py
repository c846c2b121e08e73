"""``t2mir bench`` end to end with a tiny checkpoint, and the report it writes (JSON, figures, docs)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from server.bench.report import REPORT_KEYS, RUN_KEYS, SCHEMA
from server.bench.stats import metrics_delta, parse_metrics
from t2mir_model.cli import main


@pytest.fixture(scope="module")
def bench_run(tmp_path_factory: pytest.TempPathFactory, darkroom_checkpoint: Path) -> tuple[int, dict, Path]:
    """One short run: private redis-server, t2mir serve, baseline, 1 and 2 sessions, growth 1,2."""
    out = tmp_path_factory.mktemp("bench-run")
    code = main(
        [
            "bench",
            "--checkpoint", str(darkroom_checkpoint),
            "--duration", "2",
            "--warmup", "0.2",
            "--sessions", "1,2",
            "--context-episodes", "1,2",
            "--growth-repeats", "2",
            "--prefill-episodes", "0",
            "--parity-acts", "60",
            "--label", "test run",
            "--server-arg=--compile=off",  # compiling the step would add tens of seconds
            "--json", str(out / "report.json"),
            "--plots", str(out / "docs"),
            "--markdown", str(out / "docs" / "benchmarks.md"),
        ]
    )  # fmt: skip
    return code, json.loads((out / "report.json").read_text()), out


def test_bench_command_end_to_end(bench_run, capsys):
    code, report, out = bench_run
    assert code == 0
    assert report["schema"] == SCHEMA
    assert set(REPORT_KEYS) <= set(report)
    assert report["config"]["store"] == "redis" and report["config"]["env"] == "darkroom"
    assert report["parity"] == {"acts": 60, "mismatches": 0, "first_mismatch": None}
    assert [(r["target"], r["sessions"]) for r in report["runs"]] == [
        ("t2mir", 1),
        ("t2mir", 2),
        ("baseline", 1),
        ("baseline", 2),
    ]
    for run in report["runs"]:
        assert set(RUN_KEYS) <= set(run)
        assert run["errors"] == 0 and run["acts"] > 0
        assert set(run["latency_ms"]) == {"p50", "p95", "p99", "mean", "max"}
        assert run["cpu_percent"]["server"] is not None
        if run["target"] == "t2mir":
            assert run["batch"]["mean"] >= 1 and run["cache"]["hit_rate"] is not None
            assert run["cpu_percent"]["redis"] is not None
    ceiling = report["ceiling"]
    assert ceiling["connections"] == 2 and ceiling["errors"] == 0 and ceiling["requests_per_s"] > 0
    for run in report["runs"]:
        share = run["acts_per_s"] / ceiling["requests_per_s"] if run["target"] == "t2mir" else None
        assert run["ceiling_share"] == share
    assert report["transport_ratios"] == []  # HTTP only
    assert [(r["sessions"], r["transport"]) for r in report["ratios"]] == [(1, "http"), (2, "http")]
    assert all(r["throughput_ratio"] > 0 and r["p50_latency_ratio"] > 0 for r in report["ratios"])
    growth = report["growth"]
    assert [r["episodes"] for r in growth["rows"]] == [1, 2]
    assert growth["policy"]["d_model"] == 32 and growth["policy"]["context_episodes"] >= 3
    for row in growth["rows"]:
        assert row["context_tokens"] == 300 * row["episodes"] and row["cached_ms"] > 0 and row["full_ms"] > 0
    batches = growth["batches"]
    assert [r["batch"] for r in batches["rows"]] == [1, 8, 32] and batches["rows"][0]["over_first"] == 1.0
    assert batches["context_tokens"] == 3 * batches["context_steps"] and batches["full_over_cached"] > 1
    assert sorted(report["plots"]) == ["growth", "latency", "throughput"]
    assert all(Path(p).stat().st_size > 1000 for p in report["plots"].values())
    doc = (out / "docs" / "benchmarks.md").read_text()
    for heading in ("## Machine", "## Command", "## Latency and throughput", "## Against the naive baseline",
                    "## Where the time of one act goes", "## Cost growth with context", "## How the act path is built",
                    "## Against the server's own HTTP ceiling"):  # fmt: skip
        assert heading in doc
    assert "t2mir bench --checkpoint" in doc and "](benchmarks_latency.png)" in doc
    assert "](performance.md)" in doc and "### Batch scaling" in doc and "sessions <= 3x one session's" in doc


def test_report_only_mode_rerenders_a_saved_report(bench_run, tmp_path, capsys):
    _, _, out = bench_run
    doc = tmp_path / "benchmarks.md"
    assert main(["bench", "--from-json", str(out / "report.json"), "--markdown", str(doc)]) == 0
    assert "## Cost growth with context" in doc.read_text()
    out = capsys.readouterr().out
    assert "cost growth with context" in out and "against the server's own HTTP ceiling" in out


def test_metrics_delta_from_two_scrapes():
    before = parse_metrics(
        't2mir_batch_size_bucket{le="1.0"} 3\nt2mir_batch_size_bucket{le="2.0"} 3\n'
        't2mir_batch_size_bucket{le="4.0"} 4\nt2mir_batch_size_bucket{le="+Inf"} 4\n'
        "t2mir_batch_size_sum 7\nt2mir_batch_size_count 4\n"
        "t2mir_kv_cache_hits_total 10\nt2mir_kv_cache_misses_total 2\n"
    )
    after = parse_metrics(
        't2mir_batch_size_bucket{le="1.0"} 5\nt2mir_batch_size_bucket{le="2.0"} 8\n'
        't2mir_batch_size_bucket{le="4.0"} 10\nt2mir_batch_size_bucket{le="+Inf"} 10\n'
        "t2mir_batch_size_sum 25\nt2mir_batch_size_count 10\n"
        "t2mir_kv_cache_hits_total 28\nt2mir_kv_cache_misses_total 4\n"
    )
    delta = metrics_delta(before, after)
    assert delta["engine_calls"] == 6
    assert delta["batch"]["mean"] == 3.0
    assert delta["batch"]["histogram"] == [
        {"sizes": "1", "calls": 2},
        {"sizes": "2", "calls": 3},
        {"sizes": "3-4", "calls": 1},
    ]
    assert delta["cache"] == {"hits": 18, "misses": 2, "hit_rate": 0.9}
