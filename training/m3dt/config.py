"""Training configuration of an M3DT run (``t2mir train --config m3dt-*.toml``).

A config file with ``family = "m3dt"`` at its top is an M3DT run; ``[model]`` holds `M3DTConfig`
fields. Overrides are ``key=value`` with a field's dotted path or an unambiguous tail of it
(``backbone_steps=500``, ``model.n_experts=4``, ``n_experts=4``). A dense Prompt-DT baseline is the
same file with ``model.moe = false`` and all steps in stage 1 (see training/configs/m3dt-*.toml).
"""

from __future__ import annotations

import dataclasses
import tomllib
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from t2mir_model import ConfigError, M3DTConfig, config_io

CONFIG_DIR = Path(__file__).resolve().parent.parent / "configs"
Grouping = Literal["gradient", "random"]


@dataclass(frozen=True)
class M3DTTrainConfig:
    """One M3DT (or dense Prompt-DT) training run; the three stages' budgets and the grouping rule."""

    dataset: str
    """Dataset directory written by ``t2mir collect --suite m3dt``."""
    out: str
    """Run directory: stage checkpoints, TensorBoard logs, the final model in ``OUT/final``."""
    family: str = "m3dt"
    """Always 'm3dt' (selects this trainer in ``t2mir train``)."""
    seed: int = 0
    """Seed of initialisation, batch sampling and the random grouping."""
    max_tasks: int = 0
    """Train on the first N tasks of the dataset (0: all); Meta-World and Point-Robot interleaved."""
    backbone_steps: int = 2000
    """Stage 1: optimiser steps of the backbone (without the MoE) on all tasks."""
    expert_steps: int = 1000
    """Stage 2: optimiser steps training one expert per task group on its group (backbone frozen)."""
    router_steps: int = 500
    """Stage 3: optimiser steps of the routers on all tasks (backbone and experts frozen)."""
    backbone_from: str = ""
    """Start at stage 2 from another run's stage 1: the resumable state (``OUT/last``) of a run of the
    same seed, backbone and ``backbone_steps`` that stopped at the end of stage 1 (``t2mir train
    --stop-after BACKBONE_STEPS``). Its backbone, sampling and RNG state carry over, so the run is
    the one that would have followed without the stop, whatever the number of experts; this is how
    an expert-count sweep shares one stage 1 per seed. Empty: train stage 1 here."""
    grouping: Grouping = "gradient"
    """Stage 2 task grouping: 'gradient' (k-means over gradient-conflict vectors) or 'random'."""
    grouping_batches: int = 4
    """Batches per task averaged into its gradient (grouping = 'gradient')."""
    grouping_restarts: int = 10
    """k-means++ restarts; the partition with the most even group sizes is kept."""
    batch_size: int = 32
    """Windows per optimiser step."""
    lr: float = 3e-4
    """Peak AdamW learning rate of every stage (cosine decay to 10% within stages 1 and 2)."""
    weight_decay: float = 1e-4
    """AdamW weight decay."""
    warmup_steps: int = 100
    """Linear warmup at the start of each stage."""
    router_lr: float = 0.0
    """Peak learning rate of stage 3 (0: ``lr``). The paper's code trains the routers for as many
    steps as the backbone (400k); at a budget of a few hundred router steps a rate of ``lr`` moves
    each router weight by too little to leave the uniform mixture, so the shipped config raises it."""
    expert_zero_init: bool = True
    """Start every expert's output layer at zero, so that stage 2 starts from the backbone's own
    function and learns a correction (the paper's experts start near zero: GPT-2's std-0.02 init).
    Off: the experts' random output at initialisation is a perturbation stage 2 first has to undo."""
    router_lr_decay: bool = False
    """Stage 3 decays its learning rate like stages 1 and 2 (cosine to 10%). Off by default: the
    routers start from near-uniform weights and Adam moves each parameter by about one learning rate
    per step, so a decayed stage of a few hundred steps leaves them near uniform; after warmup they
    hold the peak rate, as every stage does in the paper's code (warmup, then constant)."""
    log_every: int = 50
    """Steps between TensorBoard scalars."""
    checkpoint_every: int = 500
    """Steps between resumable checkpoints (``OUT/last``)."""
    threads: int = 1
    """torch CPU threads."""
    model: M3DTConfig = field(default_factory=M3DTConfig)
    """The policy's config (``[model]``)."""

    def __post_init__(self) -> None:
        if self.family != "m3dt":
            raise ConfigError("family", f"must be 'm3dt', got {self.family!r}")
        for name in ("backbone_steps", "expert_steps", "router_steps", "max_tasks"):
            if getattr(self, name) < 0:
                raise ConfigError(name, "must be >= 0")
        if self.backbone_steps < 1:
            raise ConfigError("backbone_steps", "must be >= 1")
        if not self.model.moe and (self.expert_steps or self.router_steps):
            raise ConfigError("expert_steps", "a dense model (model.moe = false) trains stage 1 only")
        if not self.model.moe and self.backbone_from:
            raise ConfigError("backbone_from", "a dense model (model.moe = false) trains stage 1 only")
        if self.grouping not in ("gradient", "random"):
            raise ConfigError("grouping", f"must be 'gradient' or 'random', got {self.grouping!r}")
        if self.router_lr < 0:
            raise ConfigError("router_lr", "must be >= 0 (0: lr)")
        if self.batch_size < 1 or self.grouping_batches < 1 or self.grouping_restarts < 1:
            raise ConfigError("batch_size", "batch_size, grouping_batches, grouping_restarts must be >= 1")

    @property
    def total_steps(self) -> int:
        """The run's optimiser steps over all stages (the budget baselines are matched on)."""
        return self.backbone_steps + self.expert_steps + self.router_steps

    def to_dict(self) -> dict[str, Any]:
        """Plain nested dict in the layout of a config file (for the model card)."""
        return dataclasses.asdict(self)


def is_m3dt_config(path: str | Path) -> bool:
    """True when a config file (or a name in training/configs/) names the M3DT family."""
    return _read(path).get("family") == "m3dt"


def _read(path: str | Path) -> dict[str, Any]:
    candidate = Path(path)
    if not candidate.exists() and (CONFIG_DIR / f"{path}.toml").exists():
        candidate = CONFIG_DIR / f"{path}.toml"
    with open(candidate, "rb") as f:
        return tomllib.load(f)


def load_m3dt_config(path: str | Path, overrides: Sequence[str] = ()) -> M3DTTrainConfig:
    """Read an M3DT config file and apply ``key=value`` overrides (typed and validated)."""
    values = config_io.flatten(_read(path))
    paths = config_io.value_fields(M3DTTrainConfig)
    for item in overrides:
        key, sep, raw = item.partition("=")
        if not sep:
            raise ConfigError(item, "an override is key=value")
        full = config_io.resolve(key, paths)
        values[full] = config_io.parse_text(full, paths[full], raw)
    return config_io.build(M3DTTrainConfig, values)
