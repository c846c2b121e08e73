"""The task prompt of an M3DT session: a few steps of a demonstration of the task (plain data).

A prompt is what tells one generalist policy which of its tasks to do. It also fixes the task's real
observation and action widths: a session's observations have the prompt's observation width and
its actions the prompt's action width; both are zero-padded to the config's shared widths inside the
model and the served action is cut back to the prompt's width.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

from .configuration import M3DTConfig


class PromptError(ValueError):
    """A prompt that does not fit a model; ``field`` names the offending part."""

    def __init__(self, field_name: str, message: str) -> None:
        super().__init__(f"{field_name}: {message}")
        self.field = field_name


@dataclass(frozen=True)
class TaskPrompt:
    """P steps of a demonstration: states, actions, returns-to-go and timesteps (unpadded widths)."""

    obs: Tensor  # (P, obs_width) float32
    actions: Tensor  # (P, act_width) float32
    returns_to_go: Tensor  # (P,) float32, raw return units
    timesteps: Tensor  # (P,) long, step index inside the demonstration's episode

    @property
    def obs_width(self) -> int:
        """The task's real observation width."""
        return int(self.obs.shape[1])

    @property
    def action_width(self) -> int:
        """The task's real action width (the served action has this many values)."""
        return int(self.actions.shape[1])

    def __len__(self) -> int:
        return int(self.obs.shape[0])

    @classmethod
    def from_lists(
        cls,
        obs: list[list[float]],
        actions: list[list[float]],
        returns_to_go: list[float],
        timesteps: list[int],
    ) -> TaskPrompt:
        """A prompt from plain lists (as a client sends it); shapes are checked by `check`."""
        return cls(
            obs=torch.tensor(obs, dtype=torch.float32),
            actions=torch.tensor(actions, dtype=torch.float32),
            returns_to_go=torch.tensor(returns_to_go, dtype=torch.float32),
            timesteps=torch.tensor(timesteps, dtype=torch.long),
        )

    def check(self, config: M3DTConfig) -> None:
        """Raise PromptError unless this prompt fits ``config`` (shapes, widths, finite values,
        timesteps in range)."""
        p = len(self)
        if self.obs.ndim != 2 or not 1 <= p <= config.prompt_steps:
            raise PromptError("prompt.obs", f"needs shape (P, width) with 1 <= P <= {config.prompt_steps}")
        if not 1 <= self.obs_width <= config.obs_dim:
            raise PromptError("prompt.obs", f"width must be in [1, {config.obs_dim}], got {self.obs_width}")
        if self.actions.ndim != 2 or self.actions.shape[0] != p:
            raise PromptError("prompt.actions", f"needs shape ({p}, width)")
        if not 1 <= self.action_width <= config.act_dim:
            raise PromptError(
                "prompt.actions", f"width must be in [1, {config.act_dim}], got {self.action_width}"
            )
        if self.returns_to_go.shape != (p,):
            raise PromptError("prompt.returns_to_go", f"needs shape ({p},)")
        if self.timesteps.shape != (p,) or self.timesteps.dtype != torch.long:
            raise PromptError("prompt.timesteps", f"needs {p} integers")
        for name in ("obs", "actions", "returns_to_go"):
            if not bool(torch.isfinite(getattr(self, name)).all()):
                raise PromptError(f"prompt.{name}", "must be finite")
        if p and not (int(self.timesteps.min()) >= 0 and int(self.timesteps.max()) <= config.max_timestep):
            raise PromptError("prompt.timesteps", f"must lie in [0, {config.max_timestep}]")


def check_target_return(value: float) -> float:
    """The target return as a float; raises PromptError when it is not a finite number."""
    value = float(value)
    if not math.isfinite(value):
        raise PromptError("target_return", "must be a finite number")
    return value
