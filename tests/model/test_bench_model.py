"""t2mir bench-model runs end to end and reports both timings, their ratio, the cost of each batch's
cached step against the first batch's, and whether the step read the cache in place or gathered."""

from __future__ import annotations

import json

from t2mir_model.cli import main


def test_bench_model_writes_rows(tmp_path, capsys):
    out = tmp_path / "bench.json"
    assert (
        main(
            [
                "bench-model",
                "--context-steps",
                "12",
                "--batch",
                "1",
                "3",
                "--repeats",
                "2",
                "--json",
                str(out),
            ]
        )
        == 0
    )
    rows = json.loads(out.read_text())
    assert [r["batch"] for r in rows] == [1, 3]
    assert all(
        r["full_ms"] > 0 and r["cached_ms"] > 0 and r["speedup"] == r["full_ms"] / r["cached_ms"]
        for r in rows
    )
    assert [r["cached_over_first_batch"] for r in rows] == [1.0, rows[1]["cached_ms"] / rows[0]["cached_ms"]]
    assert [r["read"] for r in rows] == ["in place", "in place"]
    printed = capsys.readouterr().out
    assert "cached step ms" in printed and "vs batch 1" in printed


def test_bench_model_reports_a_gathered_step_for_spread_slots(tmp_path):
    out = tmp_path / "bench.json"
    argv = ["bench-model", "--context-steps", "4", "--batch", "2", "--repeats", "1"]
    assert main([*argv, "--spread", "2", "--json", str(out)]) == 0
    assert json.loads(out.read_text())[0]["read"] == "gathered"
