"""Configuration of an M3DT policy: one frozen, validated dataclass saved with every checkpoint.

Tasks of several sizes share padded vectors: observations are zero-padded to ``obs_dim`` and
actions to ``act_dim``; each request (and each training sample) names its task's real action width,
and the loss and the served action use only those dimensions. ``moe=False`` gives the dense
Prompt-DT baselines (same config, no MoE branch).
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any

from ..t2mir.configuration import ActionSpec, ConfigError, ObservationSpec

M3DT_SCHEMA_VERSION = 1


@dataclass(frozen=True)
class M3DTConfig:
    """Architecture and input conventions of an M3DT (or dense Prompt-DT) policy."""

    obs_dim: int = 39
    """Padded observation width shared by all tasks (Meta-World's 39; smaller tasks zero-padded)."""
    act_dim: int = 4
    """Padded action width shared by all tasks (4 for Meta-World + Point-Robot; 8 with DMControl)."""
    context_steps: int = 20
    """K: steps of the current episode in the window (the paper's K = 20)."""
    prompt_steps: int = 5
    """Steps of the task prompt placed before the window (the public code: 1 episode x 5 steps)."""
    d_model: int = 128
    """Width of the token embeddings and the residual stream."""
    n_layers: int = 3
    """Transformer blocks."""
    n_heads: int = 4
    """Attention heads per block (must divide d_model)."""
    ffn_mult: int = 4
    """Hidden width of the dense MLP and of every expert, as a multiple of d_model."""
    moe: bool = True
    """MoE branch in every block (h + MLP(h) + MoE(h)); False gives a dense Prompt-DT."""
    n_experts: int = 8
    """Experts per block (the paper: up to 48). Ignored when ``moe`` is False."""
    router_hidden: int = 64
    """Hidden width of the router MLP (Linear -> ReLU -> Linear -> softmax over experts)."""
    top_k: int = 0
    """0: mix all experts with the soft router weights (the public code); k > 0: renormalised top-k."""
    max_timestep: int = 500
    """Largest timestep inside one episode (size of the learned timestep embedding); also the
    longest episode the policy acts in."""
    rtg_scale: float = 0.001
    """Returns-to-go are multiplied by this before embedding."""
    dropout: float = 0.1
    """Dropout on embeddings and on attention / MLP / expert outputs (training only)."""
    env_id: str = "m3dt/multitask"
    """Task suite the policy was trained on (informative; the server reports it)."""

    def __post_init__(self) -> None:
        for name in (
            "obs_dim",
            "act_dim",
            "context_steps",
            "prompt_steps",
            "d_model",
            "n_layers",
            "ffn_mult",
            "n_experts",
            "router_hidden",
            "max_timestep",
        ):
            if getattr(self, name) < 1:
                raise ConfigError(name, f"must be >= 1, got {getattr(self, name)}")
        if self.n_heads < 1 or self.d_model % self.n_heads:
            raise ConfigError("n_heads", f"must divide d_model={self.d_model}, got {self.n_heads}")
        if not 0 <= self.top_k <= self.n_experts:
            raise ConfigError("top_k", f"must be in [0, {self.n_experts}], got {self.top_k}")
        if not 0.0 <= self.dropout < 1.0:
            raise ConfigError("dropout", f"must be in [0, 1), got {self.dropout}")
        if not (math.isfinite(self.rtg_scale) and self.rtg_scale > 0):
            raise ConfigError("rtg_scale", "must be finite and > 0")

    # --- the facts serving reads (t2mir_model.ServedConfig) ---

    @property
    def observation(self) -> ObservationSpec:
        """The padded observation vector (requests may send fewer features; they are zero-padded)."""
        return ObservationSpec(dim=self.obs_dim)

    @property
    def action(self) -> ActionSpec:
        """The padded continuous action space, bounded to [-1, 1] (tanh head)."""
        return ActionSpec(kind="continuous", dim=self.act_dim)

    @property
    def backbone(self) -> str:
        """The context rule: 'prompt-dt' (task prompt + last K steps with returns-to-go)."""
        return "prompt-dt"

    @property
    def max_episode_steps(self) -> int:
        """Longest episode the policy can act in."""
        return self.max_timestep

    @property
    def context_episodes(self) -> int:
        """Episodes one context spans: only the open one (closed episodes are not read)."""
        return 1

    @property
    def window_tokens(self) -> int:
        """Tokens of one forward: 3 per prompt step + 3 per window step."""
        return 3 * (self.prompt_steps + self.context_steps)

    def replace(self, **changes: Any) -> M3DTConfig:
        """A copy with some fields changed (validated again)."""
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict, including the schema version."""
        return {**dataclasses.asdict(self), "schema_version": M3DT_SCHEMA_VERSION}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> M3DTConfig:
        """Build and validate a config from ``to_dict`` output; unknown fields are refused."""
        data = dict(data)
        version = data.pop("schema_version", M3DT_SCHEMA_VERSION)
        if version != M3DT_SCHEMA_VERSION:
            raise ConfigError("schema_version", f"unsupported M3DT config schema {version}")
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ConfigError(unknown[0], "unknown config field")
        return cls(**data)
