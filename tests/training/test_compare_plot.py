"""`python -m training.evaluation.compare`: overlay of evaluations with reference lines, and its table."""

from __future__ import annotations

import numpy as np
import pytest

from training.evaluation.compare import main
from training.evaluation.runner import EvalResult


def _result(tmp_path, name: str, offset: float):
    returns = np.arange(12, dtype=float).reshape(3, 4) + offset  # 3 tasks x 4 episodes
    result = EvalResult("t2mir/PointRobot-v0", ["test:0", "test:1", "test:2"], returns, 0, True)
    result.write(tmp_path / f"{name}.json")
    return tmp_path / f"{name}.json"


def test_compare_draws_a_png_and_prints_the_table(tmp_path, capsys):
    a, b = _result(tmp_path, "a", 0.0), _result(tmp_path, "b", -20.0)
    out = tmp_path / "plot.png"
    assert (
        main(
            ["--out", str(out), "--reference", "oracle=-4.6", "--reference", "stay=-23.8", f"A={a}", f"B={b}"]
        )
        == 0
    )
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    table = capsys.readouterr().out.splitlines()
    assert table[2] == "| A | 1 | 4.00 | 7.00 (3.00 .. 11.00) | 7.00 | 7.00 |"
    assert table[3].startswith("| B | 1 | -16.00 | -13.00")


def test_comma_separated_seeds_pool_into_one_curve(tmp_path, capsys):
    a, b = _result(tmp_path, "a", 0.0), _result(tmp_path, "b", -20.0)
    assert main(["--out", str(tmp_path / "p.png"), f"both={a},{b}"]) == 0
    row = capsys.readouterr().out.splitlines()[2]
    # episode means pool 6 (seed, task) rows: (4 + -16) / 2 = -6 first, -3 last and best; each
    # seed's own best is 7 and -13, so their mean is -3 as well
    assert row.startswith("| both | 2 | -6.00 | -3.00 (")
    assert row.endswith("| -3.00 | -3.00 |")


def test_pool_runs_keeps_each_runs_best_and_refuses_mismatched_runs():
    from training.evaluation.runner import pool_runs

    early = EvalResult("t2mir/DarkRoom-v0", ["test:0", "test:1"], np.array([[0.0, 9.0], [2.0, 1.0]]), 0, True)
    late = EvalResult("t2mir/DarkRoom-v0", ["test:0", "test:1"], np.array([[8.0, 0.0], [6.0, 0.0]]), 0, True)
    pooled = pool_runs([early, late])
    assert pooled.returns.shape == (4, 2)
    assert pooled.episode_means.tolist() == [4.0, 2.5]
    assert pooled.info == {"runs": 2, "run_best": [5.0, 7.0]}
    other_tasks = EvalResult("t2mir/DarkRoom-v0", ["test:0", "test:2"], late.returns, 0, True)
    other_seed = EvalResult("t2mir/DarkRoom-v0", ["test:0", "test:1"], late.returns, 1, True)
    for bad in (other_tasks, other_seed):
        with pytest.raises(ValueError, match="must share"):
            pool_runs([early, bad])
    with pytest.raises(ValueError, match="nothing"):
        pool_runs([])


@pytest.mark.parametrize("bad", ["oracle", "oracle=high", "=3"])
def test_malformed_reference_lines_are_refused(tmp_path, bad):
    a = _result(tmp_path, "a", 0.0)
    with pytest.raises(SystemExit):
        main(["--out", str(tmp_path / "p.png"), "--reference", bad, f"A={a}"])


def test_axis_label_names_held_out_tasks_only_when_every_curve_is_held_out():
    from training.evaluation.plots import _task_noun

    held_out = EvalResult("t2mir/PointRobot-v0", ["test:0", "test:1"], np.zeros((2, 3)), 0, True)
    train = EvalResult("t2mir/PointRobot-v0", ["train:0", "train:1", "train:2"], np.zeros((3, 3)), 0, True)
    assert _task_noun({"a": held_out}) == "2 held-out tasks"
    assert _task_noun({"a": held_out, "b": train}) == "tasks"
    assert _task_noun({"b": train}) == "3 tasks"
    pooled = EvalResult("t2mir/PointRobot-v0", ["test:0", "test:1"] * 3, np.zeros((6, 3)), 0, True)
    assert _task_noun({"a": pooled}) == "2 held-out tasks"
