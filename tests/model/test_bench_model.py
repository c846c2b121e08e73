"""t2mir bench-model runs end to end and reports both timings and their ratio."""

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
    assert "cached step ms" in capsys.readouterr().out
