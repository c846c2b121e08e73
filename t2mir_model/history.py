"""A session's in-context history: its closed episodes and the open one up to the latest state.

Plain data shared by every model family: the server mirrors it, the evaluator fills it, and each
family's engine builds its own context from it (T2MIR: `t2mir_model.t2mir.context`).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import Tensor


@dataclass(frozen=True)
class Episode:
    """A closed episode: T steps of (s_t, a_t, r_t)."""

    index: int
    obs: Tensor  # (T, obs_dim) float32
    actions: Tensor  # (T,) long or (T, act_dim) float32
    rewards: Tensor  # (T,) float32

    @property
    def ret(self) -> float:
        """Undiscounted return."""
        return float(self.rewards.sum())

    def __len__(self) -> int:
        return int(self.rewards.shape[0])


@dataclass
class SessionHistory:
    """Closed episodes kept for context plus the open episode up to its latest state s_t."""

    episode: int = 0
    """Index of the open episode."""
    episodes: list[Episode] = field(default_factory=list)
    obs: list[Tensor] = field(default_factory=list)
    """s_0 .. s_t of the open episode, each (obs_dim,)."""
    actions: list[Tensor] = field(default_factory=list)
    """a_0 .. a_{t-1}: () long or (act_dim,) float."""
    rewards: list[float] = field(default_factory=list)
    """r_0 .. r_{t-1}."""

    @property
    def t(self) -> int:
        """Timestep of the latest state in the open episode (-1 before the first observation)."""
        return len(self.obs) - 1

    def observe(self, obs: Tensor, reward: float | None = None, action: Tensor | None = None) -> None:
        """Record the state s_t (and, after the first step, the previous action and its reward)."""
        if self.obs:
            if action is None or reward is None:
                raise ValueError(
                    "after the first step of an episode, the previous action and its reward are needed"
                )
            self.actions.append(action)
            self.rewards.append(float(reward))
        self.obs.append(obs)

    def close(self, action: Tensor, reward: float) -> Episode:
        """End the open episode with its last action and reward; returns the closed episode."""
        if not self.obs:
            raise ValueError("no open episode to close")
        actions = [*self.actions, action]
        episode = Episode(
            index=self.episode,
            obs=torch.stack(self.obs),
            actions=torch.stack(actions),
            rewards=torch.tensor([*self.rewards, float(reward)], dtype=torch.float32),
        )
        self.episodes.append(episode)
        self.episode += 1
        self.obs, self.actions, self.rewards = [], [], []
        return episode
