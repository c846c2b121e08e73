"""Token batches: the (s, a, r) sequence a T2MIR policy reads, in flat tensor form.

Every step of an episode becomes three tokens, s_t, a_t, r_t, sharing the timestep t (paper 4.3,
DESIGN.md decision 1). A DPT query state is a state token flagged ``query``: it attends to the
committed context and to itself, never to other queries, and is never kept in a KV cache.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

STATE, ACTION, REWARD = 0, 1, 2
MODALITIES = ("s", "a", "r")


@dataclass
class TokenBatch:
    """A right-padded batch of tokens. Values of a modality are ignored on tokens of another kind."""

    kind: Tensor  # (B, K) long in {STATE, ACTION, REWARD}
    obs: Tensor  # (B, K, obs_dim) float
    action: Tensor  # (B, K) long (discrete) or (B, K, act_dim) float (continuous, raw units)
    reward: Tensor  # (B, K) float
    timestep: Tensor  # (B, K) long, step index inside the token's episode
    valid: Tensor  # (B, K) bool, False on padding
    query: Tensor  # (B, K) bool, True on DPT query tokens

    @property
    def shape(self) -> tuple[int, int]:
        """(batch, tokens)."""
        return int(self.kind.shape[0]), int(self.kind.shape[1])

    def to(self, device: torch.device | str) -> TokenBatch:
        """The same batch on another device."""
        return TokenBatch(*(getattr(self, f).to(device) for f in _FIELDS))


_FIELDS = ("kind", "obs", "action", "reward", "timestep", "valid", "query")


def interleave_steps(
    obs: Tensor, action: Tensor, reward: Tensor, timestep: Tensor, valid: Tensor
) -> TokenBatch:
    """Turn per-step arrays into the s, a, r token sequence.

    obs (B, T, obs_dim), action (B, T) or (B, T, act_dim), reward (B, T), timestep (B, T),
    valid (B, T) -> TokenBatch with K = 3T, tokens ordered s_0, a_0, r_0, s_1, ...
    """
    b, t = reward.shape
    kind = torch.tensor([STATE, ACTION, REWARD], device=reward.device).repeat(t).expand(b, 3 * t)

    def triple(x: Tensor) -> Tensor:
        # (B, T, ...) -> (B, 3T, ...), each step's value repeated on its three tokens
        return x.repeat_interleave(3, dim=1)

    return TokenBatch(
        kind=kind.contiguous(),
        obs=triple(obs),
        action=triple(action),
        reward=triple(reward),
        timestep=triple(timestep),
        valid=triple(valid),
        query=torch.zeros(b, 3 * t, dtype=torch.bool, device=reward.device),
    )


def append_queries(
    prompt: TokenBatch, query_obs: Tensor, query_timestep: Tensor, query_valid: Tensor
) -> TokenBatch:
    """Put DPT query states after the prompt (DESIGN.md decision 3).

    prompt (B, K), query_obs (B, Q, obs_dim), query_timestep (B, Q), query_valid (B, Q)
    -> TokenBatch (B, K + Q) whose last Q tokens are queries.
    """
    b, q = query_timestep.shape
    device = query_obs.device
    action_shape = (b, q, *prompt.action.shape[2:])
    return TokenBatch(
        kind=torch.cat([prompt.kind, torch.full((b, q), STATE, dtype=torch.long, device=device)], 1),
        obs=torch.cat([prompt.obs, query_obs], 1),
        action=torch.cat(
            [prompt.action, torch.zeros(action_shape, dtype=prompt.action.dtype, device=device)], 1
        ),
        reward=torch.cat([prompt.reward, torch.zeros(b, q, dtype=prompt.reward.dtype, device=device)], 1),
        timestep=torch.cat([prompt.timestep, query_timestep], 1),
        valid=torch.cat([prompt.valid, query_valid], 1),
        query=torch.cat([prompt.query, query_valid.clone()], 1),
    )


def concat_tokens(parts: list[TokenBatch]) -> TokenBatch:
    """Concatenate token batches along the token axis (same batch size)."""
    return TokenBatch(*(torch.cat([getattr(p, f) for p in parts], 1) for f in _FIELDS))


def pad_rows(rows: list[TokenBatch]) -> TokenBatch:
    """Stack token batches of different lengths into one right-padded batch (padding is invalid)."""
    if len(rows) == 1:
        return rows[0]
    width = max(r.shape[1] for r in rows)

    def pad(x: Tensor) -> Tensor:
        # (b, k, ...) -> (b, width, ...)
        return torch.cat([x, x.new_zeros((x.shape[0], width - x.shape[1], *x.shape[2:]))], 1)

    return TokenBatch(*(torch.cat([pad(getattr(r, f)) for r in rows], 0) for f in _FIELDS))


def slice_tokens(tokens: TokenBatch, start: int, stop: int) -> TokenBatch:
    """Tokens ``start:stop`` of every row."""
    return TokenBatch(*(getattr(tokens, f)[:, start:stop] for f in _FIELDS))
