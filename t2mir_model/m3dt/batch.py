"""M3DT inputs: a task prompt plus a window of the last K steps, padded to shared widths.

Both the prompt and the window are right-aligned: the newest step sits at the last index and
missing steps at the front are masked. Observations and actions are zero-padded to the config's
widths; ``action_mask`` marks each row's real action dimensions (the loss and the served action
use only those).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, fields

import torch
import torch.nn.functional as F
from torch import Tensor

from ..history import SessionHistory
from .configuration import M3DTConfig
from .prompt import TaskPrompt


@dataclass
class M3DTBatch:
    """One forward's inputs (B rows, P prompt steps, K window steps)."""

    prompt_obs: Tensor  # (B, P, obs_dim) float32
    prompt_actions: Tensor  # (B, P, act_dim) float32
    prompt_rtg: Tensor  # (B, P) float32, raw return units
    prompt_timesteps: Tensor  # (B, P) long
    prompt_mask: Tensor  # (B, P) bool, True = real step
    obs: Tensor  # (B, K, obs_dim) float32
    actions: Tensor  # (B, K, act_dim) float32 (targets in training; the last step's is unused)
    rtg: Tensor  # (B, K) float32, raw return units
    timesteps: Tensor  # (B, K) long
    mask: Tensor  # (B, K) bool, True = real step
    action_mask: Tensor  # (B, act_dim) bool, True = the row's task uses this action dimension

    def to(self, device: torch.device | str) -> M3DTBatch:
        """The same batch on another device."""
        return M3DTBatch(**{f.name: getattr(self, f.name).to(device) for f in fields(self)})

    @property
    def size(self) -> int:
        """Rows B."""
        return int(self.obs.shape[0])


def pad_width(x: Tensor, width: int) -> Tensor:
    """Zero-pad the last dimension of x (..., w) to (..., width)."""
    return F.pad(x, (0, width - x.shape[-1]))


def pad_front(x: Tensor, length: int) -> Tensor:
    """Zero-pad the first dimension of x (n, ...) to (length, ...) at the front (right-aligned)."""
    if x.shape[0] >= length:
        return x[x.shape[0] - length :]
    return torch.cat([x.new_zeros((length - x.shape[0], *x.shape[1:])), x])


def step_mask(n: int, length: int) -> Tensor:
    """(length,) bool: the last min(n, length) entries True."""
    return torch.arange(length) >= length - min(n, length)


def _prompt_row(config: M3DTConfig, prompt: TaskPrompt) -> dict[str, Tensor]:
    p = config.prompt_steps
    return {
        "prompt_obs": pad_front(pad_width(prompt.obs.float(), config.obs_dim), p),
        "prompt_actions": pad_front(pad_width(prompt.actions.float(), config.act_dim), p),
        "prompt_rtg": pad_front(prompt.returns_to_go.float(), p),
        "prompt_timesteps": pad_front(prompt.timesteps.long(), p),
        "prompt_mask": step_mask(len(prompt), p),
        "action_mask": torch.arange(config.act_dim) < prompt.action_width,
    }


def window_row(
    config: M3DTConfig, history: SessionHistory, prompt: TaskPrompt, target_return: float
) -> dict[str, Tensor]:
    """One request's row: the open episode's last K steps up to the state s_t, with returns-to-go
    target_return - (rewards so far), the action slot of s_t zero."""
    k, t = config.context_steps, history.t
    if t < 0:
        raise ValueError("the session has no observation in its open episode")
    if t > config.max_timestep:
        raise ValueError(f"timestep {t} exceeds the model's max_timestep {config.max_timestep}")
    first = max(0, t + 1 - k)
    obs = torch.stack([o.float().reshape(-1) for o in history.obs[first:]])  # (n, w)
    if obs.shape[1] != prompt.obs_width:
        raise ValueError(f"observations have width {obs.shape[1]}, the prompt's task {prompt.obs_width}")
    taken = [a.float().reshape(-1) for a in history.actions[first:]]  # a_first .. a_{t-1}
    actions = torch.stack([*taken, torch.zeros(prompt.action_width)])  # (n, a)
    rewards = torch.tensor([0.0, *history.rewards], dtype=torch.float32).cumsum(
        0
    )  # (t + 1,): rewards before step i
    rtg = target_return - rewards[first : t + 1]  # (n,)
    return {
        "obs": pad_front(pad_width(obs, config.obs_dim), k),
        "actions": pad_front(pad_width(actions, config.act_dim), k),
        "rtg": pad_front(rtg, k),
        "timesteps": pad_front(torch.arange(first, t + 1), k),
        "mask": step_mask(t + 1 - first, k),
        **_prompt_row(config, prompt),
    }


def stack_rows(rows: Sequence[dict[str, Tensor]]) -> M3DTBatch:
    """Rows built by `window_row` (or the trainer) -> one batch."""
    return M3DTBatch(**{f.name: torch.stack([row[f.name] for row in rows]) for f in fields(M3DTBatch)})
