"""``t2mir viz`` on the shipped DarkRoom T2MIR-AD and a tiny collected dataset: plots and routing summary."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from t2mir_model import T2MIRPolicy
from t2mir_model.cli import main

CHECKPOINT = Path(__file__).resolve().parents[2] / "checkpoints" / "darkroom-t2mir-ad"


def test_viz_writes_the_insight_plots_from_real_routing(tmp_path):
    data = tmp_path / "darkroom-tiny"
    assert (
        main(
            [
                "collect",
                "--env",
                "darkroom",
                "--quality",
                "mixed",
                "--budget",
                "tiny",
                "--out",
                str(data),
                "--no-progress",
            ]
        )
        == 0
    )
    out = tmp_path / "viz"
    argv = ["viz", "--checkpoint", str(CHECKPOINT), "--dataset", str(data), "--tasks", "3", "--rows", "2"]
    assert main([*argv, "--out", str(out)]) == 0
    config = T2MIRPolicy.from_pretrained(CHECKPOINT).config
    summary = json.loads((out / "summary.json").read_text())
    assert summary["variant"] == "T2MIR-AD"
    for layer in summary["layers"]:
        n = layer["layer"]
        counts = np.array(layer["token_counts_by_modality"])  # (3 modalities, token experts)
        assert counts.shape == (3, config.moe.token_experts) and (counts >= 0).all() and counts.sum() > 0
        weights = np.array(layer["task_weights"])  # (tasks, task experts)
        assert weights.shape[0] == 3 and np.allclose(weights.sum(1), 1.0, atol=1e-4)
        for name in (f"token_modality_layer{n}.png", f"task_weights_layer{n}.png", f"task_tsne_layer{n}.png"):
            assert (out / name).stat().st_size > 0
    similarity = summary["gradient_similarity_mean_offdiag"]["T2MIR-AD"]
    assert -1.0 <= similarity <= 1.0 and (out / "gradient_similarity.png").stat().st_size > 0
