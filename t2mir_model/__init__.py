"""In-context RL policies with mixtures of experts, KV-cached decoding, and the engines that serve them.

Depends on torch and safetensors only. The server and the trainer import from this package alone;
its subpackages are its implementation:

- ``layers/``: building blocks shared by every family: causal attention, expert banks, routing
  maths (``top_k_gates``, ``cv_squared``, ``normalised_entropy``, smooth load), the KV cache, the
  feed-forward sublayer, and routing summaries as plain data (`summarize_routing`).
- ``t2mir/``: the T2MIR family (token- and task-wise MoE on AD / DPT backbones): `T2MIRConfig`
  and `MoEConfig` (``configuration``), `T2MIRPolicy` (``modeling``), the s, a, r token sequence,
  the context each backbone reads from a session history, the compiled one-session decode step.
- ``m3dt/``: the M3DT family (Prompt-DT with a soft MoE beside every block's MLP, for massive
  multi-task RL): `M3DTConfig`, `M3DTPolicy`, `TaskPrompt` (the demonstration a session names),
  `M3DTBatch` (prompt + last K steps, padded), its checkpoint with shipped prompts
  (`load_prompts`), and `M3DTEngine`, driven with `M3DTActRequest` (history + prompt + target return).
- ``engine/``: the `PolicyEngine` interface the server and the evaluator drive (`ActRequest` in,
  `EngineOutput` out), the T2MIR family's `DecodeEngine`, and `load_engine`, the one entry point
  from a checkpoint directory to an engine of the family its config names.
- ``history``: `SessionHistory` / `Episode`, the session data every family reads;
  ``checkpoint``: checkpoint directories (safetensors + JSON config + model card);
  ``exploration``: seeded exploration noise for continuous actions; ``config_io``: config
  dataclasses built from nested tables and dotted ``key=value`` overrides, checked by type.

Main entry points: `load_engine` (serving), `T2MIRPolicy` / `T2MIRPolicy.from_pretrained` (training,
evaluation), `DecodeEngine` (evaluation over a policy in memory), `summarize_routing` (metrics).
"""

from . import config_io
from .checkpoint import (
    FAMILY_FIELD,
    M3DT_FAMILY,
    T2MIR_FAMILY,
    CheckpointError,
    read_card,
    read_config,
    read_family,
    update_card,
    variant_name,
)
from .engine.decode import DecodeEngine
from .engine.interface import ActRequest, ActResult, EngineOutput, PolicyEngine, ServedConfig
from .engine.loading import EngineOptions, load_engine
from .exploration import MAX_ACTION_NOISE, card_action_noise, check_action_noise, explore, sample_discrete
from .history import Episode, SessionHistory
from .layers.experts import set_sparse_dispatch
from .layers.kv_cache import CacheCapacityError, KVCache, ReadCounts, StepRow
from .layers.routing import cv_squared, normalised_entropy
from .layers.routing_summary import LayerRoutingSummary, LayerStatistics, summarize_routing
from .m3dt.batch import M3DTBatch, stack_rows, window_row
from .m3dt.checkpoint import PROMPTS_FILE, load_prompts, m3dt_variant, read_m3dt_config
from .m3dt.configuration import M3DTConfig
from .m3dt.engine import M3DTActRequest, M3DTEngine
from .m3dt.modeling import EXPERTS, ROUTER, M3DTLayerRouting, M3DTOutput, M3DTPolicy
from .m3dt.prompt import PromptError, TaskPrompt, check_target_return
from .t2mir.bench import BenchRow, bench
from .t2mir.configuration import (
    ActionSpec,
    ConfigError,
    MoEConfig,
    ObservationSpec,
    T2MIRConfig,
    UnrewardedContext,
)
from .t2mir.context import ad_context_tokens, dpt_context_tokens
from .t2mir.fused_step import StepCompileError
from .t2mir.modeling import PolicyBatch, T2MIRPolicy
from .t2mir.outputs import DecodeOutput, LayerRouting, LossOutput, PolicyOutput
from .t2mir.tokens import (
    ACTION,
    MODALITIES,
    REWARD,
    STATE,
    TokenBatch,
    append_queries,
    interleave_steps,
)

__all__ = [
    "ACTION",
    "EXPERTS",
    "FAMILY_FIELD",
    "M3DT_FAMILY",
    "MAX_ACTION_NOISE",
    "MODALITIES",
    "PROMPTS_FILE",
    "REWARD",
    "ROUTER",
    "STATE",
    "T2MIR_FAMILY",
    "ActRequest",
    "ActResult",
    "ActionSpec",
    "BenchRow",
    "CacheCapacityError",
    "CheckpointError",
    "ConfigError",
    "DecodeEngine",
    "DecodeOutput",
    "EngineOptions",
    "EngineOutput",
    "Episode",
    "KVCache",
    "LayerRouting",
    "LayerRoutingSummary",
    "LayerStatistics",
    "LossOutput",
    "M3DTActRequest",
    "M3DTBatch",
    "M3DTConfig",
    "M3DTEngine",
    "M3DTLayerRouting",
    "M3DTOutput",
    "M3DTPolicy",
    "MoEConfig",
    "ObservationSpec",
    "PolicyBatch",
    "PolicyEngine",
    "PolicyOutput",
    "PromptError",
    "ReadCounts",
    "ServedConfig",
    "SessionHistory",
    "StepCompileError",
    "StepRow",
    "T2MIRConfig",
    "T2MIRPolicy",
    "TaskPrompt",
    "TokenBatch",
    "UnrewardedContext",
    "ad_context_tokens",
    "append_queries",
    "bench",
    "card_action_noise",
    "check_action_noise",
    "check_target_return",
    "config_io",
    "cv_squared",
    "dpt_context_tokens",
    "explore",
    "interleave_steps",
    "load_engine",
    "load_prompts",
    "m3dt_variant",
    "normalised_entropy",
    "read_card",
    "read_config",
    "read_family",
    "read_m3dt_config",
    "sample_discrete",
    "set_sparse_dispatch",
    "stack_rows",
    "summarize_routing",
    "update_card",
    "variant_name",
    "window_row",
]
