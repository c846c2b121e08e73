"""The prompt probe plays real Point-Robot episodes through the engine and reports directions."""

from __future__ import annotations

import math
from pathlib import Path

from t2mir_model import T2MIRPolicy
from training.evaluation.prompt_probe import main, probe

CHECKPOINT = Path(__file__).resolve().parents[2] / "checkpoints" / "pointrobot-t2mir-ad"


def test_probe_rows_follow_the_episodes(capsys):
    policy = T2MIRPolicy.from_pretrained(CHECKPOINT)
    rows = probe(policy, ["test:0", "test:1"], episodes=3)
    assert [(r.task, r.episode) for r in rows] == [(t, e) for t in ("test:0", "test:1") for e in range(3)]
    for r in rows:
        assert -1.0 - 1e-6 <= r.cos_goal <= 1.0 + 1e-6
        assert -20 * 2.0 < r.ret < 0  # 20 steps of a negative distance reward
        assert math.isnan(r.cos_previous) == (r.episode == 0)
        if r.episode:
            assert -1.0 - 1e-6 <= r.cos_previous <= 1.0 + 1e-6
    assert main(["--checkpoint", str(CHECKPOINT), "--tasks", "1", "--episodes", "2"]) == 0
    assert "cos(action, goal)" in capsys.readouterr().out
