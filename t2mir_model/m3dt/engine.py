"""The M3DT family's engine: one batched forward over every request's prompt + last K steps.

No KV cache: a row is at most 3 (P + K) = 75 tokens, and the window slides by one step per act, so
every cached key of the window would change position-relative content anyway (the return-to-go and
the action of the newest step arrive each act); recomputing the short window in one batched forward
is simpler than caching and costs little. Consequently ``num_slots`` is only the largest batch one
`act` takes, ``slots_used`` is always 0, every result is a cache miss, and `evict` has nothing to
forget. The engine is synchronous, deterministic (``seed`` is ignored: the action is the tanh head's
output) and implements `PolicyEngine`.

A request is an `M3DTActRequest`: the session's history (its open episode supplies the last K
states, actions and rewards), its task prompt (which fixes the task's observation and action widths)
and its target return; the return-to-go of step i is ``target_return - sum(rewards before i)``.
"""

from __future__ import annotations

from collections.abc import Hashable, Sequence
from dataclasses import dataclass

import torch

from ..engine.interface import ActRequest, ActResult, EngineOutput
from ..layers.kv_cache import ReadCounts
from .batch import stack_rows, window_row
from .checkpoint import m3dt_variant
from .configuration import M3DTConfig
from .modeling import M3DTPolicy
from .prompt import TaskPrompt, check_target_return

DEFAULT_MAX_BATCH = 256
"""Requests one `act` call takes when the loader is given no slot count."""


@dataclass(frozen=True, kw_only=True)
class M3DTActRequest(ActRequest):
    """An `ActRequest` for an M3DT model: the session's history plus its task prompt and target return."""

    prompt: TaskPrompt
    """The session's task prompt (sent by the client, or shipped with the checkpoint by task name)."""
    target_return: float
    """The return the session asks for; its returns-to-go are this minus the rewards so far."""


class M3DTEngine:
    """Batched action selection for M3DT sessions (a `PolicyEngine` without a cache)."""

    def __init__(self, policy: M3DTPolicy, max_batch: int = DEFAULT_MAX_BATCH) -> None:
        if max_batch < 1:
            raise ValueError(f"max_batch must be >= 1, got {max_batch}")
        self.policy = policy.eval()
        self._max_batch = max_batch
        self._reads = ReadCounts()

    @property
    def config(self) -> M3DTConfig:
        """The loaded model's config."""
        return self.policy.config

    @property
    def variant(self) -> str:
        """e.g. 'M3DT-8' or 'Prompt-DT'."""
        return m3dt_variant(self.policy.config)

    @property
    def num_slots(self) -> int:
        """The most requests one `act` call takes."""
        return self._max_batch

    @property
    def slots_used(self) -> int:
        """Always 0: the engine keeps no per-session state."""
        return 0

    @property
    def compiled_step(self) -> bool:
        """Always False: every act is an eager forward."""
        return False

    @property
    def reads(self) -> ReadCounts:
        """Always zero: no cache to read."""
        return self._reads

    def evict(self, key: Hashable) -> None:
        """Nothing to forget (no per-session state)."""

    def _check(self, requests: Sequence[ActRequest]) -> list[M3DTActRequest]:
        if len(requests) > self._max_batch:
            raise ValueError(f"{len(requests)} requests exceed the engine's batch of {self._max_batch}")
        if len({r.key for r in requests}) != len(requests):
            raise ValueError("a session appears twice in one batch")
        checked = []
        for r in requests:
            if not isinstance(r, M3DTActRequest):
                raise TypeError(f"an M3DT engine needs M3DTActRequest, got {type(r).__name__}")
            r.prompt.check(self.config)
            check_target_return(r.target_return)
            checked.append(r)
        return checked

    def act(self, requests: Sequence[ActRequest]) -> EngineOutput:
        """Actions (each cut to its prompt's action width) for a batch of sessions, in request order."""
        checked = self._check(requests)
        if not checked:
            return EngineOutput(results=[], routing=[], new_tokens=0)
        rows = [window_row(self.config, r.history, r.prompt, r.target_return) for r in checked]
        device = next(self.policy.parameters()).device
        batch = stack_rows(rows).to(device)
        with torch.inference_mode():
            out = self.policy(batch)
        last = out.actions[:, -1].float().cpu()  # (B, act_dim): the action at each row's s_t
        results = [
            ActResult(action=last[i, : r.prompt.action_width].clone(), cache_hit=False)
            for i, r in enumerate(checked)
        ]
        tokens = int(3 * (batch.mask.sum() + batch.prompt_mask.sum()))
        return EngineOutput(results=results, routing=[out.routing], new_tokens=tokens)
