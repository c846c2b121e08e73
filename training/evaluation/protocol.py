"""The results protocol: how a checkpoint is measured, and what a measurement records.

A checkpoint's card holds the settings its numbers were measured with (``metrics``: evaluation
seeds, episodes, task split and split seed, sampling, exploration noise, and for AD the context rule
for unrewarded episodes). ``card_protocol`` reads
them back so that ``t2mir eval --checkpoint C`` with no other flag plays C the way its card was
measured. Several evaluation seeds are summarised by the mean over seeds of each seed's figure
(best episode mean, last episode mean) and a 95% Student-t interval over the seeds
(``t_interval``); with one seed the interval collapses to the value. Every evaluation and every
training card records its provenance: the command that reproduces it, the git commit of the code
and the sha256 of the dataset's manifest (``provenance``).
"""

from __future__ import annotations

import math
import shlex
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
from scipy import stats

from t2mir_model import ConfigError, T2MIRPolicy, UnrewardedContext, card_action_noise
from training.datasets.format import MANIFEST_NAME, sha256_file
from training.evaluation.runner import EvalResult, stack_seeds

INTERVAL = "95% Student-t interval over evaluation seeds"
"""What the ``ci95`` of a figure measured at several evaluation seeds is (recorded beside it)."""

REPO_ROOT = Path(__file__).resolve().parents[2]
COMMITTED_MANIFESTS = REPO_ROOT / "docs" / "manifests"
"""Committed copies of the manifests of the datasets the shipped models trained on (by dataset name)."""


@dataclass(frozen=True)
class EvalProtocol:
    """Everything that decides an evaluation's numbers besides the checkpoint."""

    seeds: tuple[int, ...]
    episodes: int
    tasks: str = "test"
    split_seed: int = 0
    sample: bool = True
    action_noise: float = 0.0
    unrewarded_context: UnrewardedContext | None = None
    """AD: the context rule for unrewarded episodes played (None: the checkpoint config's)."""

    def command(self, checkpoint: str) -> str:
        """The ``t2mir eval`` command line that replays this protocol on ``checkpoint``."""
        argv = ["t2mir", "eval", "--checkpoint", checkpoint, "--episodes", str(self.episodes)]
        argv += ["--seeds", ",".join(str(s) for s in self.seeds), "--tasks", self.tasks]
        argv += ["--split-seed", str(self.split_seed)]
        if not self.sample:
            argv.append("--greedy")
        if self.action_noise:
            argv += ["--action-noise", f"{self.action_noise:g}"]
        if self.unrewarded_context is not None:
            argv += ["--unrewarded-context", self.unrewarded_context]
        return shlex.join(argv)


def card_protocol(card: dict[str, Any], default_episodes: int) -> EvalProtocol:
    """The protocol a card's ``metrics`` were measured with (seed 0 and ``default_episodes`` when absent)."""
    metrics = card.get("metrics", {})
    seeds = metrics.get("seeds", [metrics.get("seed", 0)])
    return EvalProtocol(
        seeds=tuple(int(s) for s in seeds),
        episodes=int(metrics.get("episodes", default_episodes)),
        tasks=str(metrics.get("eval_tasks", "test")),
        split_seed=int(metrics.get("split_seed", 0)),
        sample=bool(metrics.get("sample", True)),
        action_noise=card_action_noise(card),
        unrewarded_context=metrics.get("unrewarded_context"),
    )


def play_context_rule(policy: T2MIRPolicy, protocol: EvalProtocol) -> EvalProtocol:
    """Set the policy's context rule for unrewarded episodes to the protocol's and return the
    protocol naming the rule played: for AD explicitly (the config's when the protocol names none),
    for DPT none. Raises `ConfigError` for a rule the backbone does not take."""
    if policy.config.backbone != "ad":
        if protocol.unrewarded_context not in (None, "keep"):
            raise ConfigError("unrewarded_context", "'drop' applies to the AD backbone only")
        return replace(protocol, unrewarded_context=None)
    rule = protocol.unrewarded_context or policy.config.unrewarded_context
    policy.config = policy.config.replace(unrewarded_context=rule)
    return replace(protocol, unrewarded_context=rule)


def t_interval(values: Sequence[float], confidence: float = 0.95) -> tuple[float, float]:
    """Two-sided Student-t interval of the mean of ``values`` (one value: the value itself)."""
    data = np.asarray(values, dtype=float)  # (n,)
    mean = float(data.mean())
    if data.size < 2:
        return mean, mean
    half = (
        float(stats.t.ppf(0.5 + confidence / 2, data.size - 1))
        * float(data.std(ddof=1))
        / math.sqrt(data.size)
    )
    return mean - half, mean + half


def seed_statistic(values: Sequence[float]) -> dict[str, Any]:
    """``{"mean", "ci95", "per_seed"}`` of one figure measured at several evaluation seeds."""
    low, high = t_interval(values)
    return {
        "mean": round(float(np.mean(values)), 4),
        "ci95": [round(low, 4), round(high, 4)],
        "per_seed": [round(float(v), 4) for v in values],
    }


def git_commit(root: Path = REPO_ROOT) -> str:
    """``git rev-parse HEAD`` of the code (``"unknown"`` outside a git checkout or without git)."""
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True, timeout=10, check=True
        )
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return out.stdout.strip() or "unknown"


def manifest_path(dataset: str | Path) -> Path | None:
    """The manifest of ``dataset``: its own ``manifest.json``, else the committed copy of that name."""
    own = Path(dataset) / MANIFEST_NAME
    if own.is_file():
        return own
    committed = COMMITTED_MANIFESTS / f"{Path(dataset).name}.json"
    return committed if committed.is_file() else None


def manifest_sha256(dataset: str | Path | None) -> str:
    """sha256 of the dataset's manifest (``"unknown"`` when neither it nor a committed copy exists)."""
    path = manifest_path(dataset) if dataset else None
    return sha256_file(path) if path is not None else "unknown"


def provenance(command: str, dataset: str | Path | None) -> dict[str, str]:
    """What reproduces a figure: the command, the code's git commit, the dataset manifest's sha256."""
    return {"command": command, "commit": git_commit(), "dataset_manifest_sha256": manifest_sha256(dataset)}


def measured_metrics(
    protocol: EvalProtocol,
    per_seed: list[EvalResult],
    normalised: list[dict[str, float]],
    record: dict[str, str],
) -> dict[str, Any]:
    """The ``metrics`` block of a card: the protocol, each figure's mean and t-interval over seeds."""
    pooled = stack_seeds(per_seed)
    metrics: dict[str, Any] = {
        "eval_tasks": protocol.tasks,
        "episodes": protocol.episodes,
        "seeds": list(protocol.seeds),
        "split_seed": protocol.split_seed,
        "sample": protocol.sample,
        "interval": INTERVAL,
        "best_episode_mean_return": seed_statistic([r.best_mean for r in per_seed]),
        "last_episode_mean_return": seed_statistic([r.last_mean for r in per_seed]),
        "episode_means": [round(v, 4) for v in pooled.episode_means.tolist()],
        "seed_episode_means": [[round(v, 4) for v in r.episode_means.tolist()] for r in per_seed],
    }
    if normalised:
        metrics["normalised_best"] = seed_statistic([n["best"] for n in normalised])
        metrics["normalised_last"] = seed_statistic([n["last"] for n in normalised])
    if protocol.action_noise:
        metrics["action_noise"] = protocol.action_noise
    if protocol.unrewarded_context is not None:
        metrics["unrewarded_context"] = protocol.unrewarded_context
    return {**metrics, **record}
