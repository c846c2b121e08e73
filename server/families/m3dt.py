"""M3DT sessions: a task prompt and a target return per session, widths from the prompt.

A session names its task prompt at creation: one shipped with the checkpoint (``"task":
"reach-v3"``) or one the client sends (``"prompt": {"obs", "actions", "returns_to_go",
"timesteps"}``), and a target return. For a shipped task the target defaults to the card's
``targets[task]`` (what `t2mir train` writes), else to the largest return-to-go of the task's
shipped prompt; with a sent prompt it is required. The session's metadata stores ``{"m3dt":
{"task" | "prompt", "target_return"}}``: a task name, or a sent prompt of at most the model's
``prompt_steps`` rows of its padded widths, so the stored metadata stays small. Every act's
observation has the prompt's observation width, every answer the prompt's action width; the engine
computes the returns-to-go from the target return and the session's stored rewards.
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping
from pathlib import Path
from typing import Any

import torch

from server.errors import ApiError
from server.families.base import T2MIR_OPTIONS, refuse_options
from server.schemas import CreateSessionBody
from server.store import SessionMeta
from t2mir_model import (
    M3DT_FAMILY,
    ActionSpec,
    M3DTActRequest,
    M3DTConfig,
    PolicyEngine,
    PromptError,
    SessionHistory,
    TaskPrompt,
    load_prompts,
)

METADATA_KEY = "m3dt"
"""Key of the family's part of a session's stored metadata."""
TASKS_LISTED = 20
"""Most task names an ``unknown_task`` message lists."""


def default_target_returns(card: Mapping[str, Any], prompts: Mapping[str, TaskPrompt]) -> dict[str, float]:
    """Task name -> default target return: the card's ``targets`` entry, else the largest
    return-to-go of the task's shipped prompt (the demonstration's return from its first step)."""
    declared = card.get("targets")
    declared = declared if isinstance(declared, Mapping) else {}
    return {
        name: float(declared.get(name, float(prompt.returns_to_go.max()))) for name, prompt in prompts.items()
    }


class M3DTSessions:
    """The `SessionFamily` of an M3DT checkpoint: its config, shipped prompts and default targets."""

    name = M3DT_FAMILY

    def __init__(
        self, config: M3DTConfig, prompts: Mapping[str, TaskPrompt], target_returns: Mapping[str, float]
    ) -> None:
        self.config = config
        self.prompts = dict(prompts)
        self.target_returns = dict(target_returns)

    @classmethod
    def load(cls, directory: Path, config: M3DTConfig, card: Mapping[str, Any]) -> M3DTSessions:
        """The family of a checkpoint directory (reads its shipped prompts)."""
        prompts = load_prompts(directory)
        return cls(config, prompts, default_target_returns(card, prompts))

    # ------------------------------------------------------------------ create
    def create_metadata(self, body: CreateSessionBody) -> dict[str, Any]:
        """``{"m3dt": {...}}`` for a valid task or prompt and target return; raises ApiError
        (422 for a T2MIR option, both or neither of task and prompt, a prompt that does not fit
        the model, a missing target return; 404 for a task the checkpoint does not ship)."""
        refuse_options(body, T2MIR_OPTIONS, self.name)
        if body.task is not None and body.prompt is not None:
            raise ApiError(422, "invalid_field", "give either task or prompt, not both", field="prompt")
        if body.task is not None:
            if body.task not in self.prompts:
                raise ApiError(404, "unknown_task", self._unknown(body.task), field="task")
            target = self.target_returns[body.task] if body.target_return is None else body.target_return
            return {METADATA_KEY: {"task": body.task, "target_return": target}}
        if body.prompt is None:
            raise ApiError(
                422,
                "missing_field",
                "an M3DT session needs a task (a prompt shipped with the model) or a prompt",
                field="task",
            )
        prompt_data = body.prompt.model_dump()
        try:
            TaskPrompt.from_lists(**prompt_data).check(self.config)
        except PromptError as exc:
            raise ApiError(422, "invalid_field", str(exc), field=exc.field) from exc
        except ValueError as exc:  # ragged rows: torch cannot stack them
            raise ApiError(422, "invalid_field", f"prompt: {exc}", field="prompt") from exc
        if body.target_return is None:
            raise ApiError(
                422, "missing_field", "target_return is required with a sent prompt", field="target_return"
            )
        return {METADATA_KEY: {"prompt": prompt_data, "target_return": body.target_return}}

    def _unknown(self, task: str) -> str:
        if not self.prompts:
            return f"task {task!r}: this model ships no task prompts; send a prompt"
        names = sorted(self.prompts)
        listed = ", ".join(names[:TASKS_LISTED]) + (", ..." if len(names) > TASKS_LISTED else "")
        return f"task {task!r} is not shipped with this model ({len(names)} tasks: {listed})"

    # ------------------------------------------------------------------ acts
    @staticmethod
    def _settings(meta: SessionMeta) -> dict[str, Any]:
        return dict(meta.metadata[METADATA_KEY])

    def prompt(self, meta: SessionMeta) -> TaskPrompt:
        """The session's task prompt (shipped, or rebuilt from the stored one)."""
        settings = self._settings(meta)
        task = settings.get("task")
        if task is not None:
            return self.prompts[task]
        return TaskPrompt.from_lists(**settings["prompt"])

    def observation_dim(self, meta: SessionMeta) -> int:
        """The prompt's observation width."""
        return self.prompt(meta).obs_width

    def action_spec(self, meta: SessionMeta) -> ActionSpec:
        """Continuous actions in [-1, 1] of the prompt's action width."""
        return ActionSpec("continuous", dim=self.prompt(meta).action_width)

    def request(
        self, key: Hashable, history: SessionHistory, seed: int | None, meta: SessionMeta
    ) -> M3DTActRequest:
        """An `M3DTActRequest` with the session's prompt and target return."""
        target = float(self._settings(meta)["target_return"])
        return M3DTActRequest(key, history, seed, prompt=self.prompt(meta), target_return=target)

    # ------------------------------------------------------------------ descriptions
    def describe_session(self, meta: SessionMeta) -> dict[str, Any]:
        """Family, task (None for a sent prompt) and target return."""
        settings = self._settings(meta)
        return {
            "family": self.name,
            "task": settings.get("task"),
            "target_return": float(settings["target_return"]),
        }

    def describe_model(self) -> dict[str, Any]:
        """Family, experts, context sizes and the shipped tasks with their default target returns."""
        c = self.config
        return {
            "family": self.name,
            "n_experts": c.n_experts if c.moe else 0,
            "top_k": c.top_k,
            "context_steps": c.context_steps,
            "prompt_steps": c.prompt_steps,
            "action_dim": c.act_dim,
            "tasks": sorted(self.prompts),
            "target_returns": dict(sorted(self.target_returns.items())),
        }

    def warm_up(self, engine: PolicyEngine) -> None:
        """Two acts of a throw-away session on a shipped prompt (or a zero one of full width)."""
        c = self.config
        prompt = next(
            iter(self.prompts.values()),
            TaskPrompt(
                obs=torch.zeros(1, c.obs_dim),
                actions=torch.zeros(1, c.act_dim),
                returns_to_go=torch.zeros(1),
                timesteps=torch.zeros(1, dtype=torch.long),
            ),
        )
        history = SessionHistory()
        history.observe(torch.zeros(prompt.obs_width))
        key = ("__warmup__",)
        engine.act([M3DTActRequest(key, history, prompt=prompt, target_return=0.0)])
        if c.max_episode_steps > 1:
            history.observe(torch.zeros(prompt.obs_width), 0.0, torch.zeros(prompt.action_width))
            engine.act([M3DTActRequest(key, history, prompt=prompt, target_return=0.0)])
        engine.evict(key)
