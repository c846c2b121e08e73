"""In-process mirrors of session histories, rebuilt from the store on a miss.

The store holds records: record i of an episode is (s_i, r_{i-1}, a_i) - its reward is the
reward of the *previous* action (None at i = 0) - and a closing ``done`` record carries the last
reward. The engine reads a `SessionHistory`: s_0..s_t, a_0..a_{t-1}, r_0..r_{t-1} of the open
episode plus closed episodes of (s_t, a_t, r_t) triples. `entry_from_state` converts the first
into the second; `advance` / `close` update a mirror step by step the same way, so both give
identical engine inputs. A mirror keeps only the closed episodes the store retains (the same
`retain` on the same float64 returns), so its memory is bounded by the model's context.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass, field

import torch
from torch import Tensor

from server.store import Retention, SessionMeta, SessionState, StepRecord, retain
from server.store.models import Action
from t2mir_model import Episode, SessionHistory


def obs_tensor(obs: list[float]) -> Tensor:
    """An observation as the engine wants it: (obs_dim,) float32."""
    return torch.tensor(obs, dtype=torch.float32)


def action_tensor(action: Action | None, discrete: bool) -> Tensor:
    """A stored action back as a tensor: () long (discrete) or (act_dim,) float32.

    Raises ValueError for a record without an action (an episode's ``done`` record) and for a
    list where the space is discrete."""
    if action is None:
        raise ValueError("the record has no action")
    if discrete:
        if isinstance(action, list):
            raise ValueError(f"a discrete action must be an int, got {action!r}")
        return torch.tensor(int(action), dtype=torch.long)
    return torch.tensor(action, dtype=torch.float32)


def _reward(record: StepRecord) -> float:
    """The reward a record carries; raises ValueError for an episode's first record (none yet)."""
    if record.reward is None:
        raise ValueError(f"the record of step {record.step} has no reward")
    return float(record.reward)


def action_value(action: Tensor) -> int | list[float]:
    """An engine action as JSON: int (discrete) or list of floats."""
    return int(action.item()) if action.ndim == 0 else [float(x) for x in action.tolist()]


@dataclass
class MirrorEntry:
    """A session's history as the engine reads it, plus what the next act needs."""

    history: SessionHistory
    returns: list[float] = field(default_factory=list)
    """float64 return of each episode in ``history.episodes`` (the store's ranking key)."""
    pending_action: Tensor | None = None
    """a_t answered at the open episode's last step (None before its first step)."""
    next_step: int = 0
    created_at: float = 0.0
    meta: SessionMeta | None = None
    """The store's metadata as of ``next_step`` (what this process last read or appended): lets
    the next act skip reading the store; the append, fenced on step and ``created_at``, finds out
    if another process moved the session on."""


def _copy(history: SessionHistory) -> SessionHistory:
    return SessionHistory(
        episode=history.episode,
        episodes=list(history.episodes),
        obs=list(history.obs),
        actions=list(history.actions),
        rewards=list(history.rewards),
    )


def observed(entry: MirrorEntry, obs: Tensor, reward: float | None) -> SessionHistory:
    """A copy of the entry's history with s_t (and r_{t-1}, a_{t-1}) appended; the entry is untouched."""
    history = _copy(entry.history)
    if history.obs:
        history.observe(obs, reward, entry.pending_action)
    else:
        history.observe(obs)
    return history


def advance(
    entry: MirrorEntry, history: SessionHistory, action: Tensor, step: int, meta: SessionMeta | None = None
) -> MirrorEntry:
    """The entry after an acknowledged act at ``step`` that answered ``action`` for ``history``;
    ``meta``: the store's metadata after that act (None: the next act reads it)."""
    return MirrorEntry(history, entry.returns, action, step + 1, entry.created_at, meta)


def close(
    entry: MirrorEntry,
    reward: float,
    ret: float,
    retention: Retention,
    step: int,
    meta: SessionMeta | None = None,
) -> MirrorEntry:
    """The entry after an acknowledged ``done`` record at ``step`` (episode return ``ret``);
    ``meta``: the store's metadata after it (None: the next act reads it)."""
    if entry.pending_action is None:
        raise ValueError("no open episode to close")
    history = _copy(entry.history)
    history.close(entry.pending_action, reward)
    returns = [*entry.returns, ret]
    history.episodes = retain(history.episodes, returns, retention)
    return MirrorEntry(history, retain(returns, returns, retention), None, step + 1, entry.created_at, meta)


def _episode(index: int, records: list[StepRecord], discrete: bool) -> Episode:
    """A closed episode from its records (the last one is the ``done`` record)."""
    steps = records[:-1]
    return Episode(
        index=index,
        obs=torch.stack([obs_tensor(r.obs) for r in steps]),
        actions=torch.stack([action_tensor(r.action, discrete) for r in steps]),
        rewards=torch.tensor([_reward(r) for r in records[1:]], dtype=torch.float32),
    )


def entry_from_state(state: SessionState, discrete: bool) -> MirrorEntry:
    """Rebuild a mirror from the store's state of a session."""
    meta = state.meta
    episodes = [_episode(e.index, e.records, discrete) for e in state.episodes]
    history = SessionHistory(episode=meta.episode, episodes=episodes)
    pending: Tensor | None = None
    for record in state.current:
        obs = obs_tensor(record.obs)
        if pending is None:
            history.observe(obs)
        else:
            history.observe(obs, record.reward, pending)
        pending = action_tensor(record.action, discrete)
    returns = [e.ret for e in state.episodes]
    return MirrorEntry(history, returns, pending, meta.next_step, meta.created_at, meta)


class HistoryMirror:
    """LRU map session id -> `MirrorEntry` (at most ``capacity`` sessions)."""

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self._entries: OrderedDict[str, MirrorEntry] = OrderedDict()

    def get(self, session_id: str) -> MirrorEntry | None:
        """The entry (marked recently used) or None."""
        entry = self._entries.get(session_id)
        if entry is not None:
            self._entries.move_to_end(session_id)
        return entry

    def put(self, session_id: str, entry: MirrorEntry) -> list[str]:
        """Store an entry; returns the session ids evicted to stay within capacity."""
        self._entries[session_id] = entry
        self._entries.move_to_end(session_id)
        evicted = []
        while len(self._entries) > self.capacity:
            evicted.append(self._entries.popitem(last=False)[0])
        return evicted

    def drop(self, session_id: str) -> None:
        """Forget a session."""
        self._entries.pop(session_id, None)

    def __len__(self) -> int:
        return len(self._entries)
