"""Training curves of several runs in one PNG, read from their TensorBoard logs.

    python -m training.train.curves --tag loss/action --out docs/loss.png \\
        "w/o task MoE=runs/a,runs/b" "w/o token MoE=runs/c"

Each label names one or more run directories (comma-separated training seeds); every run is drawn
as a thin line in its label's colour after a moving average, and the table printed to stdout gives
each run's mean of the tag over the last ``--window`` logged steps.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from training.figures import labelled_group, save_figure, seeds_legend


def read_scalar(run: str | Path, tag: str) -> tuple[np.ndarray, np.ndarray]:
    """(steps (n,), values (n,)) of ``tag`` in ``run``/tb; raises ValueError if the run never logged it."""
    logs = Path(run) / "tb"
    if not logs.is_dir():
        raise ValueError(f"{run}: no TensorBoard directory {logs}")
    events = EventAccumulator(str(logs), size_guidance={"scalars": 0})
    events.Reload()
    if tag not in events.Tags()["scalars"]:
        raise ValueError(f"{run}: no scalar {tag!r} (has {', '.join(sorted(events.Tags()['scalars']))})")
    points = events.Scalars(tag)
    return np.array([p.step for p in points]), np.array([p.value for p in points], dtype=float)


def moving_average(values: np.ndarray, window: int) -> np.ndarray:
    """Trailing mean over up to ``window`` points (n,) -> (n,); the first points average what exists."""
    sums = np.cumsum(np.insert(values, 0, 0.0))
    ends = np.arange(1, values.size + 1)
    starts = np.maximum(ends - window, 0)
    return (sums[ends] - sums[starts]) / (ends - starts)


def main(argv: list[str] | None = None) -> int:
    """Parse LABEL=RUN[,RUN...] groups, draw the curves, print the end-of-training table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tag", default="loss/action", help="TensorBoard scalar (default loss/action)")
    parser.add_argument("--out", required=True, help="PNG path")
    parser.add_argument("--title")
    parser.add_argument("--window", type=int, default=8, help="moving-average window in logged points")
    parser.add_argument("groups", nargs="+", help="LABEL=run_dir or LABEL=run_a,run_b (training seeds)")
    args = parser.parse_args(argv)
    if args.window < 1:
        parser.error("--window must be >= 1")
    curves: dict[str, list[tuple[str, np.ndarray, np.ndarray]]] = {}
    for item in args.groups:
        try:
            label, runs = labelled_group(item)
            curves[label] = [(run, *read_scalar(run, args.tag)) for run in runs]
        except ValueError as exc:
            parser.error(str(exc))
    fig, ax = plt.subplots(figsize=(6.4, 4.0), dpi=120)
    print(f"| variant | run | {args.tag}, mean of the last {args.window} points |")
    print("|---|---|---|")
    for index, (label, group) in enumerate(curves.items()):
        color, name = f"C{index % 10}", seeds_legend(label, len(group))
        for n, (run, steps, values) in enumerate(group):
            ax.plot(
                steps,
                moving_average(values, args.window),
                color=color,
                linewidth=1.2,
                label=None if n else name,
            )
            print(f"| {label} | {run} | {values[-args.window :].mean():.4f} |")
    ax.set_xlabel("training step")
    ax.set_ylabel(f"{args.tag} (moving average of {args.window})")
    ax.set_title(args.title or args.tag)
    ax.grid(alpha=0.3)
    ax.legend()
    save_figure(fig, args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
