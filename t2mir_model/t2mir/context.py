"""The context each T2MIR backbone reads from a session's history (Algorithms 2 and 4).

AD reads up to L-1 earlier episodes sorted by return (best last) followed by the open episode; with
the config's ``unrewarded_context="drop"`` it reads no earlier episode while every closed episode
has return 0. DPT reads the previous episode as its prompt and the current state as its query. The
choice of AD's episodes depends on closed episodes only, so it changes only when an episode closes
and a cached context stays valid inside an episode.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from ..history import Episode, SessionHistory
from .configuration import T2MIRConfig, UnrewardedContext
from .tokens import (
    ACTION,
    REWARD,
    STATE,
    TokenBatch,
    append_queries,
    concat_tokens,
    interleave_steps,
    slice_tokens,
)


def ad_context_episodes(
    episodes: list[Episode], n_episodes: int, unrewarded: UnrewardedContext = "keep"
) -> list[Episode]:
    """The ``n_episodes - 1`` best episodes by return, best last; ties go to the later episode.

    ``unrewarded="drop"``: none while every episode has return 0 (the context of a history's first
    episode), the same ranking as ``"keep"`` once one has not. Either way the episodes chosen are
    among the ``n_episodes - 1`` best, all a session's store has to retain.
    """
    if unrewarded == "drop" and all(e.ret == 0 for e in episodes):
        return []
    ranked = sorted(episodes, key=lambda e: (e.ret, e.index))
    return ranked[len(ranked) - (n_episodes - 1) :] if n_episodes > 1 else []


def dpt_prompt_episode(episodes: list[Episode]) -> Episode | None:
    """The most recent closed episode, or None before the first one closes."""
    return max(episodes, key=lambda e: e.index) if episodes else None


def episode_tokens(episode: Episode) -> TokenBatch:
    """A closed episode as one row of 3T tokens."""
    t = len(episode)
    return interleave_steps(
        episode.obs[None],
        episode.actions[None],
        episode.rewards[None],
        torch.arange(t)[None],
        torch.ones(1, t, dtype=torch.bool),
    )


def open_episode_tokens(history: SessionHistory, action_example: Tensor) -> TokenBatch:
    """s_0, a_0, r_0, ..., s_t of the open episode: one row of 3t + 1 tokens."""
    t = history.t
    actions = torch.stack([*history.actions, torch.zeros_like(action_example)])  # a_t is not known yet
    rewards = torch.tensor([*history.rewards, 0.0], dtype=torch.float32)
    steps = interleave_steps(
        torch.stack(history.obs)[None],
        actions[None],
        rewards[None],
        torch.arange(t + 1)[None],
        torch.ones(1, t + 1, dtype=torch.bool),
    )
    return slice_tokens(steps, 0, 3 * t + 1)


def step_tokens(histories: Sequence[SessionHistory]) -> TokenBatch:
    """The three tokens a_{t-1}, r_{t-1}, s_t each history appends at its step t >= 1 of the open
    episode, as one (B, 3) batch: one stack per field for the whole batch, no per-row tensors."""
    b = len(histories)
    t = torch.tensor([h.t for h in histories])  # (B,)
    state = torch.stack([h.obs[h.t] for h in histories])  # (B, obs_dim)
    previous = torch.stack([h.actions[h.t - 1] for h in histories])  # (B,) long or (B, act_dim) float
    reward = torch.tensor([h.rewards[h.t - 1] for h in histories], dtype=torch.float32)  # (B,)
    return TokenBatch(
        kind=torch.tensor([ACTION, REWARD, STATE]).repeat(b, 1),
        obs=state.repeat_interleave(3, 0).view(b, 3, -1),  # read on the state token only
        action=previous.repeat_interleave(3, 0).view(b, 3, *previous.shape[1:]),  # (B, 3[, act_dim])
        reward=reward.repeat_interleave(3, 0).view(b, 3),
        timestep=torch.stack([t - 1, t - 1, t], 1),
        valid=torch.ones(b, 3, dtype=torch.bool),
        query=torch.zeros(b, 3, dtype=torch.bool),
    )


def query_tokens(history: SessionHistory, action_example: Tensor) -> TokenBatch:
    """The current state s_t as a DPT query token (one row, one token)."""
    empty = slice_tokens(
        interleave_steps(
            history.obs[-1][None, None],
            action_example[None, None],
            torch.zeros(1, 1),
            torch.zeros(1, 1, dtype=torch.long),
            torch.ones(1, 1, dtype=torch.bool),
        ),
        0,
        0,
    )
    return append_queries(
        empty, history.obs[-1][None, None], torch.tensor([[history.t]]), torch.ones(1, 1, dtype=torch.bool)
    )


def ad_context_tokens(config: T2MIRConfig, history: SessionHistory, action_example: Tensor) -> TokenBatch:
    """Full AD context for the open episode's latest state: the past episodes the config's rule
    chooses (`ad_context_episodes`), best last, then the open episode."""
    chosen = ad_context_episodes(history.episodes, config.context_episodes, config.unrewarded_context)
    past = [episode_tokens(e) for e in chosen]
    return concat_tokens([*past, open_episode_tokens(history, action_example)])


def dpt_context_tokens(history: SessionHistory, action_example: Tensor) -> tuple[TokenBatch, int]:
    """DPT prompt (previous episode, possibly empty) followed by the query: (tokens, prompt length)."""
    prompt = dpt_prompt_episode(history.episodes)
    query = query_tokens(history, action_example)
    if prompt is None:
        return query, 0
    return concat_tokens([episode_tokens(prompt), query]), 3 * len(prompt)
