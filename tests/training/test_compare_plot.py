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
    assert table[2] == "| A | 4.00 | 7.00 (3.00 .. 11.00) | 7.00 |"
    assert table[3].startswith("| B | -16.00 | -13.00")


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
