"""``t2mir eval`` on M3DT checkpoints: every task of the checkpoint, through the serving engine.

Each checkpoint is loaded with `load_engine` (the engine the server runs) and acts in all its tasks
at once, one batched `act` per step, each session conditioned on its task's shipped prompt and
target return (from the card). Meta-World tasks use their *test* goals (never seen in training) and
score success x 100 (success at any step of the episode); Point-Robot goals score the return
normalised between standing still (0) and the oracle (100) from the same start. Evaluation seeds
(``seed``, default 10_000) differ from the collection seeds (0 .. 999 per task). Several checkpoints
evaluated together share the simulators and replay the same episodes (same goals, starts, seeds).
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import torch

from t2mir_model import (
    EngineOptions,
    M3DTActRequest,
    SessionHistory,
    load_engine,
    load_prompts,
    read_card,
)

from .suite import METAWORLD, POINT_ROBOT, SuiteTask, TaskRunner, point_reference

T_QUANTILE_975 = {1: 12.706, 2: 4.303, 3: 3.182, 4: 2.776, 5: 2.571, 6: 2.447, 7: 2.365, 8: 2.306, 9: 2.262}
"""Student-t 97.5% quantiles by degrees of freedom (95% intervals over a few training seeds)."""


def mean_ci(values: list[float]) -> tuple[float, float]:
    """(mean, half-width of the 95% t-interval); half-width 0 for a single value."""
    n = len(values)
    mean = float(np.mean(values))
    if n < 2:
        return mean, 0.0
    t = T_QUANTILE_975.get(n - 1, 1.96)
    return mean, float(t * np.std(values, ddof=1) / math.sqrt(n))


def suite_of(card: dict[str, Any]) -> list[SuiteTask]:
    """The tasks a checkpoint was trained on, from its card."""
    return [
        SuiteTask(
            name,
            spec["family"],
            spec["obs_width"],
            spec["act_width"],
            spec["episode_steps"],
            tuple(spec["goal"]),
        )
        for name, spec in card["suite"].items()
    ]


def run_episode_batch(
    engine: Any, runners: list[TaskRunner], prompts: list[Any], targets: list[float], goal: int
) -> list[tuple[float, bool, float]]:
    """One episode in every runner at once -> per task (return, success, normalised score x 100)."""
    n = len(runners)
    histories = [SessionHistory() for _ in range(n)]
    obs = [r.reset(goal) for r in runners]
    starts = [o.copy() for o in obs]
    returns, success = [0.0] * n, [False] * n
    for h, o in zip(histories, obs, strict=True):
        h.observe(torch.from_numpy(o))
    horizon = max(r.task.episode_steps for r in runners)
    for t in range(horizon):
        live = [i for i in range(n) if t < runners[i].task.episode_steps]
        requests = [
            M3DTActRequest(key=i, history=histories[i], prompt=prompts[i], target_return=targets[i])
            for i in live
        ]
        results = engine.act(requests).results
        for i, result in zip(live, results, strict=True):
            action = result.action.numpy()
            o, reward, ok = runners[i].step(action)
            returns[i] += reward
            success[i] |= ok
            if t + 1 < runners[i].task.episode_steps:
                histories[i].observe(torch.from_numpy(o), reward=reward, action=result.action)
    out = []
    for i, r in enumerate(runners):
        if r.task.family == POINT_ROBOT:
            stay, oracle = point_reference(r.task, np.asarray(starts[i], dtype=np.float64)[None])
            score = 100.0 * (returns[i] - stay) / (oracle - stay)
        else:
            score = 100.0 * success[i]
        out.append((returns[i], success[i], score))
    return out


def evaluate_checkpoints(
    checkpoints: list[Path],
    episodes: int = 1,
    point_episodes: int = 3,
    seed: int = 10_000,
    progress: bool = True,
    only: list[str] | None = None,
) -> list[dict[str, Any]]:
    """Per checkpoint: per-task scores and their mean over tasks (see the module docstring).

    ``only``: evaluate just these tasks, on the same episodes as a full evaluation."""
    from tqdm import tqdm

    cards = [read_card(c) for c in checkpoints]
    tasks = suite_of(cards[0])
    for c, card in zip(checkpoints, cards, strict=True):
        if [t.name for t in suite_of(card)] != [t.name for t in tasks]:
            raise ValueError(f"{c} was trained on other tasks than {checkpoints[0]}")
    index = [i for i, t in enumerate(tasks) if only is None or t.name in only]  # positions seed episodes
    tasks = [tasks[i] for i in index]
    bar = tqdm(tasks, desc="simulators", disable=not progress)
    runners = [TaskRunner(t, "test", seed + i) for i, t in zip(index, bar, strict=True)]
    results = []
    try:
        for c, card in zip(checkpoints, cards, strict=True):
            engine = load_engine(c, EngineOptions(cache_slots=len(tasks)))
            shipped = load_prompts(c)
            prompts = [shipped[t.name] for t in tasks]
            targets = [float(card["targets"][t.name]) for t in tasks]
            scores: dict[str, list[float]] = {t.name: [] for t in tasks}
            rounds = max(episodes, point_episodes)
            for e in tqdm(range(rounds), desc=Path(c).parent.name, disable=not progress):
                idx = [
                    i
                    for i, t in enumerate(tasks)
                    if e < (episodes if t.family == METAWORLD else point_episodes)
                ]
                for i in idx:
                    runners[i].reseed(seed * 7 + 1000 * index[i] + e)
                out = run_episode_batch(
                    engine, [runners[i] for i in idx], [prompts[i] for i in idx], [targets[i] for i in idx], e
                )
                for i, (_, _, score) in zip(idx, out, strict=True):
                    scores[tasks[i].name].append(score)
            per_task = {name: float(np.mean(v)) for name, v in scores.items()}
            families = {
                fam: float(np.mean([per_task[t.name] for t in tasks if t.family == fam]))
                for fam in (METAWORLD, POINT_ROBOT)
                if any(t.family == fam for t in tasks)
            }
            results.append(
                {
                    "checkpoint": str(c),
                    "variant": card.get("variant"),
                    "parameters": card.get("parameters"),
                    "active_parameters": card.get("active_parameters"),
                    "n_tasks": len(tasks),
                    "mean_score": float(np.mean(list(per_task.values()))),
                    "family_scores": families,
                    "episodes": {"metaworld": episodes, "point-robot": point_episodes, "seed": seed},
                    "per_task": per_task,
                }
            )
    finally:
        for r in runners:
            r.close()
    return results


def write_results(results: list[dict[str, Any]], path: str | Path) -> None:
    """Save evaluation results as JSON."""
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    Path(path).write_text(json.dumps(results, indent=2) + "\n")
