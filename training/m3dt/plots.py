"""M3DT result figures from ``t2mir eval`` JSON files: variants compared, and score against a swept
number (experts, tasks). Each point is the mean over training seeds of the mean score over tasks,
with a 95% t-interval over the seeds (none for a single seed).

    python -m training.m3dt.plots bars docs/m3dt_variants.png \\
        "M3DT-8=docs/evals/m3dt-8-s0.json" "Prompt-DT (active)=docs/evals/m3dt-dense-active-s0.json"
    python -m training.m3dt.plots sweep docs/m3dt_experts.png --xlabel experts "M3DT@2=a.json" "M3DT@8=b.json" \\
        --reference "Prompt-DT (active)=c.json" --log2-x
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from training.figures import labelled_group, save_figure, seeds_legend

from .evaluate import mean_ci


def seed_scores(paths: list[str]) -> list[float]:
    """The mean score over tasks of the first result of each eval JSON (one per training seed)."""
    return [float(json.loads(Path(p).read_text())[0]["mean_score"]) for p in paths]


def plot_bars(groups: dict[str, list[float]], png: str | Path, title: str) -> Path:
    """One bar per variant: mean over seeds with its 95% interval."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 3.5))
    labels = [seeds_legend(k, len(v)) for k, v in groups.items()]
    stats = [mean_ci(v) for v in groups.values()]
    ax.bar(labels, [m for m, _ in stats], yerr=[h for _, h in stats], capsize=4, color="tab:blue")
    ax.set_ylabel("mean score over tasks")
    ax.set_title(title)
    ax.tick_params(axis="x", labelrotation=15)
    return save_figure(fig, png)


def plot_sweep(
    curves: dict[str, dict[float, list[float]]],
    png: str | Path,
    xlabel: str,
    title: str,
    references: dict[str, list[float]] | None = None,
    log2_x: bool = False,
) -> Path:
    """Score against a swept number, one line per label, 95% intervals over seeds; each reference
    (a model outside the sweep, e.g. a dense baseline) is a horizontal line with its interval."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5.5, 3.5))
    for label, points in curves.items():
        xs = sorted(points)
        stats = [mean_ci(points[x]) for x in xs]
        ax.errorbar(xs, [m for m, _ in stats], yerr=[h for _, h in stats], marker="o", capsize=3, label=label)
    for n, (label, scores) in enumerate((references or {}).items()):
        mean, half = mean_ci(scores)
        color = f"C{len(curves) + n}"
        ax.axhline(mean, color=color, linestyle="--", label=seeds_legend(label, len(scores)))
        ax.axhspan(mean - half, mean + half, color=color, alpha=0.12)
    if log2_x:
        ax.set_xscale("log", base=2)
        ax.set_xticks(sorted({x for points in curves.values() for x in points}))
        ax.xaxis.set_major_formatter(matplotlib.ticker.ScalarFormatter())
    ax.set_xlabel(xlabel)
    ax.set_ylabel("mean score over tasks")
    ax.set_title(title)
    ax.legend()
    return save_figure(fig, png)


def main(argv: list[str] | None = None) -> None:
    """CLI: ``bars PNG LABEL=JSON[,JSON...] ...`` or ``sweep PNG --xlabel X LABEL@X=JSON[,...] ...``."""
    parser = argparse.ArgumentParser(prog="python -m training.m3dt.plots")
    parser.add_argument("kind", choices=["bars", "sweep"])
    parser.add_argument("png")
    parser.add_argument("groups", nargs="+", help="LABEL=JSON,... (bars) or LABEL@X=JSON,... (sweep)")
    parser.add_argument("--xlabel", default="experts per block")
    parser.add_argument("--title", default="M3DT suite")
    parser.add_argument(
        "--reference", action="append", default=[], help="sweep: LABEL=JSON,... drawn as a horizontal line"
    )
    parser.add_argument("--log2-x", action="store_true", help="sweep: a base-2 logarithmic x axis")
    args = parser.parse_args(argv)
    if args.kind == "bars":
        groups = {label: seed_scores(paths) for label, paths in map(labelled_group, args.groups)}
        print(plot_bars(groups, args.png, args.title))
        return
    curves: dict[str, dict[float, list[float]]] = {}
    for label_x, paths in map(labelled_group, args.groups):
        label, _, x = label_x.rpartition("@")
        curves.setdefault(label, {})[float(x)] = seed_scores(paths)
    references = {label: seed_scores(paths) for label, paths in map(labelled_group, args.reference)}
    print(plot_sweep(curves, args.png, args.xlabel, args.title, references, args.log2_x))


if __name__ == "__main__":
    main()
