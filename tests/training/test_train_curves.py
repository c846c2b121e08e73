"""`python -m training.train.curves`: TensorBoard scalars of several runs in one PNG and a table."""

from __future__ import annotations

import numpy as np
import pytest
from torch.utils.tensorboard import SummaryWriter

from training.train.curves import main, moving_average, read_scalar


def _run(tmp_path, name: str, values: list[float]):
    run = tmp_path / name
    with SummaryWriter(str(run / "tb")) as writer:
        for step, value in enumerate(values):
            writer.add_scalar("loss/action", value, (step + 1) * 25)
    return run


def test_read_scalar_returns_the_logged_points(tmp_path):
    run = _run(tmp_path, "a", [3.0, 2.0, 1.0])
    steps, values = read_scalar(run, "loss/action")
    assert steps.tolist() == [25, 50, 75]
    assert values.tolist() == [3.0, 2.0, 1.0]
    with pytest.raises(ValueError, match="no scalar 'loss/total'"):
        read_scalar(run, "loss/total")
    with pytest.raises(ValueError, match="no TensorBoard directory"):
        read_scalar(tmp_path / "missing", "loss/action")


def test_moving_average_is_trailing_and_starts_with_what_exists():
    assert moving_average(np.array([1.0, 3.0, 5.0, 7.0]), 2).tolist() == [1.0, 2.0, 4.0, 6.0]
    assert moving_average(np.array([4.0]), 5).tolist() == [4.0]


def test_groups_of_seeds_draw_one_png_and_print_each_run(tmp_path, capsys):
    a, b = _run(tmp_path, "a", [2.0, 1.0, 0.5, 0.5]), _run(tmp_path, "b", [2.0, 1.5, 1.0, 1.0])
    c = _run(tmp_path, "c", [2.0, 2.0, 2.0, 2.0])
    out = tmp_path / "curves.png"
    assert main(["--out", str(out), "--window", "2", f"pair={a},{b}", f"flat={c}"]) == 0
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    rows = capsys.readouterr().out.splitlines()[2:]
    assert rows == [f"| pair | {a} | 0.5000 |", f"| pair | {b} | 1.0000 |", f"| flat | {c} | 2.0000 |"]


@pytest.mark.parametrize("bad", ["nolabel", "=runs/a", "x="])
def test_malformed_groups_are_refused(tmp_path, bad):
    with pytest.raises(SystemExit):
        main(["--out", str(tmp_path / "p.png"), bad])
