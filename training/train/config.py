"""Training configuration: one frozen dataclass that embeds the model's own config.

``TrainConfig.model`` is the policy's ``T2MIRConfig``: its architecture and mixture-of-experts
options come from the TOML tables ``[model]`` and ``[model.moe]``; the fields the dataset fixes
(``MODEL_FROM_DATASET``) are filled in when training opens the dataset. Configs for every family
live in ``training/configs/`` (paper Tables 4 and 5, plus CPU-budget variants).

Overrides on the command line are ``key=value``; a key is a field's dotted path or any tail of it
that names one field only: ``steps=100``, ``model.d_model=64``, ``moe.task_experts=2``.
"""

from __future__ import annotations

import dataclasses
import tomllib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from t2mir_model import ActionSpec, ConfigError, ObservationSpec, T2MIRConfig, config_io
from training.datasets.sampling import AD_POOLS

CONFIG_DIR = Path(__file__).resolve().parent.parent / "configs"

MODEL_FROM_DATASET = ("observation", "action", "env_id", "max_episode_steps")
"""``T2MIRConfig`` fields the dataset fixes when training starts; no config file or override sets them."""


def _model_defaults() -> T2MIRConfig:
    """The model's own defaults, with stand-ins for the fields in ``MODEL_FROM_DATASET``."""
    return T2MIRConfig(observation=ObservationSpec(1), action=ActionSpec("discrete", n=2))


@dataclass(frozen=True)
class TrainConfig:
    """Everything one training run needs. Field docstrings say what each one does."""

    dataset: str
    """Dataset directory written by ``t2mir collect``."""
    out: str
    """Run directory: checkpoints, TensorBoard logs, final model."""
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
    batch_size: int = 16
    """Segments (AD) or prompts (DPT) per optimiser step, per process; the key batch has as many."""
    steps: int = 10000
    """Optimiser steps of the whole run (the learning-rate schedule spans them)."""
    lr: float = 3e-4
    """Peak AdamW learning rate, reached after the warmup."""
    weight_decay: float = 1e-4
    """AdamW weight decay, on weight matrices only (not biases, norms or gate vectors)."""
    warmup_steps: int = 500
    """Steps of linear learning-rate warmup from 0 to lr."""
    min_lr_ratio: float = 0.1
    """Cosine decay floor as a fraction of lr."""
    grad_clip: float = 1.0
    """Largest global gradient norm; larger gradients are scaled down to it."""
    seed: int = 0
    """Seed of the initial weights, of batch sampling (offset per DDP rank) and of the evaluation."""
    device: str = "cpu"
    """Torch device to train on: 'cpu', 'cuda', 'cuda:1', ..."""
    threads: int = 0
    """torch threads per process (0: leave torch's default)."""
    expert_dispatch: str = "dense"
    """'dense': every expert on every token, gated (fixed shapes, the serving path); 'sparse': each
    expert on its selected tokens only, same mixture up to float rounding, faster where the expert
    banks dominate a step (CPU). Training only; evaluation and serving are always dense."""
    log_every: int = 50
    """Write losses, learning rate and routing statistics to TensorBoard every N steps."""
    checkpoint_every: int = 1000
    """Save a resumable OUT/last every N steps."""
    eval_every: int = 0
    """Run an in-context evaluation on held-out tasks every N steps (0: only at the end)."""
    eval_episodes: int = 10
    """Episodes per held-out task in each in-context evaluation."""
    eval_sample: bool = True
    """Discrete actions are sampled (seeded, reproducible) rather than argmax during evaluation."""
    final_eval: bool = True
    """Evaluate on the held-out tasks after the last step (OUT/eval.json, metrics in the model card)."""
    model: T2MIRConfig = field(default_factory=_model_defaults)
    """The policy's config, the model package's own ``T2MIRConfig``: architecture (``[model]``) and
    mixture-of-experts options (``[model.moe]``, ``MoEConfig``). Its fields in ``MODEL_FROM_DATASET``
    hold stand-ins here; ``model_config`` fills them from the dataset."""

    def __post_init__(self) -> None:
        for name in ("batch_size", "steps", "n_queries", "log_every", "checkpoint_every"):
            if getattr(self, name) < 1:
                raise ConfigError(name, f"must be >= 1, got {getattr(self, name)}")
        if self.expert_dispatch not in ("dense", "sparse"):
            raise ConfigError("expert_dispatch", f"must be 'dense' or 'sparse', got {self.expert_dispatch!r}")
        if self.ad_episodes not in AD_POOLS:
            raise ConfigError("ad_episodes", f"must be one of {AD_POOLS}, got {self.ad_episodes!r}")
        if not 0 < self.prompt_history <= 1:
            raise ConfigError("prompt_history", f"must be in (0, 1], got {self.prompt_history}")
        if not 0 <= self.warmup_steps <= self.steps:
            raise ConfigError("warmup_steps", f"must be in [0, steps], got {self.warmup_steps}")

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], overrides: Sequence[str] = ()) -> TrainConfig:
        """A validated config from tables laid out as a TOML config file (``model`` and
        ``model.moe`` nested), then ``key=value`` overrides; unknown keys are refused."""
        values = config_io.flatten(data)
        settable = settable_fields()
        for path in values:
            if path not in settable:
                raise _refused(path, settable)
        return config_io.build(cls, {**values, **parse_overrides(overrides)})

    def override(self, changes: Mapping[str, object]) -> TrainConfig:
        """A validated copy with some fields changed; keys as in overrides (``steps``,
        ``model.d_model``, ``moe.task_experts``), values already typed."""
        return config_io.replace_paths(self, {settable_path(key): value for key, value in changes.items()})

    def model_config(
        self, observation: ObservationSpec, action: ActionSpec, env_id: str, max_episode_steps: int
    ) -> T2MIRConfig:
        """The policy's config for a dataset: ``model`` with its dataset-derived fields filled in."""
        return self.model.replace(
            observation=observation, action=action, env_id=env_id, max_episode_steps=max_episode_steps
        )

    def to_dict(self) -> dict[str, Any]:
        """Plain nested dict in the layout of a config file (for the model card)."""
        data = dataclasses.asdict(self)
        for name in MODEL_FROM_DATASET:
            del data["model"][name]
        return data


def _from_dataset(path: str) -> bool:
    return any(path == f"model.{name}" or path.startswith(f"model.{name}.") for name in MODEL_FROM_DATASET)


def settable_fields() -> dict[str, object]:
    """Dotted path -> type of every field a config file or an override may set."""
    return {
        path: kind for path, kind in config_io.value_fields(TrainConfig).items() if not _from_dataset(path)
    }


def _refused(path: str, settable: Mapping[str, object]) -> ConfigError:
    """The error for a path that is not settable: dataset-derived, or unknown."""
    if _from_dataset(path):
        return ConfigError(path, "comes from the dataset, not from the config")
    return config_io.unknown_key(path, settable)


def settable_path(key: str) -> str:
    """The full path of an override key: a path, or an unambiguous tail of one (``moe.task_experts``)."""
    settable = settable_fields()
    if config_io.matching(key, settable):
        return config_io.resolve(key, settable)
    raise _refused(config_io.resolve(key, config_io.value_fields(TrainConfig)), settable)


def parse_overrides(overrides: Sequence[str]) -> dict[str, object]:
    """``['steps=100', 'moe.task_experts=2']`` -> full path -> typed value; unknown keys are refused."""
    settable = settable_fields()
    out: dict[str, object] = {}
    for item in overrides:
        key, sep, raw = item.partition("=")
        if not sep:
            raise ConfigError(item, "an override is key=value")
        path = settable_path(key)
        out[path] = config_io.parse_text(path, settable[path], raw)
    return out


def load_train_config(path: str | Path, overrides: Sequence[str] = ()) -> TrainConfig:
    """Read a TOML config (a bare name looks in training/configs/) and apply overrides."""
    candidate = Path(path)
    if not candidate.exists() and (CONFIG_DIR / f"{path}.toml").exists():
        candidate = CONFIG_DIR / f"{path}.toml"
    with open(candidate, "rb") as f:
        data = tomllib.load(f)
    return TrainConfig.from_dict(data, overrides)
