"""T2MIR sessions: the model's own spaces, plain `ActRequest`s seeded per session and step."""

from __future__ import annotations

from collections.abc import Hashable
from typing import Any

import torch

from server.families.base import M3DT_OPTIONS, refuse_options
from server.schemas import CreateSessionBody
from server.store import SessionMeta
from t2mir_model import T2MIR_FAMILY, ActionSpec, ActRequest, PolicyEngine, SessionHistory, T2MIRConfig


class T2MIRSessions:
    """T2MIR sessions: the model's spaces, plain `ActRequest`s, the session's sampling seed."""

    name = T2MIR_FAMILY

    def __init__(self, config: T2MIRConfig) -> None:
        self.config = config

    def create_metadata(self, body: CreateSessionBody) -> dict[str, Any]:
        """Nothing of its own to store; refuses M3DT options."""
        refuse_options(body, M3DT_OPTIONS, self.name)
        return {}

    def observation_dim(self, meta: SessionMeta) -> int:
        """The model's observation width."""
        return self.config.observation.dim

    def action_spec(self, meta: SessionMeta) -> ActionSpec:
        """The model's action space."""
        return self.config.action

    def request(
        self, key: Hashable, history: SessionHistory, seed: int | None, meta: SessionMeta
    ) -> ActRequest:
        """A plain `ActRequest`."""
        return ActRequest(key, history, seed)

    def describe_session(self, meta: SessionMeta) -> dict[str, Any]:
        """The family name."""
        return {"family": self.name}

    def describe_model(self) -> dict[str, Any]:
        """The family name and, for AD, the context rule for unrewarded episodes."""
        if self.config.backbone != "ad":
            return {"family": self.name}
        return {"family": self.name, "unrewarded_context": self.config.unrewarded_context}

    def warm_up(self, engine: PolicyEngine) -> None:
        """A context rebuild and an incremental step of a throw-away session."""
        config = self.config
        history = SessionHistory()
        history.observe(torch.zeros(config.observation.dim))
        key = ("__warmup__",)
        engine.act([ActRequest(key, history)])
        action = config.action
        example = torch.zeros((), dtype=torch.long) if action.is_discrete else torch.zeros(action.width)
        if config.max_episode_steps > 1:
            history.observe(torch.zeros(config.observation.dim), 0.0, example)
            engine.act([ActRequest(key, history)])
        engine.evict(key)
