"""T2MIR model package: config, policy (token- and task-wise MoE on AD / DPT), KV-cached decoding.

Depends on torch and safetensors only.
"""

from .checkpoint import CheckpointError, read_card, read_config, update_card, variant_name
from .configuration import ActionSpec, ConfigError, MoEConfig, ObservationSpec, T2MIRConfig
from .experts import set_sparse_dispatch
from .kv_cache import CacheCapacityError, KVCache, StepRow
from .modeling import PolicyBatch, T2MIRPolicy
from .outputs import DecodeOutput, LayerRouting, LossOutput, PolicyOutput
from .tokens import ACTION, MODALITIES, REWARD, STATE, TokenBatch, append_queries, interleave_steps

__all__ = [
    "ACTION",
    "MODALITIES",
    "REWARD",
    "STATE",
    "ActionSpec",
    "CacheCapacityError",
    "CheckpointError",
    "ConfigError",
    "DecodeOutput",
    "KVCache",
    "LayerRouting",
    "LossOutput",
    "MoEConfig",
    "ObservationSpec",
    "PolicyBatch",
    "PolicyOutput",
    "StepRow",
    "T2MIRConfig",
    "T2MIRPolicy",
    "TokenBatch",
    "append_queries",
    "interleave_steps",
    "read_card",
    "read_config",
    "set_sparse_dispatch",
    "update_card",
    "variant_name",
]
