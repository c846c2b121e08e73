"""Training configuration: one frozen dataclass, loaded from TOML with ``key=value`` overrides.

Configs for every family live in ``training/configs/`` (paper Tables 4 and 5, plus CPU-budget
variants). The model part becomes the checkpoint's ``T2MIRConfig``; the rest is recorded in the
model card.
"""

from __future__ import annotations

import dataclasses
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from training.datasets.sampling import AD_POOLS

CONFIG_DIR = Path(__file__).resolve().parent.parent / "configs"


@dataclass(frozen=True)
class TrainConfig:
    """Everything one training run needs. Field docstrings say what each one does."""

    dataset: str
    """Dataset directory written by ``t2mir collect``."""
    out: str
    """Run directory: checkpoints, TensorBoard logs, final model."""
    backbone: str = "ad"
    """'ad' (Algorithm 1) or 'dpt' (Algorithm 3)."""
    token_moe: bool = True
    task_moe: bool = True
    d_model: int = 128
    n_layers: int = 4
    n_heads: int = 4
    ffn_mult: int = 4
    dropout: float = 0.1
    context_episodes: int = 4
    """AD: trajectories L per training segment (the served context holds L-1 past episodes + the current)."""
    ad_episodes: str = "history"
    """AD: where a segment's L episodes come from: 'history' (anywhere in the task's learning
    history, Algorithm 1) or 'prefix' (the first c episodes, c uniform in L .. all, per segment;
    see training.datasets.sampling.sample_ad_batch; on Point-Robot it trained worse than 'history',
    docs/results.md)."""
    n_queries: int = 16
    """DPT: labelled query states per prompt (each attends to the prompt and itself only)."""
    prompt_history: float = 1.0
    """DPT: prompts (and key prompts) come from the first fraction of each task's learning history,
    in collection order (1.0: any episode; 0.2: the exploring early episodes only)."""
    token_experts: int = 6
    token_top_k: int = 2
    task_experts: int = 8
    task_top_k: int = 2
    moe_positions: str = "top"
    w_imp: float = 0.01
    w_load: float = 0.01
    w_con: float = 0.01
    momentum: float = 0.995
    reward_scale: float = 1.0
    batch_size: int = 16
    steps: int = 10000
    lr: float = 3e-4
    weight_decay: float = 1e-4
    warmup_steps: int = 500
    min_lr_ratio: float = 0.1
    """Cosine decay floor as a fraction of lr."""
    grad_clip: float = 1.0
    seed: int = 0
    device: str = "cpu"
    threads: int = 0
    """torch threads per process (0: leave torch's default)."""
    expert_dispatch: str = "dense"
    """'dense': every expert on every token, gated (fixed shapes, the serving path); 'sparse': each
    expert on its selected tokens only, same mixture up to float rounding, faster where the expert
    banks dominate a step (CPU). Training only; evaluation and serving are always dense."""
    log_every: int = 50
    checkpoint_every: int = 1000
    eval_every: int = 0
    """Run an in-context evaluation on held-out tasks every N steps (0: only at the end)."""
    eval_episodes: int = 10
    eval_sample: bool = True
    """Discrete actions are sampled (seeded, reproducible) rather than argmax during evaluation."""
    final_eval: bool = True

    def __post_init__(self) -> None:
        if self.backbone not in ("ad", "dpt"):
            raise ValueError(f"backbone: must be 'ad' or 'dpt', got {self.backbone!r}")
        for name in ("batch_size", "steps", "context_episodes", "n_queries", "log_every", "checkpoint_every"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name}: must be >= 1, got {getattr(self, name)}")
        if self.expert_dispatch not in ("dense", "sparse"):
            raise ValueError(f"expert_dispatch: must be 'dense' or 'sparse', got {self.expert_dispatch!r}")
        if self.ad_episodes not in AD_POOLS:
            raise ValueError(f"ad_episodes: must be one of {AD_POOLS}, got {self.ad_episodes!r}")
        if not 0 < self.prompt_history <= 1:
            raise ValueError(f"prompt_history: must be in (0, 1], got {self.prompt_history}")
        if not 0 <= self.warmup_steps <= self.steps:
            raise ValueError(f"warmup_steps: must be in [0, steps], got {self.warmup_steps}")

    def replace(self, **changes: Any) -> TrainConfig:
        """A validated copy with some fields changed."""
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        """Plain dict (for the model card and TensorBoard)."""
        return dataclasses.asdict(self)


def _coerce(field: dataclasses.Field, raw: str) -> Any:
    kind = field.type if isinstance(field.type, str) else getattr(field.type, "__name__", str(field.type))
    if kind == "bool":
        if raw.lower() in ("1", "true", "yes", "on"):
            return True
        if raw.lower() in ("0", "false", "no", "off"):
            return False
        raise ValueError(f"{field.name}: expected true/false, got {raw!r}")
    if kind == "int":
        return int(raw)
    if kind == "float":
        return float(raw)
    return raw


def parse_overrides(overrides: list[str]) -> dict[str, Any]:
    """['steps=100', 'lr=1e-3'] -> typed values; unknown keys are refused."""
    fields = {f.name: f for f in dataclasses.fields(TrainConfig)}
    out: dict[str, Any] = {}
    for item in overrides:
        key, sep, raw = item.partition("=")
        if not sep:
            raise ValueError(f"override {item!r} is not key=value")
        if key not in fields:
            raise ValueError(f"override {item!r}: unknown field {key!r}")
        out[key] = _coerce(fields[key], raw)
    return out


def load_train_config(path: str | Path, overrides: list[str] | None = None) -> TrainConfig:
    """Read a TOML config (a bare name looks in training/configs/) and apply overrides."""
    candidate = Path(path)
    if not candidate.exists() and (CONFIG_DIR / f"{path}.toml").exists():
        candidate = CONFIG_DIR / f"{path}.toml"
    with open(candidate, "rb") as f:
        data = tomllib.load(f)
    known = {f.name for f in dataclasses.fields(TrainConfig)}
    unknown = sorted(set(data) - known)
    if unknown:
        raise ValueError(f"{candidate}: unknown field(s) {unknown}")
    data.update(parse_overrides(overrides or []))
    return TrainConfig(**data)
