"""The act flow: one step of one session, from a parsed body to an acknowledged answer.

Per session, acts are serialised by an asyncio lock (FIFO) in this process; across replicas the
store's atomic append (step and creation-time check in one Lua script) decides. An act is one
pass of read -> check -> validate -> run -> append:

1. read (`ActService.read`): when this process answered the session's previous step and the act
   is for exactly its next step (same owner), the mirror stands in for the store: no round trip,
   and the read is *fenced*. Otherwise ``load`` (metadata and records, from which the mirror is
   rebuilt): not fenced.
2. check: unknown or another owner's -> 404; ``step`` equal to the last stored step -> the
   stored answer (idempotent retry); any other step than the next one -> 409 with
   ``expected_step``;
3. validate against the model (shape, reward rules, episode length) -> 422; a model version not
   loaded here -> 409;
4. run: ``done`` needs no forward; otherwise the engine picks a_t through the batcher, which
   refuses it under overload (503 ``overloaded`` with ``Retry-After``; see `server.batcher`);
5. append the record with the answer, fenced on the step and the session's creation time (through
   `server.append_coalescer`: the acts of one engine call share one store round trip); only
   "appended" commits the mirror. "duplicate" (another replica stored this step first) returns
   the stored answer; "conflict" -> 409; "missing" -> 404; store down -> 503. Whenever the engine
   ran but the store did not take its step, the engine slot is dropped.

A fenced read answers nothing but an appended step. Its metadata is the store's as of this
process's last append, which another process may have moved on since (or deleted and created
again), so a refusal at steps 2-3 and a "conflict" or "missing" at step 5 are decided again by one
more pass of the same flow without the mirror, from a read of the store (the first pass's
forward is wasted, its answer never sent): a stale mirror never stores a step.

Nothing is acknowledged before the store has it, and an error never changes the stored session.
The work runs in a task shielded from the caller's cancellation, so a client that disconnects
mid-act cannot leave the engine and the store out of step.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from server.batcher import BatcherClosed, Overloaded
from server.errors import ApiError
from server.mirror import MirrorEntry, action_value, advance, close, entry_from_state, obs_tensor, observed
from server.payload import decode_json, validate_body
from server.registry import LoadedModel
from server.schemas import ActBody, NumberError, finite_float32
from server.sessions import SessionDeps, action_noise_of, derive_seed, not_found, sampling_of
from server.store import (
    MAX_STEP,
    InvalidRecord,
    SessionMeta,
    SessionState,
    StepRecord,
    episode_return_after,
    meta_after_append,
)
from t2mir_model import explore

log = logging.getLogger("t2mir.server")


_ACT_FIELDS = frozenset(ActBody.model_fields)


@dataclass(frozen=True, slots=True)
class ActMessage:
    """One act as `ActBody` describes it: step, observation s_t, previous reward, done."""

    step: int
    observation: list[float]
    reward: float | None
    done: bool


def parse_act(data: Any) -> ActMessage:
    """A decoded act message (dict) -> `ActMessage`; raises ApiError 422.

    Accepts exactly what `ActBody` (the documented body) accepts, with the same values, without
    building a pydantic model per act: a plain check takes the bodies clients send (``step``,
    ``observation`` and optionally ``reward`` and ``done``, each of its exact JSON type; numbers by
    `server.schemas.finite_float32`, ``ActBody``'s own rule); a body it does not take goes to
    ``ActBody``, which accepts it or raises the 422 that words what is wrong.
    """
    if type(data) is dict and data.keys() <= _ACT_FIELDS:
        step, observation = data.get("step"), data.get("observation")
        reward, done = data.get("reward"), data.get("done", False)
        if type(step) is int and 0 <= step < MAX_STEP and type(done) is bool:
            try:
                values = (
                    [finite_float32(v, "") for v in observation]
                    if type(observation) is list
                    else [finite_float32(observation, "")]
                )
                if values:
                    return ActMessage(
                        step, values, None if reward is None else finite_float32(reward, ""), done
                    )
            except NumberError:
                pass  # ActBody words the error
    body = validate_body(ActBody, data)
    return ActMessage(body.step, body.observation, body.reward, body.done)


def parse_act_json(raw: bytes | str) -> ActMessage:
    """Decode and check a JSON act body; raises ApiError 400 / 422."""
    return parse_act(decode_json(raw))


def validate_act(body: ActMessage, meta: SessionMeta, model: LoadedModel) -> None:
    """Model- and episode-dependent checks; raises ApiError 422."""
    config = model.config
    dim = model.family.observation_dim(meta)
    if len(body.observation) != dim:
        raise ApiError(
            422,
            "invalid_observation",
            f"observation needs {dim} values, got {len(body.observation)}",
            field="observation",
        )
    if meta.episode_steps == 0:
        if body.reward is not None:
            raise ApiError(
                422, "invalid_reward", "no reward at an episode's first step (no action yet)", field="reward"
            )
        if body.done:
            raise ApiError(
                422, "invalid_field", "cannot close an episode before its first step", field="done"
            )
        return
    if body.reward is None:
        raise ApiError(
            422,
            "missing_field",
            "reward (of the previous action) is required after an episode's first step",
            field="reward",
        )
    if not body.done and meta.episode_steps >= config.max_episode_steps:
        raise ApiError(
            422,
            "episode_too_long",
            f"the episode already has {meta.episode_steps} steps, the model's max_episode_steps; send done=true",
            field="step",
        )


@dataclass(frozen=True)
class SessionRead:
    """A session as one act reads it (`ActService.read`)."""

    meta: SessionMeta | None
    """The session's metadata; None: unknown."""
    fenced: bool
    """True: this process's mirror stood in for the store, which may have moved on since; the
    act may only append (fenced on step and creation time), anything else is decided again from
    a read of the store."""
    entry: MirrorEntry | None = None
    """The mirror's entry (fenced reads)."""
    state: SessionState | None = None
    """The store's state (reads that are not fenced)."""

    def history(self, discrete: bool) -> MirrorEntry:
        """What the engine runs on: the mirror's entry, or one rebuilt from the store's records."""
        if self.entry is not None:
            return self.entry
        assert self.state is not None, "an unknown session has no history"
        return entry_from_state(self.state, discrete)


@dataclass(frozen=True)
class _Answer:
    """What a run produced: the record and response to append, and how the mirror moves on."""

    record: StepRecord
    response: dict[str, Any]
    ran_engine: bool
    """False for ``done`` (no forward): no engine slot ran ahead of the store."""
    mirror_after: Callable[[SessionMeta], MirrorEntry]
    """The mirror's entry once the store holds the record, given the metadata it then holds."""
    answered_at: float | None = None
    """perf_counter() when the engine's result was back on the event loop (None without a forward)."""


class ActService:
    """``POST /sessions/{id}/act`` and WebSocket acts."""

    def __init__(self, deps: SessionDeps) -> None:
        self.deps = deps
        self._tasks: set[asyncio.Task[dict[str, Any]]] = set()

    async def act(self, owner: str, session_id: str, body: ActMessage, t0: float) -> dict[str, Any]:
        """Answer one act (raises ApiError); survives cancellation of the caller."""
        task = asyncio.ensure_future(self._act(owner, session_id, body, t0))
        self._tasks.add(task)
        task.add_done_callback(self._done)
        return await asyncio.shield(task)

    def _done(self, task: asyncio.Task[dict[str, Any]]) -> None:
        self._tasks.discard(task)
        if not task.cancelled():
            task.exception()  # retrieved: a caller that went away must not produce warnings

    async def drain(self, timeout: float) -> None:
        """Wait for acts in progress (graceful shutdown)."""
        if self._tasks:
            await asyncio.wait(list(self._tasks), timeout=timeout)

    async def read(self, session_id: str, owner: str, step: int, use_mirror: bool = True) -> SessionRead:
        """The session as an act at ``step`` by ``owner`` needs it: the mirror's entry (fenced) when
        it can stand in for the store, else the store's state (one ``load``)."""
        entry = self.deps.mirror.get(session_id) if use_mirror else None
        if (
            entry is not None
            and entry.meta is not None
            and entry.meta.owner == owner
            and step == entry.next_step
        ):
            return SessionRead(entry.meta, fenced=True, entry=entry)
        state = await self.deps.timed("load", self.deps.store.load(session_id))
        return SessionRead(None if state is None else state.meta, fenced=False, state=state)

    async def _act(self, owner: str, session_id: str, body: ActMessage, t0: float) -> dict[str, Any]:
        timings = {
            "parse": (time.perf_counter() - t0) * 1000.0,
            "store_read": 0.0,
            "queue_wait": 0.0,
            "forward": 0.0,
            "handoff": 0.0,
            "store_write": 0.0,
        }
        async with self.deps.locks.hold(session_id):
            try:
                return await self._pass(owner, session_id, body, timings, t0, use_mirror=True)
            except _StaleMirror:
                timings.update(queue_wait=0.0, forward=0.0, handoff=0.0, store_write=0.0)
                return await self._pass(owner, session_id, body, timings, t0, use_mirror=False)

    async def _pass(
        self,
        owner: str,
        session_id: str,
        body: ActMessage,
        timings: dict[str, float],
        t0: float,
        use_mirror: bool,
    ) -> dict[str, Any]:
        """read -> check -> validate -> run -> append; raises `_StaleMirror` where a fenced read's
        answer could differ from the store's."""
        t_read = time.perf_counter()
        read = await self.read(session_id, owner, body.step, use_mirror)
        if not read.fenced:
            timings["store_read"] = (time.perf_counter() - t_read) * 1000.0
        try:
            stored = _check(read.meta, owner, session_id, body)
            if stored is not None:  # never for a fenced read: the mirror stands in for its next step only
                return _finish(stored, timings, t0)
            assert read.meta is not None
            meta = read.meta
            model = self._model(meta)
            validate_act(body, meta, model)
        except ApiError as exc:
            if read.fenced:
                raise _StaleMirror from exc
            raise
        model.last_used = time.monotonic()
        entry = read.history(model.discrete)
        answer = await self._run(session_id, body, meta, model, entry, timings, t0)
        return await self._append(session_id, meta, model, answer, read.fenced, timings, t0)

    def _model(self, meta: SessionMeta) -> LoadedModel:
        model = self.deps.registry.get(meta.model, meta.model_version)
        if model is None:
            raise ApiError(
                409,
                "model_unavailable",
                f"the session runs {meta.model} version {meta.model_version}, which is not loaded here",
            )
        return model

    async def _run(
        self,
        session_id: str,
        body: ActMessage,
        meta: SessionMeta,
        model: LoadedModel,
        entry: MirrorEntry,
        timings: dict[str, float],
        t0: float,
    ) -> _Answer:
        """The answer to the act: ``done`` closes the episode, anything else asks the engine (whose
        batcher may shed it: 503 ``overloaded``, nothing stored, engine and mirror untouched)."""
        response: dict[str, Any] = {"session_id": session_id, "step": body.step, "episode": meta.episode}
        if body.done:
            assert body.reward is not None  # the body check requires a reward with done
            reward = float(body.reward)
            response.update(action=None, episode_return=episode_return_after(meta, reward))
            record = StepRecord(body.step, body.observation, reward, None, True)
            return _Answer(
                record,
                response,
                ran_engine=False,
                mirror_after=lambda after: close(
                    entry, reward, after.returns[-1], meta.retention, body.step, after
                ),
            )
        history = observed(entry, obs_tensor(body.observation), body.reward)
        seed = None if sampling_of(meta) == "greedy" else derive_seed(session_id, body.step)
        t_submit = time.perf_counter()
        try:
            request = model.family.request((session_id, meta.created_at), history, seed, meta)
            served = await model.batcher.submit(request, arrived=t0)
        except Overloaded as exc:
            self.deps.metrics.act_shed(model.name)
            raise ApiError(
                503,
                "overloaded",
                f"the server is overloaded ({exc}); retry this step",
                headers={"Retry-After": str(max(1, math.ceil(exc.retry_after)))},
            ) from exc
        except BatcherClosed as exc:
            raise ApiError(
                503,
                "shutting_down",
                "this model version is shutting down; retry",
                headers={"Retry-After": "1"},
            ) from exc
        except Exception as exc:
            log.exception("engine failed", extra={"session": session_id, "step": body.step})
            self.deps.mirror.drop(session_id)
            raise ApiError(500, "engine_error", f"the engine failed: {type(exc).__name__}") from exc
        answered_at = time.perf_counter()
        timings["queue_wait"] = served.queue_wait * 1000.0
        timings["forward"] = served.forward * 1000.0
        waited = answered_at - t_submit - served.queue_wait - served.forward
        timings["handoff"] = max(waited, 0.0) * 1000.0
        action = served.result.action
        noise = action_noise_of(meta)
        if noise > 0:
            action = explore(
                action, model.family.action_spec(meta), noise, derive_seed(session_id, body.step)
            )
        value = action_value(action)
        response["action"] = value
        record = StepRecord(body.step, body.observation, body.reward, value, False)
        return _Answer(
            record,
            response,
            ran_engine=True,
            mirror_after=lambda after: advance(entry, history, action, body.step, after),
            answered_at=answered_at,
        )

    async def _append(
        self,
        session_id: str,
        meta: SessionMeta,
        model: LoadedModel,
        answer: _Answer,
        fenced: bool,
        timings: dict[str, float],
        t0: float,
    ) -> dict[str, Any]:
        """Store the answer (fenced on step and creation time) and commit the mirror; ``fenced``:
        the metadata came from the mirror, so a refusal as out of step raises `_StaleMirror`."""
        deps = self.deps
        record, response = answer.record, answer.response
        engine = model if answer.ran_engine else None  # its slot ran ahead of the store
        t_write = time.perf_counter()
        try:
            outcome = await deps.append(session_id, record, response, meta.created_at)
        except Exception as exc:  # not stored: the engine must not stay ahead of the store
            await deps.forget(session_id, engine, meta.created_at)
            if isinstance(exc, InvalidRecord):
                raise ApiError(422, "invalid_field", str(exc), field=exc.field) from exc
            raise
        finally:
            timings["store_write"] = (time.perf_counter() - t_write) * 1000.0
        if answer.answered_at is not None:  # stored or refused: either way the act's time after its call
            model.batcher.observe_after_call(time.perf_counter() - answer.answered_at)
        if outcome.status == "appended":
            deps.live.touch(session_id)
            deps.mirror.put(session_id, answer.mirror_after(meta_after_append(meta, record, response)))
            if record.done:
                deps.metrics.episode_closed(model.name, response["episode_return"])
            return _finish(response, timings, t0)
        await deps.forget(session_id, engine, meta.created_at)
        if fenced and outcome.status in ("conflict", "missing"):
            raise _StaleMirror
        if outcome.status == "duplicate" and outcome.response is not None:
            return _finish(outcome.response, timings, t0)
        if outcome.status == "conflict":
            raise ApiError(
                409,
                "step_conflict",
                f"step {record.step} is out of order: the session expects step {outcome.next_step}",
                field="step",
                expected_step=outcome.next_step,
            )
        raise not_found(session_id)


class _StaleMirror(Exception):
    """A fenced read's metadata was behind the store's: the act is decided again from a read."""


def _check(meta: SessionMeta | None, owner: str, session_id: str, body: ActMessage) -> dict[str, Any] | None:
    """404 / 409 checks; returns the stored answer for a retried step."""
    if meta is None or meta.owner != owner:
        raise not_found(session_id)
    if meta.last_step is not None and body.step == meta.last_step and meta.last_response is not None:
        return dict(meta.last_response)
    if body.step != meta.next_step:
        raise ApiError(
            409,
            "step_conflict",
            f"step {body.step} is out of order: the session expects step {meta.next_step}",
            field="step",
            expected_step=meta.next_step,
        )
    return None


def _finish(response: dict[str, Any], timings: dict[str, float], t0: float) -> dict[str, Any]:
    timings["total"] = (time.perf_counter() - t0) * 1000.0
    return {**response, "timings": {k: round(v, 3) for k, v in timings.items()}}
