"""Overlay several evaluations in one return-per-episode plot and print their table.

    python -m training.evaluation.compare --out docs/results_darkroom.png --title DarkRoom \\
        "T2MIR-AD=runs/darkroom-t2mir-ad-cpu/eval.json" "AD=runs/darkroom-ad-cpu/eval.json"

A label may name several comma-separated files (training seeds of one variant): they are pooled
into one curve (``training.evaluation.runner.pool_runs``) and the table adds the mean of the
runs' own best episodes.
"""

from __future__ import annotations

import argparse

import numpy as np

from training.evaluation.plots import plot_returns
from training.evaluation.runner import EvalResult, pool_runs
from training.figures import labelled_group


def main(argv: list[str] | None = None) -> int:
    """Parse LABEL=PATH pairs, draw the plot, print a markdown table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", required=True, help="PNG path")
    parser.add_argument("--title")
    parser.add_argument(
        "--reference",
        action="append",
        default=[],
        metavar="LABEL=RETURN",
        help="a dashed reference line, e.g. oracle=-4.63 (python -m training.evaluation.reference)",
    )
    parser.add_argument(
        "runs", nargs="+", help="LABEL=path/to/eval.json, or LABEL=a.json,b.json to pool training seeds"
    )
    args = parser.parse_args(argv)
    references = {}
    for item in args.reference:
        label, sep, value = item.partition("=")
        try:
            references[label] = float(value)
        except ValueError:
            parser.error(f"--reference {item!r} is not LABEL=RETURN")
        if not sep or not label:
            parser.error(f"--reference {item!r} is not LABEL=RETURN")
    results = {}
    for item in args.runs:
        try:
            label, paths = labelled_group(item)
            results[label] = pool_runs([EvalResult.from_json(p) for p in paths])
        except ValueError as exc:
            parser.error(str(exc))
    plot_returns(results, args.out, args.title, references)
    print("| variant | runs | episode 1 | last episode (95% CI) | best episode | mean of the runs' best |")
    print("|---|---|---|---|---|---|")
    for label, r in results.items():
        low, high = r.summary()["last_ci95"]
        run_best = float(np.mean(r.info["run_best"]))
        print(
            f"| {label} | {r.info['runs']} | {r.episode_means[0]:.2f} | {r.last_mean:.2f} ({low:.2f} .. {high:.2f})"
            f" | {r.best_mean:.2f} | {run_best:.2f} |"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
