"""Plain data objects shared by the session stores, the engine and the API, and the rules that
change them.

Everything here is JSON-serialisable through ``to_dict`` / ``from_dict``; both stores normalise
records the same way (`normalize_record`). `state_after_append` is what an append does to a
session and `retain` which closed episodes it keeps: the in-process store, the server's history
mirror and the benchmark's client all use these, and the Redis store's Lua script does the same,
so a state loaded from Redis equals the state the in-process store would hold for the same calls.
"""

from __future__ import annotations

import json
import math
import re
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, replace
from typing import Any, Literal, TypeVar, cast, get_args

from server import json_codec
from server.store.errors import InvalidRecord, InvalidSessionId

SESSION_ID_PATTERN = re.compile(r"[A-Za-z0-9_.:-]{1,128}")
"""Accepted session ids. ``{`` and ``}`` are excluded because every Redis key of a session uses
the id as its Cluster hash tag; whitespace, ``/`` and control characters are excluded for URLs."""

MAX_STEP = 2**53
"""Steps must stay below this (exact in a double, as Redis' Lua numbers are)."""

Backbone = Literal["ad", "dpt", "prompt-dt"]
RetentionMode = Literal["best", "last"]
AppendStatus = Literal["appended", "duplicate", "conflict", "missing"]
Action = int | list[float]
T = TypeVar("T")


def validate_session_id(session_id: object) -> str:
    """Return ``session_id`` if it matches `SESSION_ID_PATTERN`, else raise `InvalidSessionId`."""
    if not isinstance(session_id, str) or SESSION_ID_PATTERN.fullmatch(session_id) is None:
        raise InvalidSessionId(session_id)
    return session_id


def is_valid_session_id(session_id: object) -> bool:
    """True if ``session_id`` would pass `validate_session_id`."""
    return isinstance(session_id, str) and SESSION_ID_PATTERN.fullmatch(session_id) is not None


def as_backbone(value: str) -> Backbone:
    """``value`` as a `Backbone`; raises ValueError for a context rule sessions do not know."""
    for known in get_args(Backbone):
        if value == known:
            return cast(Backbone, known)
    raise ValueError(f"backbone must be one of {get_args(Backbone)}, got {value!r}")


def as_retention_mode(value: str) -> RetentionMode:
    """``value`` as a `RetentionMode`; raises ValueError for another mode."""
    for known in get_args(RetentionMode):
        if value == known:
            return cast(RetentionMode, known)
    raise ValueError(f"retention mode must be one of {get_args(RetentionMode)}, got {value!r}")


def dumps_json(value: Any, field_name: str) -> str:
    """Compact JSON of ``value``; raise `InvalidRecord` for NaN/inf, non-JSON types, nesting
    deeper than Python can encode, or strings that are not valid Unicode (lone surrogates)."""
    try:
        text = json.dumps(value, separators=(",", ":"), allow_nan=False)
    except (TypeError, ValueError, RecursionError) as exc:
        raise InvalidRecord(f"{field_name} is not finite JSON: {exc}", field=field_name) from exc
    if "\\ud" in text and _has_lone_surrogate(value):
        raise InvalidRecord(
            f"{field_name} holds a lone UTF-16 surrogate (not valid Unicode)", field=field_name
        )
    return text


def encode_json(value: Any, field_name: str) -> str:
    """`dumps_json` through `server.json_codec.dumps` (orjson where it agrees): the same refusals,
    a text that may differ in form but never in value. For the records and responses of appends,
    whose text nobody measures (`dumps_json` stays the measure of metadata size)."""
    try:
        text = json_codec.dumps(value).decode()
    except (TypeError, ValueError, RecursionError) as exc:
        raise InvalidRecord(f"{field_name} is not finite JSON: {exc}", field=field_name) from exc
    if "\\ud" in text and _has_lone_surrogate(value):
        raise InvalidRecord(
            f"{field_name} holds a lone UTF-16 surrogate (not valid Unicode)", field=field_name
        )
    return text


def _has_lone_surrogate(value: Any) -> bool:
    """True if a string in ``value`` (keys included) cannot be encoded as UTF-8."""
    try:
        json.dumps(value, ensure_ascii=False).encode("utf-8")
    except UnicodeEncodeError:
        return True
    return False


@dataclass(frozen=True)
class Retention:
    """Which closed episodes a session keeps.

    ``best``: the ``count`` episodes with the highest return (ties: the later episode wins) - AD.
    ``last``: the last ``count`` episodes - DPT.
    """

    mode: RetentionMode
    count: int

    def __post_init__(self) -> None:
        as_retention_mode(self.mode)
        if isinstance(self.count, bool) or not isinstance(self.count, int) or self.count < 0:
            raise ValueError(f"retention count must be an int >= 0, got {self.count!r}")

    @classmethod
    def for_backbone(cls, backbone: str, context_episodes: int) -> Retention:
        """What a session of a model keeps: AD the ``context_episodes - 1`` best episodes (its
        context holds them and the open one), DPT the last one."""
        if backbone == "ad":
            return cls("best", context_episodes - 1)
        return cls("last", 1)


def retain(items: Sequence[T], returns: Sequence[float], retention: Retention) -> list[T]:
    """The closed episodes a session keeps under ``retention``, in index order.

    ``items`` stand for the closed episodes in index order (store records, engine tensors, client
    lists: anything), ``returns`` are their float64 returns. The Redis store applies the same rule
    in Lua (`server.store.lua.APPEND`); the store contract tests hold the two equal.
    """
    if len(items) != len(returns):
        raise ValueError(f"{len(items)} episodes but {len(returns)} returns")
    if retention.count == 0:
        return []
    if retention.mode == "last":
        return list(items[-retention.count :])
    ranked = sorted(range(len(items)), key=lambda i: (returns[i], i))  # worst first; ties: earlier first
    keep = set(ranked[-retention.count :])
    return [item for i, item in enumerate(items) if i in keep]


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


@dataclass(frozen=True)
class AppendRequest:
    """One append of `SessionStore.append_many`: the arguments of one `SessionStore.append`."""

    session_id: str
    record: StepRecord
    response: dict[str, Any]
    created_at: float | None = None


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


def episode_return_after(meta: SessionMeta, reward: float | None) -> float:
    """The open episode's return once a record with ``reward`` joins it (float64, in step order)."""
    return meta.episode_return + (reward if reward is not None else 0.0)


def meta_after_append(meta: SessionMeta, record: StepRecord, response: dict[str, Any]) -> SessionMeta:
    """The metadata after appending ``record`` (answered with ``response``) to a session whose
    metadata was ``meta``: what an "appended" outcome implies, without reading the store back.

    Step counters move on, the reward joins the episode return; a ``done`` record closes the
    episode (its return joins ``returns``, the next episode opens). Raises `InvalidRecord` if the
    episode return overflows (the stores refuse such a record).
    """
    ret = episode_return_after(meta, record.reward)
    if not math.isfinite(ret):
        raise InvalidRecord("episode return overflowed to a non-finite value", field="reward")
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


def state_after_append(state: SessionState, record: StepRecord, response: dict[str, Any]) -> SessionState:
    """The state after appending ``record`` (normalised, at the session's next step) with
    ``response``: `meta_after_append`, and the record joins the open episode; a ``done`` record
    closes it into ``episodes``, which keep what `retain` keeps. The Redis store's Lua script
    (`server.store.lua.APPEND`) does the same; the store contract tests hold the two equal.

    Shares the unchanged episodes and records with ``state`` and never mutates it.
    """
    meta = meta_after_append(state.meta, record, response)
    if not record.done:
        return SessionState(meta, state.episodes, [*state.current, record])
    closed = Episode(state.meta.episode, meta.returns[-1], [*state.current, record])
    episodes = [*state.episodes, closed]
    return SessionState(meta, retain(episodes, [e.ret for e in episodes], meta.retention), [])
