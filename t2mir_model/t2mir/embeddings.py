"""Per-modality token embeddings with a per-episode timestep embedding (paper 4.3, Appendix F)."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from .configuration import T2MIRConfig
from .tokens import ACTION, STATE, TokenBatch


class TokenEmbedding(nn.Module):
    """Embeds s, a, r tokens with their own layers and adds a learned timestep embedding.

    Observations are normalised with the config's statistics, continuous actions are mapped from
    their bounds to [-1, 1], rewards are multiplied by ``reward_scale``.
    """

    obs_mean: Tensor  # (obs_dim,) buffer
    obs_std: Tensor  # (obs_dim,) buffer
    act_low: Tensor  # (act_dim,) buffer, continuous actions only
    act_high: Tensor  # (act_dim,) buffer, continuous actions only

    def __init__(self, config: T2MIRConfig) -> None:
        super().__init__()
        d = config.d_model
        obs = config.observation
        self.state = nn.Linear(obs.dim, d)
        self.reward = nn.Linear(1, d)
        self.timestep = nn.Embedding(config.max_episode_steps, d)
        self.discrete = config.action.is_discrete
        self.action: nn.Embedding | nn.Linear = (
            nn.Embedding(config.action.width, d) if self.discrete else nn.Linear(config.action.width, d)
        )
        self.reward_scale = config.reward_scale
        self.max_timestep = config.max_episode_steps - 1
        self.max_action = config.action.width - 1  # largest discrete action index
        self.register_buffer("obs_mean", torch.tensor(obs.mean or (0.0,) * obs.dim), persistent=False)
        self.register_buffer("obs_std", torch.tensor(obs.std or (1.0,) * obs.dim), persistent=False)
        if not self.discrete:
            low = torch.tensor(config.action.low)
            high = torch.tensor(config.action.high)
            self.register_buffer("act_low", low, persistent=False)
            self.register_buffer("act_high", high, persistent=False)

    def normalise_action(self, action: Tensor) -> Tensor:
        """Continuous action in raw units (..., act_dim) -> [-1, 1]."""
        return 2.0 * (action - self.act_low) / (self.act_high - self.act_low) - 1.0

    def denormalise_action(self, action: Tensor) -> Tensor:
        """Continuous action in [-1, 1] (..., act_dim) -> raw units."""
        return self.act_low + (action + 1.0) * 0.5 * (self.act_high - self.act_low)

    def forward(self, tokens: TokenBatch) -> Tensor:
        """TokenBatch (B, K) -> embeddings (B, K, d)."""
        e_state = self.state((tokens.obs - self.obs_mean) / self.obs_std)  # (B, K, d)
        e_reward = self.reward(tokens.reward.unsqueeze(-1) * self.reward_scale)  # (B, K, d)
        if self.discrete:
            e_action = self.action(tokens.action.clamp(0, self.max_action))  # (B, K, d)
        else:
            e_action = self.action(self.normalise_action(tokens.action))  # (B, K, d)
        kind = tokens.kind.unsqueeze(-1)  # (B, K, 1)
        e = torch.where(kind == STATE, e_state, torch.where(kind == ACTION, e_action, e_reward))
        return e + self.timestep(tokens.timestep.clamp(0, self.max_timestep))
