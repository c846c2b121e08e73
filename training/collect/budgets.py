"""Named collection budgets per family: ``paper`` (Tables 2-3), ``extended``, ``reduced``, ``tiny``.

A budget is the complete configuration of the learner that produces one task's learning history.
The manifest of every dataset records the budget's name and all of its values.

* ``paper``: the paper's settings (Appendix D.2, Tables 2 and 3). DarkRoom has no table: 1000
  noise-distilled episodes per task.
* ``extended``: for a machine with a dozen free cores for a few minutes (a GPU server's host CPUs).
  DarkRoom and Point-Robot: as paper. MuJoCo: the first 12 training tasks, 20 snapshots each, 30k
  SAC steps with 128-unit networks and batch 128 (3x reduced's steps; 260-273 s per task, twelve in
  parallel on a 16-core host). Meta-World: the first 12 tasks, 4x reduced's PPO steps.
* ``reduced``: fits a 2-core CPU (about 15 minutes per family with ``--workers 2``). DarkRoom: as
  paper. Point-Robot: the paper's steps with 64-unit networks and batch 64. MuJoCo / Meta-World:
  the first 12 training tasks, 20 snapshots each, 10k SAC steps with 64-unit networks and batch 64
  / 40,960 PPO steps. Measured wall times are in ``docs/datasets.md``.
* ``tiny``: seconds per family, for tests and smoke runs (also limits the number of tasks).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace
from typing import Any

FAMILIES: dict[str, str] = {
    "t2mir/DarkRoom-v0": "darkroom",
    "t2mir/PointRobot-v0": "point-robot",
    "t2mir/CheetahVel-v0": "cheetah-vel",
    "t2mir/CheetahVel3Cluster-v0": "cheetah-vel-3cluster",
    "t2mir/WalkerParam-v0": "walker-param",
    "t2mir/Reach-v0": "reach",
    "t2mir/Push-v0": "push",
}
BUDGET_NAMES: tuple[str, ...] = ("paper", "extended", "reduced", "tiny")
SNAPSHOT_ACTIONS: tuple[str, ...] = ("deterministic", "stochastic")
"""How a SAC / PPO snapshot acts in its history episodes: its policy's mean, or samples from it."""


@dataclass(frozen=True)
class NoiseBudget:
    """DarkRoom: the optimal policy with epsilon-greedy noise decaying along the history."""

    episodes_per_task: int
    """Length of each task's history; episode ``e`` is its own "snapshot"."""
    decay_fraction: float = 1.0
    """Epsilon falls linearly from 1 to 0 over this fraction of the history, then stays 0."""
    max_tasks: int | None = None
    """Collect only the first ``max_tasks`` tasks of the selection (None: all)."""
    algorithm: str = "noise"


@dataclass(frozen=True)
class SACBudget:
    """Point-Robot and MuJoCo: stable-baselines3 SAC per task (Table 2)."""

    total_steps: int
    """Environment steps of SAC training."""
    learning_starts: int
    """Warm-up steps with uniform random actions before the first gradient step."""
    save_freq: int
    """A policy snapshot every ``save_freq`` steps: ``total_steps // save_freq`` snapshots."""
    learning_rate: float = 3e-4
    tau: float = 0.005
    gamma: float = 0.99
    ent_coef: float = 0.2
    """Fixed entropy coefficient (no automatic tuning)."""
    batch_size: int = 256
    buffer_size: int = 1_000_000
    net_arch: tuple[int, ...] = (256, 256)
    train_freq: int = 1
    gradient_steps: int = 1
    episodes_per_snapshot: int = 1
    """Episodes each snapshot rolls out into the learning history."""
    snapshot_actions: str = "deterministic"
    """``deterministic``: the snapshot's tanh mean; ``stochastic``: actions sampled from the
    snapshot's Gaussian, the exploration the learner itself would do (one of ``SNAPSHOT_ACTIONS``)."""
    max_tasks: int | None = None
    algorithm: str = "sac"


@dataclass(frozen=True)
class PPOBudget:
    """Meta-World: stable-baselines3 PPO per task (Table 3); a snapshot after every update."""

    total_timesteps: int
    """Environment steps of PPO training: ``total_timesteps // n_steps`` updates and snapshots."""
    n_steps: int = 2048
    learning_rate: float = 3e-4
    batch_size: int = 64
    n_epochs: int = 10
    gamma: float = 0.99
    episodes_per_snapshot: int = 1
    snapshot_actions: str = "deterministic"
    """As in ``SACBudget`` (PPO samples its Gaussian, clipped to the action box)."""
    max_tasks: int | None = None
    algorithm: str = "ppo"


Budget = NoiseBudget | SACBudget | PPOBudget

_DARKROOM_PAPER = NoiseBudget(episodes_per_task=1000)
_POINT_ROBOT_PAPER = SACBudget(total_steps=2000, learning_starts=100, save_freq=20)
_SAC_TINY = SACBudget(
    total_steps=40, learning_starts=10, save_freq=20, batch_size=16, net_arch=(32, 32), max_tasks=2
)
# reduced MuJoCo / Meta-World: the first 12 training tasks, 20 snapshots each (see docs/datasets.md)
_SAC_REDUCED = SACBudget(
    total_steps=10_000, learning_starts=1000, save_freq=500, batch_size=64, net_arch=(64, 64), max_tasks=12
)
_PPO_REDUCED = PPOBudget(total_timesteps=40_960, max_tasks=12)
_SAC_EXTENDED = SACBudget(
    total_steps=30_000,
    learning_starts=1000,
    save_freq=1500,
    batch_size=128,
    net_arch=(128, 128),
    max_tasks=12,
)
_PPO_EXTENDED = PPOBudget(total_timesteps=163_840, max_tasks=12)
_PPO_TINY = PPOBudget(total_timesteps=128, n_steps=64, batch_size=32, n_epochs=1, max_tasks=2)

_BUDGETS: dict[str, dict[str, Budget]] = {
    "darkroom": {
        "paper": _DARKROOM_PAPER,
        "extended": _DARKROOM_PAPER,
        "reduced": _DARKROOM_PAPER,
        "tiny": NoiseBudget(episodes_per_task=40, max_tasks=3),
    },
    "point-robot": {
        "paper": _POINT_ROBOT_PAPER,
        "extended": _POINT_ROBOT_PAPER,
        "reduced": SACBudget(
            total_steps=2000, learning_starts=100, save_freq=20, batch_size=64, net_arch=(64, 64)
        ),
        "tiny": _SAC_TINY,
    },
    "cheetah-vel": {
        "paper": SACBudget(total_steps=250_000, learning_starts=2000, save_freq=10_000),
        "extended": _SAC_EXTENDED,
        "reduced": _SAC_REDUCED,
        "tiny": _SAC_TINY,
    },
    "cheetah-vel-3cluster": {
        "paper": SACBudget(total_steps=400_000, learning_starts=2000, save_freq=10_000),
        "extended": _SAC_EXTENDED,
        "reduced": _SAC_REDUCED,
        "tiny": _SAC_TINY,
    },
    "walker-param": {
        "paper": SACBudget(total_steps=1_000_000, learning_starts=2000, save_freq=10_000),
        "extended": _SAC_EXTENDED,
        "reduced": _SAC_REDUCED,
        "tiny": _SAC_TINY,
    },
    "reach": {
        "paper": PPOBudget(total_timesteps=400_000),
        "extended": _PPO_EXTENDED,
        "reduced": _PPO_REDUCED,
        "tiny": _PPO_TINY,
    },
    "push": {
        "paper": PPOBudget(total_timesteps=1_000_000),
        "extended": _PPO_EXTENDED,
        "reduced": _PPO_REDUCED,
        "tiny": _PPO_TINY,
    },
}


def family_of(env_id: str) -> str:
    """``"t2mir/CheetahVel-v0"`` -> ``"cheetah-vel"``; a family name is returned unchanged."""
    if env_id in FAMILIES:
        return FAMILIES[env_id]
    if env_id in _BUDGETS:
        return env_id
    raise ValueError(f"no collection recipe for {env_id!r}; known: {sorted(FAMILIES)}")


def env_id_of(name: str) -> str:
    """Accept an env id or a family name (``darkroom``) and return the env id."""
    if name in FAMILIES:
        return name
    for env_id, family in FAMILIES.items():
        if family == name:
            return env_id
    raise ValueError(f"unknown environment {name!r}; use one of {sorted(FAMILIES)} or {sorted(_BUDGETS)}")


def get_budget(env_id: str, name: str, **overrides: Any) -> Budget:
    """The named budget of ``env_id``'s family, with optional field overrides (None values ignored)."""
    family = family_of(env_id)
    if name not in _BUDGETS[family]:
        raise ValueError(f"unknown budget {name!r} for {family}; choose one of {BUDGET_NAMES}")
    budget = _BUDGETS[family][name]
    changes = {k: v for k, v in overrides.items() if v is not None}
    if changes.get("snapshot_actions", SNAPSHOT_ACTIONS[0]) not in SNAPSHOT_ACTIONS:
        raise ValueError(
            f"snapshot_actions must be one of {SNAPSHOT_ACTIONS}, got {changes['snapshot_actions']!r}"
        )
    return replace(budget, **changes) if changes else budget


def n_snapshots(budget: Budget) -> int:
    """How many policy snapshots one task's learner produces under ``budget``."""
    if isinstance(budget, NoiseBudget):
        return budget.episodes_per_task
    if isinstance(budget, SACBudget):
        return budget.total_steps // budget.save_freq
    return budget.total_timesteps // budget.n_steps


def budget_json(name: str, budget: Budget) -> dict[str, Any]:
    """``{"name": ..., "algorithm": ..., <every field>, "n_snapshots": ...}`` for the manifest."""
    values = asdict(budget)
    values["net_arch"] = list(values["net_arch"]) if "net_arch" in values else None
    if values["net_arch"] is None:
        del values["net_arch"]
    return {"name": name, **values, "n_snapshots": n_snapshots(budget)}
