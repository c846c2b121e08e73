"""Overlay several evaluations in one return-per-episode plot and print their table.

    python -m training.evaluation.compare --out docs/results_darkroom.png --title DarkRoom \\
        "T2MIR-AD=runs/darkroom-t2mir-ad-cpu/eval.json" "AD=runs/darkroom-ad-cpu/eval.json"
"""

from __future__ import annotations

import argparse

from training.evaluation.plots import plot_returns
from training.evaluation.runner import EvalResult


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
    parser.add_argument("runs", nargs="+", help="LABEL=path/to/eval.json")
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
        label, sep, path = item.partition("=")
        if not sep:
            parser.error(f"{item!r} is not LABEL=PATH")
        results[label] = EvalResult.from_json(path)
    plot_returns(results, args.out, args.title, references)
    print("| variant | episode 1 | last episode (95% CI) | best episode |")
    print("|---|---|---|---|")
    for label, r in results.items():
        low, high = r.summary()["last_ci95"]
        print(
            f"| {label} | {r.episode_means[0]:.2f} | {r.last_mean:.2f} ({low:.2f} .. {high:.2f}) | {r.best_mean:.2f} |"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
