"""Wire-level pieces shared by the HTTP and WebSocket clients: request bodies and answer objects.

`act_body` turns Python/numpy inputs into the JSON act body (observation -> float or list of
floats, step -> int, reward -> float) and refuses what the server would refuse anyway (NaN/inf,
negative steps, ``done`` without a reward) before anything is sent. The answer dataclasses keep the
decoded JSON in ``raw`` so fields added by newer servers are never lost.
"""

from __future__ import annotations

import json
import math
import operator
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from clients.errors import InvalidRequest

Action = int | float | list[float]
"""An action as the server sends it: int (discrete) or list of floats (continuous)."""


@dataclass(frozen=True)
class ModelRef:
    """Which model (and version) a session runs on."""

    name: str
    version: str

    @classmethod
    def from_dict(cls, data: Any) -> ModelRef:
        if isinstance(data, dict):
            return cls(str(data.get("name", "")), str(data.get("version", "")))
        return cls(str(data or ""), "")


@dataclass(frozen=True)
class ActionSpec:
    """The model's action space: ``discrete`` with ``n`` actions, or ``continuous`` of ``dim``."""

    kind: str
    n: int | None = None
    dim: int | None = None
    low: tuple[float, ...] | None = None
    high: tuple[float, ...] | None = None

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ActionSpec:
        kind = str(data.get("kind", ""))
        low, high = data.get("low"), data.get("high")
        return cls(
            kind=kind,
            n=int(data["n"]) if data.get("n") is not None else None,
            dim=int(data["dim"]) if data.get("dim") is not None else None,
            low=tuple(float(v) for v in low) if low is not None else None,
            high=tuple(float(v) for v in high) if high is not None else None,
        )


@dataclass(frozen=True)
class SessionInfo:
    """Answer of ``POST /sessions``. ``observation_dim`` / ``action`` are None if the server
    does not declare them (then nothing can be checked against an env)."""

    session_id: str
    model: ModelRef
    backbone: str
    observation_dim: int | None
    action: ActionSpec | None
    env_id: str | None = None
    """The environment id the model was trained on, when the server says."""
    raw: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> SessionInfo:
        dim, action, env_id = data.get("observation_dim"), data.get("action"), data.get("env_id")
        return cls(
            session_id=str(data["session_id"]),
            model=ModelRef.from_dict(data.get("model")),
            backbone=str(data.get("backbone") or ""),
            observation_dim=int(dim) if dim is not None else None,
            action=ActionSpec.from_dict(action) if isinstance(action, dict) else None,
            env_id=str(env_id) if env_id else None,
            raw=data,
        )


@dataclass(frozen=True)
class SessionState:
    """Answer of ``GET /sessions/{id}``: the next step, episode index and closed-episode returns."""

    session_id: str
    step: int
    episode: int
    returns: list[float]
    model: ModelRef
    raw: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> SessionState:
        return cls(
            session_id=str(data["session_id"]),
            step=int(data.get("step", 0)),
            episode=int(data.get("episode", 0)),
            returns=[float(r) for r in data.get("returns") or []],
            model=ModelRef.from_dict(data.get("model")),
            raw=data,
        )


@dataclass(frozen=True)
class ActResult:
    """Answer of one act: ``action`` is an int (discrete), a list of floats, or None after ``done``."""

    session_id: str
    step: int
    episode: int
    action: Action | None
    timings: dict[str, float]
    episode_return: float | None = None
    """The closed episode's return, on the answer to a ``done`` act (if the server sends it)."""
    raw: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)

    @property
    def done(self) -> bool:
        """True for the answer to a ``done`` act (the episode is closed, no action)."""
        return self.action is None

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ActResult:
        action = data.get("action")
        if isinstance(action, list):
            action = [float(a) for a in action]
        elif isinstance(action, float):
            action = int(action) if action.is_integer() else action
        return cls(
            session_id=str(data.get("session_id", "")),
            step=int(data.get("step", -1)),
            episode=int(data.get("episode", 0)),
            action=action,
            timings={str(k): float(v) for k, v in (data.get("timings") or {}).items()},
            episode_return=float(ret) if (ret := data.get("episode_return")) is not None else None,
            raw=data,
        )


def _local_error(message: str, field_name: str) -> InvalidRequest:
    return InvalidRequest(message, code="invalid_request", field=field_name)


def encode_step(step: Any) -> int:
    """``step`` as a Python int (numpy integers accepted; bools, floats and negatives refused)."""
    if isinstance(step, bool | np.bool_):
        raise _local_error(f"step must be an integer, got {step!r}", "step")
    try:
        value = operator.index(step)
    except TypeError:
        raise _local_error(f"step must be an integer, got {step!r}", "step") from None
    if value < 0:
        raise _local_error(f"step must be >= 0, got {value}", "step")
    return value


def encode_observation(observation: Any) -> float | list[float]:
    """A scalar observation as a float, anything array-like as a flat list of floats."""
    try:
        array = np.asarray(observation, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise _local_error(f"observation is not numeric: {exc}", "observation") from None
    if not np.all(np.isfinite(array)):
        raise _local_error("observation contains NaN or inf", "observation")
    if array.ndim == 0:
        return float(array)
    if array.size == 0:
        raise _local_error("observation is empty", "observation")
    return array.ravel().tolist()


def encode_reward(reward: Any) -> float:
    """A finite reward as a float (numpy scalars and one-element arrays accepted)."""
    try:
        array = np.asarray(reward, dtype=np.float64)
    except (TypeError, ValueError):
        raise _local_error(f"reward must be a number, got {reward!r}", "reward") from None
    if array.size != 1:
        raise _local_error(f"reward must be a single number, got shape {array.shape}", "reward")
    value = float(array.reshape(()))
    if not math.isfinite(value):
        raise _local_error(f"reward must be finite, got {value}", "reward")
    return value


def act_body(step: Any, observation: Any, reward: Any = None, done: bool = False) -> dict[str, Any]:
    """The JSON body of one act (see the act protocol in DESIGN.md)."""
    body: dict[str, Any] = {"step": encode_step(step), "observation": encode_observation(observation)}
    if reward is not None:
        body["reward"] = encode_reward(reward)
    if done:
        if reward is None:
            raise _local_error("the done act must carry the last reward", "reward")
        body["done"] = True
    return body


PROMPT_FIELDS = ("obs", "actions", "returns_to_go", "timesteps")
"""The parts of an M3DT task prompt: P observation rows, P action rows, P returns-to-go, P timesteps."""


def encode_prompt(prompt: Any) -> dict[str, Any]:
    """An M3DT task prompt (a mapping of `PROMPT_FIELDS` to lists or numpy arrays) as JSON lists;
    the shapes are the server's to check, NaN/inf are refused here."""
    if not hasattr(prompt, "keys") or set(prompt.keys()) != set(PROMPT_FIELDS):
        raise _local_error(
            f"prompt must be a mapping with exactly the keys {', '.join(PROMPT_FIELDS)}", "prompt"
        )
    out: dict[str, Any] = {}
    for name in PROMPT_FIELDS:
        try:
            array = np.asarray(prompt[name], dtype=np.int64 if name == "timesteps" else np.float64)
        except (TypeError, ValueError) as exc:
            raise _local_error(f"prompt.{name} is not numeric: {exc}", f"prompt.{name}") from None
        if array.dtype.kind == "f" and not np.all(np.isfinite(array)):
            raise _local_error(f"prompt.{name} contains NaN or inf", f"prompt.{name}")
        out[name] = array.tolist()
    return out


def create_body(
    model: str | None = None,
    session_id: str | None = None,
    metadata: dict[str, Any] | None = None,
    sampling: str | None = None,
    action_noise: float | None = None,
    task: str | None = None,
    prompt: Any = None,
    target_return: float | None = None,
) -> dict[str, Any]:
    """The JSON body of ``POST /sessions``: the options that are not None (see `create_session`)."""
    if sampling is not None and sampling not in ("sample", "greedy"):
        raise ValueError(f"sampling must be 'sample' or 'greedy', got {sampling!r}")
    if action_noise is not None:
        noise = float(action_noise)
        if not math.isfinite(noise) or noise < 0:
            raise _local_error(
                f"action_noise must be a finite number >= 0, got {action_noise!r}", "action_noise"
            )
        action_noise = noise
    if target_return is not None:
        target = float(target_return)
        if not math.isfinite(target):
            raise _local_error(
                f"target_return must be a finite number, got {target_return!r}", "target_return"
            )
        target_return = target
    options = {
        "model": model,
        "session_id": session_id,
        "metadata": metadata,
        "sampling": sampling,
        "action_noise": action_noise,
        "task": task,
        "prompt": encode_prompt(prompt) if prompt is not None else None,
        "target_return": target_return,
    }
    return {key: value for key, value in options.items() if value is not None}


def dumps(body: Any) -> bytes:
    """Compact JSON bytes; NaN/inf are refused (they are not JSON)."""
    return json.dumps(body, separators=(",", ":"), allow_nan=False).encode()
