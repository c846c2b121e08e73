"""Request and response bodies (pydantic): strict types, no silent coercion of strings or bools.

Numbers sent to the model must be finite and representable as float32 (the model's dtype), so
NaN, +-inf and values like 1e300 are refused with 422 before anything reaches the store.
"""

from __future__ import annotations

import math
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, PlainValidator, StrictBool, StrictInt
from pydantic_core import PydanticCustomError

from server.store.models import MAX_STEP, SESSION_ID_PATTERN
from t2mir_model import MAX_ACTION_NOISE

FLOAT32_MAX = 3.4028234663852886e38


class NumberError(ValueError):
    """A value that is not a finite float32 number: what is wrong, as a message template and the
    values it names."""

    def __init__(self, template: str, context: dict[str, str]) -> None:
        super().__init__(template.format(**context))
        self.template = template
        self.context = context


def finite_float32(value: Any, what: str) -> float:
    """``value`` (``what``, for the message) as a float: a number, not a bool, finite and within
    the float32 range; else raises `NumberError`."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise NumberError("{what} must be a number, got {kind}", {"what": what, "kind": type(value).__name__})
    try:
        out = float(value)
    except OverflowError:  # an integer literal beyond any float, e.g. 1 followed by 400 zeros
        out = math.inf if value > 0 else -math.inf
    if not math.isfinite(out):
        raise NumberError("{what} must be finite, got {value}", {"what": what, "value": repr(out)})
    if abs(out) > FLOAT32_MAX:
        raise NumberError("{what} is outside the float32 range: {value}", {"what": what, "value": repr(out)})
    return out


def _number(value: Any, what: str, code: str) -> float:
    try:
        return finite_float32(value, what)
    except NumberError as exc:
        raise PydanticCustomError(code, exc.template, exc.context) from None


def _observation(value: Any) -> list[float]:
    if isinstance(value, list):
        if not value:
            raise PydanticCustomError("invalid_observation", "observation must not be empty")
        return [_number(v, "every observation value", "invalid_observation") for v in value]
    return [_number(value, "observation", "invalid_observation")]


def _reward(value: Any) -> float | None:
    return None if value is None else _number(value, "reward", "invalid_reward")


def _finite(value: Any) -> float:
    return _number(value, "value", "invalid_field")


Observation = Annotated[list[float], PlainValidator(_observation, json_schema_input_type=float | list[float])]
Reward = Annotated[float | None, PlainValidator(_reward, json_schema_input_type=float | None)]
Finite = Annotated[float, PlainValidator(_finite, json_schema_input_type=float)]
"""A finite number within the float32 range (ints accepted, bools and strings refused)."""

MAX_PROMPT_STEPS = 64
"""Most steps a client-sent task prompt may have before the model's own check (its prompt_steps)."""
MAX_PROMPT_WIDTH = 512
"""Widest observation or action row of a client-sent prompt before the model's own check."""


class ActBody(BaseModel):
    """One act (HTTP body or WebSocket message)."""

    model_config = ConfigDict(extra="forbid")

    step: Annotated[StrictInt, Field(ge=0, lt=MAX_STEP)]
    """The session's next step (0, 1, 2, ... across episodes); a retried step is answered again."""
    observation: Observation
    """The current observation s_t (a number or a flat list of observation_dim numbers)."""
    reward: Reward = None
    """Reward of the previous action; required except at an episode's first step (where it must be absent)."""
    done: StrictBool = False
    """True: record ``reward``, close the episode, answer ``action: null``."""


class PromptBody(BaseModel):
    """A task prompt sent by the client (M3DT models): P steps of a demonstration of the task.

    ``obs`` is P rows of the task's observation width, ``actions`` P rows of its action width; the
    model checks P against its ``prompt_steps`` and the widths against its padded widths."""

    model_config = ConfigDict(extra="forbid")

    obs: Annotated[
        list[Annotated[list[Finite], Field(min_length=1, max_length=MAX_PROMPT_WIDTH)]],
        Field(min_length=1, max_length=MAX_PROMPT_STEPS),
    ]
    actions: Annotated[
        list[Annotated[list[Finite], Field(min_length=1, max_length=MAX_PROMPT_WIDTH)]],
        Field(min_length=1, max_length=MAX_PROMPT_STEPS),
    ]
    returns_to_go: Annotated[list[Finite], Field(min_length=1, max_length=MAX_PROMPT_STEPS)]
    timesteps: Annotated[
        list[Annotated[StrictInt, Field(ge=0)]], Field(min_length=1, max_length=MAX_PROMPT_STEPS)
    ]


class CreateSessionBody(BaseModel):
    """Body of ``POST /sessions``."""

    model_config = ConfigDict(extra="forbid")

    model: Annotated[str, Field(min_length=1, max_length=200)] | None = None
    """Model name (optional when one model is loaded); the session uses its current version."""
    session_id: Annotated[str, Field(pattern=f"^{SESSION_ID_PATTERN.pattern}$")] | None = None
    """Client-chosen id (1-128 of [A-Za-z0-9_.:-]); a random one when absent."""
    metadata: dict[str, Any] = Field(default_factory=dict)
    """Free JSON object stored with the session."""
    sampling: Literal["sample", "greedy"] | None = None
    """Discrete actions: 'sample' (default; seeded by session id and step) or 'greedy' (argmax)."""
    action_noise: Annotated[float, Field(ge=0.0, le=MAX_ACTION_NOISE, allow_inf_nan=False)] | None = None
    """Continuous actions: Gaussian exploration noise in half-ranges of the action box, seeded by
    session id and step (default: the noise the model's card was measured with, else 0)."""
    task: Annotated[str, Field(min_length=1, max_length=200)] | None = None
    """M3DT models: the task whose prompt, shipped with the checkpoint, the session uses."""
    prompt: PromptBody | None = None
    """M3DT models: a task prompt sent instead of ``task``."""
    target_return: Finite | None = None
    """M3DT models: the return the session asks for (default for a shipped task: the checkpoint's;
    required with a sent prompt)."""


class ModelRef(BaseModel):
    """A model name and version."""

    name: str
    version: str


class Timings(BaseModel):
    """Where the time of one act went, in milliseconds.

    ``parse``: arrival to validated body; ``store_read`` / ``store_write``: session-store calls;
    ``queue_wait``: waiting for the engine; ``forward``: the engine call this act joined;
    ``handoff``: moving the request to the engine thread and the answer back to the event loop;
    ``total``: arrival to answer (also counts waiting behind an earlier act of the same session).
    """

    parse: float
    store_read: float
    queue_wait: float
    forward: float
    handoff: float
    store_write: float
    total: float


class ActResponse(BaseModel):
    """Answer to one act."""

    session_id: str
    step: int
    episode: int
    action: int | list[float] | None
    episode_return: float | None = None
    """Only on ``done``: the closed episode's return."""
    timings: Timings


class SessionInfo(BaseModel):
    """A session as ``POST /sessions`` and ``GET /sessions/{id}`` describe it."""

    session_id: str
    model: ModelRef
    backbone: str
    variant: str | None
    env_id: str | None
    observation_dim: int | None
    action: dict[str, Any] | None
    max_episode_steps: int | None
    """The five fields above are None when the session's model version is not loaded here."""
    sampling: str
    action_noise: float
    """Exploration noise on continuous actions (0 for discrete models and deterministic sessions)."""
    step: int
    episode: int
    episode_steps: int
    episode_return: float
    returns: list[float]
    metadata: dict[str, Any]
    created_at: float
    family: str = "t2mir"
    """The model family: 't2mir' or 'm3dt'."""
    task: str | None = None
    """M3DT: the shipped task prompt the session uses (None: a prompt sent by the client)."""
    target_return: float | None = None
    """M3DT: the session's target return (its returns-to-go are this minus the rewards so far)."""
