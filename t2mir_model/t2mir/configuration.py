"""Configuration of a T2MIR policy: frozen, validated dataclasses saved with every checkpoint.

The config is the single source of truth for the architecture, the spaces the policy acts in, the
normalisation applied to its inputs, and the mixture-of-experts settings (paper Appendix F). It
round-trips through JSON (``to_dict`` / ``from_dict``).
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Any, Literal

CONFIG_SCHEMA_VERSION = 1

Backbone = Literal["ad", "dpt"]
ActionKind = Literal["discrete", "continuous"]
TaskRouting = Literal["prefix", "sequence"]
UnrewardedContext = Literal["keep", "drop"]


class ConfigError(ValueError):
    """A configuration value is invalid; ``field`` names the offending field."""

    def __init__(self, field_name: str, message: str) -> None:
        super().__init__(f"{field_name}: {message}")
        self.field = field_name


@dataclass(frozen=True)
class ObservationSpec:
    """Continuous observation vector the policy reads."""

    dim: int
    """Number of observation features."""
    mean: tuple[float, ...] | None = None
    """Per-feature mean subtracted before embedding (None: 0)."""
    std: tuple[float, ...] | None = None
    """Per-feature scale divided out before embedding (None: 1)."""

    def __post_init__(self) -> None:
        if self.dim < 1:
            raise ConfigError("observation.dim", f"must be >= 1, got {self.dim}")
        for name in ("mean", "std"):
            value = getattr(self, name)
            if value is None:
                continue
            object.__setattr__(self, name, tuple(float(v) for v in value))
            if len(getattr(self, name)) != self.dim:
                raise ConfigError(f"observation.{name}", f"needs {self.dim} values, got {len(value)}")
        if self.std is not None and any(not (s > 0 and math.isfinite(s)) for s in self.std):
            raise ConfigError("observation.std", "every value must be finite and > 0")


@dataclass(frozen=True)
class ActionSpec:
    """Action space: ``discrete`` with ``n`` choices, or ``continuous`` with ``dim`` bounded values."""

    kind: ActionKind
    """'discrete' (one of n choices) or 'continuous' (a vector of dim bounded values)."""
    n: int | None = None
    """Number of discrete actions (discrete only)."""
    dim: int | None = None
    """Number of action dimensions (continuous only)."""
    low: tuple[float, ...] | None = None
    """Lower bounds (continuous only)."""
    high: tuple[float, ...] | None = None
    """Upper bounds (continuous only)."""

    def __post_init__(self) -> None:
        if self.kind == "discrete":
            if self.n is None or self.n < 2:
                raise ConfigError("action.n", f"a discrete action space needs n >= 2, got {self.n}")
            if self.dim is not None or self.low is not None or self.high is not None:
                raise ConfigError("action", "a discrete action space takes only n")
        elif self.kind == "continuous":
            if self.dim is None or self.dim < 1:
                raise ConfigError("action.dim", f"a continuous action space needs dim >= 1, got {self.dim}")
            if self.n is not None:
                raise ConfigError("action.n", "a continuous action space takes dim, low and high, not n")
            low = tuple(float(v) for v in (self.low if self.low is not None else (-1.0,) * self.dim))
            high = tuple(float(v) for v in (self.high if self.high is not None else (1.0,) * self.dim))
            if len(low) != self.dim or len(high) != self.dim:
                raise ConfigError("action.low", f"low and high need {self.dim} values each")
            if any(
                not (lo < hi) or not math.isfinite(lo) or not math.isfinite(hi)
                for lo, hi in zip(low, high, strict=True)
            ):
                raise ConfigError("action.high", "every bound must be finite with low < high")
            object.__setattr__(self, "low", low)
            object.__setattr__(self, "high", high)
        else:
            raise ConfigError("action.kind", f"must be 'discrete' or 'continuous', got {self.kind!r}")

    @property
    def is_discrete(self) -> bool:
        """True for a discrete action space."""
        return self.kind == "discrete"

    @property
    def width(self) -> int:
        """Size of the policy head: number of logits or of action dimensions."""
        width = self.n if self.is_discrete else self.dim
        if width is None:  # __post_init__ requires n (discrete) or dim (continuous)
            raise ConfigError("action", f"a {self.kind} action space without its size")
        return int(width)


@dataclass(frozen=True)
class MoEConfig:
    """Token-wise and task-wise mixture-of-experts settings (paper Sections 4.1-4.2, Appendix B, F)."""

    token_moe: bool = True
    """Token-wise MoE on (False: the "w/o Token-MoE" ablation)."""
    task_moe: bool = True
    """Task-wise MoE on (False: the "w/o Task-MoE" ablation). Both off gives vanilla AD / DPT."""
    token_experts: int = 6
    """Experts of the token-wise MoE (E in Eq. 2)."""
    token_top_k: int = 2
    """Token experts each token is routed to (top-k of the noisy gate, Eq. 14)."""
    task_experts: int = 8
    """Experts of the task-wise MoE."""
    task_top_k: int = 2
    """Task experts mixed per position (top-k of the task router)."""
    positions: str = "top"
    """Blocks whose FFN becomes an MoE layer: 'top', 'middle', 'bottom', 'all' or comma-separated indices."""
    noisy_gating: bool = True
    """Noisy top-k gating for the token router during training (Eq. 14)."""
    w_imp: float = 0.01
    """Weight of the importance term of the balance loss (Eq. 13)."""
    w_load: float = 0.01
    """Weight of the load term of the balance loss (Eq. 18)."""
    w_con: float = 0.01
    """Weight of the contrastive (InfoNCE) loss of the task router (Eq. 7)."""
    momentum: float = 0.995
    """Momentum of the key router update (Eq. 8)."""
    task_routing: TaskRouting = "prefix"
    """'prefix': causal prefix mean of hidden states (servable); 'sequence': whole-sequence mean,
    non-causal, kept only for comparison with the paper's formulation and refused by the server."""

    def __post_init__(self) -> None:
        for name, experts, k in (
            ("token", self.token_experts, self.token_top_k),
            ("task", self.task_experts, self.task_top_k),
        ):
            if experts < 1:
                raise ConfigError(f"moe.{name}_experts", f"must be >= 1, got {experts}")
            if not 1 <= k <= experts:
                raise ConfigError(f"moe.{name}_top_k", f"must be in [1, {experts}], got {k}")
        if not 0.0 <= self.momentum < 1.0:
            raise ConfigError("moe.momentum", f"must be in [0, 1), got {self.momentum}")
        for name in ("w_imp", "w_load", "w_con"):
            if getattr(self, name) < 0:
                raise ConfigError(f"moe.{name}", "must be >= 0")
        if self.task_routing not in ("prefix", "sequence"):
            raise ConfigError(
                "moe.task_routing", f"must be 'prefix' or 'sequence', got {self.task_routing!r}"
            )

    @property
    def enabled(self) -> bool:
        """True when at least one of the two MoE layers is on."""
        return self.token_moe or self.task_moe

    def layer_indices(self, n_layers: int) -> tuple[int, ...]:
        """Indices of the blocks that hold an MoE layer (empty when both MoEs are off)."""
        if not self.enabled:
            return ()
        named = {
            "top": (n_layers - 1,),
            "bottom": (0,),
            "middle": (n_layers // 2,),
            "all": tuple(range(n_layers)),
        }
        if self.positions in named:
            return named[self.positions]
        try:
            indices = tuple(sorted({int(p) for p in self.positions.split(",")}))
        except ValueError as exc:
            raise ConfigError("moe.positions", f"unknown position {self.positions!r}") from exc
        if not indices or any(not 0 <= i < n_layers for i in indices):
            raise ConfigError(
                "moe.positions", f"indices must lie in [0, {n_layers - 1}], got {self.positions!r}"
            )
        return indices


@dataclass(frozen=True)
class T2MIRConfig:
    """Architecture, spaces and training-independent settings of a T2MIR policy."""

    observation: ObservationSpec
    """Observation vector the policy reads, with its input normalisation."""
    action: ActionSpec
    """Action space the policy acts in (size of its head)."""
    backbone: Backbone = "ad"
    """'ad' (algorithm distillation over sorted learning histories) or 'dpt' (prompt + query state)."""
    env_id: str = ""
    """Environment the policy was trained for (informative; the server reports it)."""
    d_model: int = 128
    """Width of the token embeddings and the residual stream (even: with both MoEs on, each outputs d/2)."""
    n_layers: int = 4
    """Transformer blocks."""
    n_heads: int = 4
    """Attention heads per block (must divide d_model)."""
    ffn_mult: int = 4
    """Hidden width of the FFN and of every expert, as a multiple of d_model."""
    dropout: float = 0.1
    """Dropout rate on the embeddings and on the outputs of attention, FFNs and experts (training only)."""
    max_episode_steps: int = 100
    """Largest timestep index inside one episode (size of the timestep embedding)."""
    context_episodes: int = 4
    """AD: episodes in one training segment (L); served context = up to L-1 best past episodes + current."""
    reward_scale: float = 1.0
    """Rewards are multiplied by this before embedding."""
    unrewarded_context: UnrewardedContext = "keep"
    """AD: 'keep' ranks every closed episode by return; 'drop' leaves the context empty while every
    closed episode has return 0 (the policy searches as in a history's first episode instead of
    reading its failed searches), then ranks every episode as 'keep' does. DPT: 'keep' only."""
    moe: MoEConfig = field(default_factory=MoEConfig)
    """Token-wise and task-wise mixture-of-experts settings."""

    def __post_init__(self) -> None:
        if self.backbone not in ("ad", "dpt"):
            raise ConfigError("backbone", f"must be 'ad' or 'dpt', got {self.backbone!r}")
        if self.d_model < 2 or self.d_model % 2:
            raise ConfigError("d_model", f"must be an even number >= 2, got {self.d_model}")
        if self.n_heads < 1 or self.d_model % self.n_heads:
            raise ConfigError("n_heads", f"must divide d_model={self.d_model}, got {self.n_heads}")
        for name in ("n_layers", "ffn_mult", "max_episode_steps", "context_episodes"):
            if getattr(self, name) < 1:
                raise ConfigError(name, f"must be >= 1, got {getattr(self, name)}")
        if not 0.0 <= self.dropout < 1.0:
            raise ConfigError("dropout", f"must be in [0, 1), got {self.dropout}")
        if not (math.isfinite(self.reward_scale) and self.reward_scale > 0):
            raise ConfigError("reward_scale", "must be finite and > 0")
        if self.unrewarded_context not in ("keep", "drop"):
            raise ConfigError(
                "unrewarded_context", f"must be 'keep' or 'drop', got {self.unrewarded_context!r}"
            )
        if self.backbone != "ad" and self.unrewarded_context != "keep":
            raise ConfigError("unrewarded_context", "'drop' applies to the AD backbone only")
        self.moe.layer_indices(self.n_layers)

    @property
    def max_context_tokens(self) -> int:
        """Tokens in the longest context this policy reads (3 tokens per step)."""
        if self.backbone == "ad":
            return 3 * self.context_episodes * self.max_episode_steps
        return 3 * self.max_episode_steps + 1

    def replace(self, **changes: Any) -> T2MIRConfig:
        """A copy with some top-level fields changed (validated again)."""
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict, including the schema version."""
        data = dataclasses.asdict(self)
        data["schema_version"] = CONFIG_SCHEMA_VERSION
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> T2MIRConfig:
        """Build and validate a config from ``to_dict`` output; unknown fields are refused."""
        data = dict(data)
        version = data.pop("schema_version", CONFIG_SCHEMA_VERSION)
        if version != CONFIG_SCHEMA_VERSION:
            raise ConfigError(
                "schema_version",
                f"unsupported config schema {version} (this build reads {CONFIG_SCHEMA_VERSION})",
            )
        try:
            observation = ObservationSpec(**data.pop("observation"))
            action = ActionSpec(**data.pop("action"))
            moe = MoEConfig(**data.pop("moe", {}))
        except KeyError as exc:
            raise ConfigError(str(exc.args[0]), "missing") from exc
        except TypeError as exc:
            raise ConfigError("config", f"unexpected or missing field ({exc})") from exc
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ConfigError(unknown[0], "unknown config field")
        return cls(observation=observation, action=action, moe=moe, **data)
