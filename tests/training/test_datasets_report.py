"""Dataset summaries and learning-history plots drawn from manifests."""

from __future__ import annotations

import json

import numpy as np

from training.datasets.report import history_matrix, main, summary
from training.datasets.synthetic import write_synthetic_dataset


def test_summary_and_plot(tmp_path, capsys):
    root = write_synthetic_dataset(tmp_path / "ds", n_tasks=3, n_episodes=20)
    manifest = json.loads((root / "manifest.json").read_text())
    manifest["tasks"][1]["returns"] = manifest["tasks"][1]["returns"][:10]  # a shorter (Medium) history
    returns = history_matrix(manifest)
    assert returns.shape == (3, 20) and np.isnan(returns[1, 10:]).all()
    info = summary(manifest)
    assert info["tasks"] == 3 and info["return_last_10pct"] > info["return_first_10pct"]
    png = tmp_path / "plot.png"
    assert main([str(root), "--png", str(png)]) == 0
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert json.loads(capsys.readouterr().out)["episodes"] == 60
