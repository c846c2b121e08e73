"""`SessionFamily`: what serving a session means for one model family, and what families share.

The act flow, the session service and the registry are the same for every family; where they
differ they ask the loaded model's `SessionFamily`:

- `SessionFamily.create_metadata`: check the family's create options (refusing the other family's
  options with 422 ``unsupported_option``) and return what the session stores under its metadata;
- `SessionFamily.observation_dim` / `SessionFamily.action_spec`: the widths one session's acts use
  (T2MIR: the model's; M3DT: its task prompt's);
- `SessionFamily.request`: the engine request of one act (T2MIR: `ActRequest`; M3DT:
  `M3DTActRequest` with the session's prompt and target return);
- `SessionFamily.describe_session` / `SessionFamily.describe_model`: fields added to
  ``GET /sessions/{id}`` and ``GET /models``;
- `SessionFamily.warm_up`: a throw-away act so the first real one is not slow.

"""

from __future__ import annotations

from collections.abc import Hashable
from typing import Any, Protocol

from server.errors import ApiError
from server.schemas import CreateSessionBody
from server.store import SessionMeta
from t2mir_model import ActionSpec, ActRequest, PolicyEngine, SessionHistory


class SessionFamily(Protocol):
    """How sessions of one loaded model differ by model family (see the module docstring)."""

    @property
    def name(self) -> str:
        """'t2mir' or 'm3dt'."""
        ...

    def create_metadata(self, body: CreateSessionBody) -> dict[str, Any]:
        """The family's part of a new session's stored metadata; raises ApiError for bad options."""
        ...

    def observation_dim(self, meta: SessionMeta) -> int:
        """Values every observation of the session has."""
        ...

    def action_spec(self, meta: SessionMeta) -> ActionSpec:
        """The action space of the session's answers."""
        ...

    def request(
        self, key: Hashable, history: SessionHistory, seed: int | None, meta: SessionMeta
    ) -> ActRequest:
        """The engine request of one act of the session."""
        ...

    def describe_session(self, meta: SessionMeta) -> dict[str, Any]:
        """Fields of ``GET /sessions/{id}`` that depend on the family."""
        ...

    def describe_model(self) -> dict[str, Any]:
        """Fields of ``GET /models`` that depend on the family."""
        ...

    def warm_up(self, engine: PolicyEngine) -> None:
        """Worker thread: throw-away acts so the first real act is not slow (nothing kept)."""
        ...


def refuse_options(body: CreateSessionBody, names: tuple[str, ...], family: str) -> None:
    """422 ``unsupported_option`` for the first of ``names`` that ``body`` sets."""
    for name in names:
        if getattr(body, name) is not None:
            raise ApiError(
                422,
                "unsupported_option",
                f"{name} does not apply to {family.upper()} models",
                field=name,
            )


M3DT_OPTIONS = ("task", "prompt", "target_return")
"""Create options only M3DT models take."""
T2MIR_OPTIONS = ("sampling",)
"""Create options only T2MIR models take (M3DT actions are the tanh head's output plus
``action_noise``)."""
