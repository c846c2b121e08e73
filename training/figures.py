"""Writing matplotlib figures as PNG files, the one way every plot of the project is saved."""

from __future__ import annotations

from pathlib import Path
from typing import Any


def save_figure(fig: Any, path: str | Path) -> Path:
    """Lay ``fig`` out tightly, write it to ``path`` (parents created) and close it; returns the path."""
    import matplotlib.pyplot as plt

    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(out)
    plt.close(fig)
    return out


def labelled_group(item: str) -> tuple[str, list[str]]:
    """``LABEL=a`` or ``LABEL=a,b,...`` (one variant's training seeds) -> (label, [a, b, ...]);
    raises ValueError when the label or the paths are missing."""
    label, sep, paths = item.partition("=")
    if not sep or not label or not paths:
        raise ValueError(f"{item!r} is not LABEL=PATH[,PATH...]")
    return label, paths.split(",")


def seeds_legend(label: str, runs: int) -> str:
    """Legend entry of a curve pooled or drawn from ``runs`` training seeds."""
    return f"{label} ({runs} seeds)" if runs > 1 else label
