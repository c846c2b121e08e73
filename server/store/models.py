"""Plain data objects shared by the session stores, the engine and the API.

Everything here is JSON-serialisable through ``to_dict`` / ``from_dict``; both stores normalise
records the same way (`normalize_record`), so a state loaded from Redis equals the state the
in-process store would hold for the same calls.
"""

from __future__ import annotations

import json
import math
import re
import time
from dataclasses import asdict, dataclass, field, replace
from typing import Any, Literal

from server.store.errors import InvalidRecord, InvalidSessionId

SESSION_ID_PATTERN = re.compile(r"[A-Za-z0-9_.:-]{1,128}")
"""Accepted session ids. ``{`` and ``}`` are excluded because every Redis key of a session uses
the id as its Cluster hash tag; whitespace, ``/`` and control characters are excluded for URLs."""

MAX_STEP = 2**53
"""Steps must stay below this (exact in a double, as Redis' Lua numbers are)."""

Backbone = Literal["ad", "dpt"]
RetentionMode = Literal["best", "last"]
AppendStatus = Literal["appended", "duplicate", "conflict", "missing"]
Action = int | list[float]


def validate_session_id(session_id: object) -> str:
    """Return ``session_id`` if it matches `SESSION_ID_PATTERN`, else raise `InvalidSessionId`."""
    if not isinstance(session_id, str) or SESSION_ID_PATTERN.fullmatch(session_id) is None:
        raise InvalidSessionId(session_id)
    return session_id


def is_valid_session_id(session_id: object) -> bool:
    """True if ``session_id`` would pass `validate_session_id`."""
    return isinstance(session_id, str) and SESSION_ID_PATTERN.fullmatch(session_id) is not None


def dumps_json(value: Any, field_name: str) -> str:
    """Compact JSON of ``value``; raise `InvalidRecord` for NaN/inf or non-JSON types."""
    try:
        return json.dumps(value, separators=(",", ":"), allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise InvalidRecord(f"{field_name} is not finite JSON: {exc}", field=field_name) from exc


@dataclass(frozen=True)
class Retention:
    """Which closed episodes a session keeps.

    ``best``: the ``count`` episodes with the highest return (ties: the later episode wins) - AD.
    ``last``: the last ``count`` episodes - DPT.
    """

    mode: RetentionMode
    count: int

    def __post_init__(self) -> None:
        if self.mode not in ("best", "last"):
            raise ValueError(f"retention mode must be 'best' or 'last', got {self.mode!r}")
        if isinstance(self.count, bool) or not isinstance(self.count, int) or self.count < 0:
            raise ValueError(f"retention count must be an int >= 0, got {self.count!r}")


@dataclass
class SessionMeta:
    """A session's identity (set by the caller) and progress (maintained by the store)."""

    session_id: str
    owner: str
    model: str
    model_version: str
    backbone: Backbone
    retention: Retention
    metadata: dict[str, Any] = field(default_factory=dict)
    created_at: float = field(default_factory=time.time)
    next_step: int = 0
    episode: int = 0
    episode_steps: int = 0
    episode_return: float = 0.0
    last_step: int | None = None
    last_response: dict[str, Any] | None = None
    returns: list[float] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict (``retention`` as a nested dict)."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> SessionMeta:
        """Inverse of `to_dict`."""
        kwargs = dict(data)
        retention = kwargs.pop("retention")
        if not isinstance(retention, Retention):
            retention = Retention(**retention)
        return cls(retention=retention, **kwargs)


def meta_after_append(meta: SessionMeta, record: StepRecord, response: dict[str, Any]) -> SessionMeta:
    """The metadata a store holds after appending ``record`` (with ``response``) to a session whose
    metadata was ``meta``: what an "appended" outcome implies, without reading the store back."""
    ret = meta.episode_return + (record.reward if record.reward is not None else 0.0)
    common: dict[str, Any] = {
        "next_step": record.step + 1,
        "last_step": record.step,
        "last_response": response,
    }
    if record.done:
        return replace(
            meta,
            episode=meta.episode + 1,
            episode_steps=0,
            episode_return=0.0,
            returns=[*meta.returns, ret],
            **common,
        )
    return replace(meta, episode_steps=meta.episode_steps + 1, episode_return=ret, **common)


@dataclass
class StepRecord:
    """One act of a session: the observation, the reward of the previous action, the action."""

    step: int
    obs: list[float]
    reward: float | None
    action: Action | None
    done: bool

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict."""
        return {
            "step": self.step,
            "obs": self.obs,
            "reward": self.reward,
            "action": self.action,
            "done": self.done,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> StepRecord:
        """Inverse of `to_dict`."""
        return cls(data["step"], data["obs"], data["reward"], data["action"], data["done"])

    def copy(self) -> StepRecord:
        """A copy that shares no mutable list with this record."""
        action = list(self.action) if isinstance(self.action, list) else self.action
        return StepRecord(self.step, list(self.obs), self.reward, action, self.done)


@dataclass
class Episode:
    """A closed episode: its index in the session, its return and its records."""

    index: int
    ret: float
    records: list[StepRecord]

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict."""
        return {"index": self.index, "ret": self.ret, "records": [r.to_dict() for r in self.records]}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Episode:
        """Inverse of `to_dict`."""
        return cls(int(data["index"]), float(data["ret"]), [StepRecord.from_dict(r) for r in data["records"]])


@dataclass
class SessionState:
    """Everything the engine needs to rebuild a session's context."""

    meta: SessionMeta
    episodes: list[Episode]
    current: list[StepRecord]

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict."""
        return {
            "meta": self.meta.to_dict(),
            "episodes": [e.to_dict() for e in self.episodes],
            "current": [r.to_dict() for r in self.current],
        }


@dataclass
class AppendOutcome:
    """Result of `SessionStore.append`.

    ``response``: for "duplicate", the response stored with that step. ``next_step``: for
    "conflict", the step the store expects next.
    """

    status: AppendStatus
    response: dict[str, Any] | None = None
    next_step: int | None = None


def _finite_float(value: object, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise InvalidRecord(f"{name} must be a number, got {type(value).__name__}", field=name)
    out = float(value)
    if not math.isfinite(out):
        raise InvalidRecord(f"{name} must be finite, got {out!r}", field=name)
    return out


def normalize_record(record: StepRecord) -> StepRecord:
    """Validate ``record`` and return a fresh copy with canonical types.

    obs -> list of finite floats, reward -> finite float or None, action -> int, list of finite
    floats or None, done -> bool. Numpy scalars are accepted (anything int/float-like with a
    Python number type is converted). Raises `InvalidRecord`.
    """
    step = _py(record.step)
    if isinstance(step, bool) or not isinstance(step, int) or not 0 <= step < MAX_STEP:
        raise InvalidRecord(f"step must be an int in [0, 2**53), got {step!r}", field="step")
    try:
        obs = [_finite_float(_py(x), "obs") for x in record.obs]
    except TypeError as exc:
        raise InvalidRecord("obs must be a list of numbers", field="obs") from exc
    reward = None if record.reward is None else _finite_float(_py(record.reward), "reward")
    action: Action | None
    raw = _py(record.action)
    if raw is None:
        action = None
    elif isinstance(raw, int) and not isinstance(raw, bool):
        action = raw
    elif isinstance(raw, list | tuple) or hasattr(raw, "tolist"):
        seq = raw.tolist() if hasattr(raw, "tolist") else raw
        action = [_finite_float(_py(x), "action") for x in seq]
    else:
        raise InvalidRecord(f"action must be an int, a list of floats or None, got {raw!r}", field="action")
    if not isinstance(_py(record.done), bool):
        raise InvalidRecord(f"done must be a bool, got {record.done!r}", field="done")
    return StepRecord(int(step), obs, reward, action, bool(_py(record.done)))


def _py(value: Any) -> Any:
    """Unwrap a numpy scalar (or 0-d array) into the Python number it holds."""
    if hasattr(value, "item") and getattr(value, "ndim", 1) == 0:
        return value.item()
    return value


def apply_retention(episodes: list[Episode], retention: Retention) -> list[Episode]:
    """Episodes kept by ``retention`` (input ordered by index; output ordered by index)."""
    if retention.count == 0:
        return []
    if retention.mode == "last":
        return episodes[-retention.count :]
    ranked = sorted(episodes, key=lambda e: (e.ret, e.index))  # worst first; ties: earlier first
    keep = {e.index for e in ranked[-retention.count :]}
    return [e for e in episodes if e.index in keep]
