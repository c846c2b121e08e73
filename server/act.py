"""The act flow: one step of one session, from a parsed body to an acknowledged answer.

Per session, acts are serialised by an asyncio lock (FIFO) in this process; across replicas the
store's atomic append (step check in one Lua script) decides. The flow:

1. read the session (``get_meta`` when a mirror exists, else ``load``); unknown or another
   owner's -> 404; ``step`` equal to the last stored step -> the stored answer (idempotent retry);
   any other step than the next one -> 409 with ``expected_step``;
2. validate against the model (shape, reward rules, episode length) -> 422;
3. make sure the mirror matches the store (step and creation time), else rebuild it from ``load``;

   Fast path: when this process answered the session's previous step, its mirror holds the
   store's metadata as of now unless another process moved the session on; an act for exactly the
   mirror's next step then skips the read (steps 1-3 run on the mirror's copy). The append below
   is fenced on the step and the session's creation time, so a stale mirror can never store a
   step: the act is redone from step 1 with a read (its forward is wasted, its answer never sent).
4. ``done``: no forward; otherwise the engine picks a_t through the batcher;
5. ``append`` the record with the answer; only "appended" commits the mirror. "duplicate" (another
   replica stored this step first) returns the stored answer; "conflict" -> 409; store down -> 503.
   Whenever the engine ran but the store did not take its step, the engine slot is dropped.

Nothing is acknowledged before the store has it, and an error never changes the stored session.
The work runs in a task shielded from the caller's cancellation, so a client that disconnects
mid-act cannot leave the engine and the store out of step.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from typing import Any

from pydantic import ValidationError

from server.batcher import BatcherClosed
from server.errors import ApiError, from_pydantic
from server.mirror import MirrorEntry, action_value, advance, close, entry_from_state, obs_tensor, observed
from server.registry import LoadedModel
from server.schemas import ActBody
from server.sessions import SessionService, action_noise_of, derive_seed, not_found, sampling_of
from server.store import InvalidRecord, SessionMeta, SessionState, StepRecord, meta_after_append
from t2mir_model import ActRequest, explore

log = logging.getLogger("t2mir.server")


def parse_act(data: Any) -> ActBody:
    """Validate a decoded act message (dict) -> `ActBody`; raises ApiError 422."""
    if not isinstance(data, dict):
        raise ApiError(422, "invalid_request", "the act body must be a JSON object")
    try:
        return ActBody.model_validate(data)
    except ValidationError as exc:
        raise from_pydantic(exc) from exc


def parse_act_json(raw: bytes | str) -> ActBody:
    """Decode and validate a JSON act body; raises ApiError 400 / 422."""
    try:
        data = json.loads(raw)
    except (ValueError, UnicodeDecodeError) as exc:
        raise ApiError(400, "invalid_json", "request body is not valid JSON") from exc
    return parse_act(data)


def validate_act(body: ActBody, meta: SessionMeta, model: LoadedModel) -> None:
    """Model- and episode-dependent checks; raises ApiError 422."""
    config = model.config
    dim = config.observation.dim
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


class ActService:
    """``POST /sessions/{id}/act`` and WebSocket acts."""

    def __init__(self, sessions: SessionService) -> None:
        self.s = sessions
        self._tasks: set[asyncio.Task[dict[str, Any]]] = set()

    async def act(self, owner: str, session_id: str, body: ActBody, t0: float) -> dict[str, Any]:
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

    def _check(
        self, meta: SessionMeta | None, owner: str, session_id: str, body: ActBody
    ) -> dict[str, Any] | None:
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

    def _model(self, meta: SessionMeta) -> LoadedModel:
        model = self.s.registry.get(meta.model, meta.model_version)
        if model is None:
            raise ApiError(
                409,
                "model_unavailable",
                f"the session runs {meta.model} version {meta.model_version}, which is not loaded here",
            )
        return model

    async def _act(self, owner: str, session_id: str, body: ActBody, t0: float) -> dict[str, Any]:
        s = self.s
        t_start = time.perf_counter()
        timings = {
            "parse": (t_start - t0) * 1000.0,
            "store_read": 0.0,
            "queue_wait": 0.0,
            "forward": 0.0,
            "handoff": 0.0,
            "store_write": 0.0,
        }
        async with s.locks.hold(session_id):
            entry = s.mirror.get(session_id)
            if entry is not None and _fast_path(entry, owner, body):
                try:
                    return await self._fast(session_id, body, entry, timings, t0)
                except _StaleMirror:
                    entry = None
                    timings.update(queue_wait=0.0, forward=0.0, handoff=0.0, store_write=0.0)
            t_read = time.perf_counter()
            state: SessionState | None = None
            if entry is None:
                state = await s.timed("load", s.store.load(session_id))
                meta = state.meta if state is not None else None
            else:
                meta = await s.timed("get_meta", s.store.get_meta(session_id))
            stored = self._check(meta, owner, session_id, body)
            assert meta is not None
            if stored is None and state is None and (entry is None or not _matches(entry, meta)):
                state = await s.timed("load", s.store.load(session_id))  # another replica moved it on
                meta = state.meta if state is not None else None
                stored = self._check(meta, owner, session_id, body)
                assert meta is not None
            timings["store_read"] = (time.perf_counter() - t_read) * 1000.0
            if stored is not None:
                return _finish(stored, timings, t0)
            model = self._model(meta)
            validate_act(body, meta, model)
            if state is not None:
                entry = entry_from_state(state, model.discrete)
            assert entry is not None
            model.last_used = time.monotonic()
            return await self._step(session_id, body, meta, model, entry, timings, t0, fenced=False)

    async def _fast(
        self, session_id: str, body: ActBody, entry: MirrorEntry, timings: dict[str, float], t0: float
    ) -> dict[str, Any]:
        """The act on the mirror's copy of the metadata; raises `_StaleMirror` wherever the store's
        own copy could answer differently (then the caller redoes the act from a read)."""
        meta = entry.meta
        assert meta is not None
        try:
            model = self._model(meta)
            validate_act(body, meta, model)
        except ApiError as exc:
            raise _StaleMirror from exc
        model.last_used = time.monotonic()
        return await self._step(session_id, body, meta, model, entry, timings, t0, fenced=True)

    async def _step(
        self,
        session_id: str,
        body: ActBody,
        meta: SessionMeta,
        model: LoadedModel,
        entry: MirrorEntry,
        timings: dict[str, float],
        t0: float,
        fenced: bool,
    ) -> dict[str, Any]:
        """Run the engine (unless ``done``) and append; ``fenced``: the metadata came from the
        mirror, so an append the store refuses as out of step raises `_StaleMirror`."""
        s = self.s
        key = (session_id, meta.created_at)
        response: dict[str, Any] = {"session_id": session_id, "step": body.step, "episode": meta.episode}
        if body.done:
            reward = float(body.reward)  # type: ignore[arg-type]
            ret = meta.episode_return + reward
            response.update(action=None, episode_return=ret)
            record = StepRecord(body.step, body.observation, reward, None, True)
            new_entry = close(
                entry, reward, ret, model.retention, body.step, meta_after_append(meta, record, response)
            )
            ran_engine = False
        else:
            history = observed(entry, obs_tensor(body.observation), body.reward)
            seed = None if sampling_of(meta) == "greedy" else derive_seed(session_id, body.step)
            t_submit = time.perf_counter()
            try:
                served = await model.batcher.submit(ActRequest(key, history, seed))
            except BatcherClosed as exc:
                raise ApiError(
                    503,
                    "shutting_down",
                    "this model version is shutting down; retry",
                    headers={"Retry-After": "1"},
                ) from exc
            except Exception as exc:
                log.exception("engine failed", extra={"session": session_id, "step": body.step})
                s.mirror.drop(session_id)
                raise ApiError(500, "engine_error", f"the engine failed: {type(exc).__name__}") from exc
            timings["queue_wait"] = served.queue_wait * 1000.0
            timings["forward"] = served.forward * 1000.0
            waited = time.perf_counter() - t_submit - served.queue_wait - served.forward
            timings["handoff"] = max(waited, 0.0) * 1000.0
            action = served.result.action
            noise = action_noise_of(meta)
            if noise > 0:
                action = explore(action, model.config.action, noise, derive_seed(session_id, body.step))
            value = action_value(action)
            response["action"] = value
            record = StepRecord(body.step, body.observation, body.reward, value, False)
            new_entry = advance(entry, history, action, body.step, meta_after_append(meta, record, response))
            ran_engine = True
        t_write = time.perf_counter()
        try:
            outcome = await s.timed(
                "append", s.store.append(session_id, record, response, created_at=meta.created_at)
            )
        except Exception as exc:  # not stored: the engine must not stay ahead of the store
            await s.forget(session_id, model if ran_engine else None, meta.created_at)
            if isinstance(exc, InvalidRecord):
                raise ApiError(422, "invalid_field", str(exc), field=exc.field) from exc
            raise
        finally:
            timings["store_write"] = (time.perf_counter() - t_write) * 1000.0
        if outcome.status == "appended":
            s.mirror.put(session_id, new_entry)
            if body.done:
                s.metrics.episode_closed(model.name, response["episode_return"])
            return _finish(response, timings, t0)
        await s.forget(session_id, model if ran_engine else None, meta.created_at)
        if fenced and outcome.status in ("conflict", "missing"):
            raise _StaleMirror
        if outcome.status == "duplicate" and outcome.response is not None:
            return _finish(outcome.response, timings, t0)
        if outcome.status == "conflict":
            raise ApiError(
                409,
                "step_conflict",
                f"step {body.step} is out of order: the session expects step {outcome.next_step}",
                field="step",
                expected_step=outcome.next_step,
            )
        raise not_found(session_id)


class _StaleMirror(Exception):
    """The mirror's metadata was behind the store's: redo the act from a read."""


def _fast_path(entry: MirrorEntry, owner: str, body: ActBody) -> bool:
    """True when the mirror can stand in for the store's metadata for this act."""
    return entry.meta is not None and entry.meta.owner == owner and body.step == entry.next_step


def _matches(entry: MirrorEntry, meta: SessionMeta) -> bool:
    return entry.next_step == meta.next_step and entry.created_at == meta.created_at


def _finish(response: dict[str, Any], timings: dict[str, float], t0: float) -> dict[str, Any]:
    timings["total"] = (time.perf_counter() - t0) * 1000.0
    return {**response, "timings": {k: round(v, 3) for k, v in timings.items()}}
