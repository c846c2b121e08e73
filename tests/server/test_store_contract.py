"""Contract of the session stores, run against the in-process and the Redis implementation."""

from __future__ import annotations

import asyncio
import json
import random
import threading

import numpy as np
import pytest

from server.store import (
    AppendOutcome,
    AppendRequest,
    Episode,
    InvalidRecord,
    InvalidSessionId,
    MemorySessionStore,
    Retention,
    SessionExists,
    SessionMeta,
    SessionState,
    SessionStore,
    StepRecord,
    meta_after_append,
    retain,
    state_after_append,
)

pytestmark = pytest.mark.anyio


def make_meta(sid: str = "s1", mode: str = "best", count: int = 3, **kw: object) -> SessionMeta:
    """A session's identity with ``retention=(mode, count)``."""
    fields: dict = {
        "owner": "alice",
        "model": "darkroom-ad",
        "model_version": "v3",
        "backbone": "ad" if mode == "best" else "dpt",
        "metadata": {"env": "DarkRoom", "goal": [3, 4], "nested": {"x": 1.5}},
        "created_at": 1700000000.123456,
    }
    fields.update(kw)
    return SessionMeta(session_id=sid, retention=Retention(mode, count), **fields)  # type: ignore[arg-type]


def rec(step: int, reward: float | None = None, done: bool = False, action: object = 1) -> StepRecord:
    """A record whose observation encodes its step."""
    return StepRecord(step, [float(step), 0.5, -1.25], reward, None if done else action, done)


def snap(state: SessionState | None) -> str:
    """Canonical JSON of a state, to compare "byte-identical"."""
    assert state is not None
    return json.dumps(state.to_dict(), sort_keys=True)


async def play_episode(store: SessionStore, sid: str, start: int, rewards: list[float]) -> int:
    """Append one full episode (first record without reward, done record last); return next step."""
    assert (await store.append(sid, rec(start), {"a": start})).status == "appended"
    for i, reward in enumerate(rewards):
        step = start + 1 + i
        out = await store.append(sid, rec(step, reward, done=i == len(rewards) - 1), {"a": step})
        assert out.status == "appended", out
    return start + 1 + len(rewards)


async def test_create_and_get_meta(store: SessionStore) -> None:
    meta = make_meta(next_step=7, episode=3, returns=[1.0])  # progress fields are ignored
    assert isinstance(store, SessionStore)
    await store.create(meta)
    got = await store.get_meta("s1")
    assert got == make_meta()
    assert isinstance(got.created_at, float) and got.retention == Retention("best", 3)
    state = await store.load("s1")
    assert state is not None and state.episodes == [] and state.current == []
    assert state.meta == got


async def test_create_existing_raises_and_keeps_original(store: SessionStore) -> None:
    await store.create(make_meta())
    await store.append("s1", rec(0), {"a": 0})
    before = snap(await store.load("s1"))
    with pytest.raises(SessionExists):
        await store.create(make_meta(owner="mallory"))
    assert snap(await store.load("s1")) == before


async def test_unknown_session(store: SessionStore) -> None:
    assert await store.load("nope") is None
    assert await store.get_meta("nope") is None
    out = await store.append("nope", rec(0), {"a": 0})
    assert out.status == "missing" and out.response is None
    assert await store.delete("nope") is False
    await store.ping()


async def test_append_in_order(store: SessionStore) -> None:
    await store.create(make_meta())
    rewards = [None, 0.5, -1.0, 2.25, 0.0]
    for step, reward in enumerate(rewards):
        out = await store.append("s1", rec(step, reward, action=step % 4), {"action": step % 4, "t": step})
        assert out.status == "appended" and out.response is None and out.next_step is None
    state = await store.load("s1")
    assert [r.step for r in state.current] == [0, 1, 2, 3, 4]
    assert state.current[2] == StepRecord(2, [2.0, 0.5, -1.25], -1.0, 2, False)
    meta = state.meta
    assert (meta.next_step, meta.last_step, meta.episode, meta.episode_steps) == (5, 4, 0, 5)
    assert meta.episode_return == 1.75 and meta.returns == []
    assert meta.last_response == {"action": 0, "t": 4}


async def test_duplicate_returns_stored_response_and_changes_nothing(store: SessionStore) -> None:
    await store.create(make_meta())
    for step in range(3):
        await store.append("s1", rec(step, None if step == 0 else 1.0), {"action": [0.1, 0.2], "step": step})
    before = snap(await store.load("s1"))
    retry = StepRecord(2, [9.0, 9.0, 9.0], 5.0, 3, False)  # different payload, same step
    out = await store.append("s1", retry, {"action": "other"})
    assert out.status == "duplicate"
    assert out.response == {"action": [0.1, 0.2], "step": 2}
    assert snap(await store.load("s1")) == before


async def test_out_of_order_conflicts_and_changes_nothing(store: SessionStore) -> None:
    await store.create(make_meta())
    out = await store.append("s1", rec(1), {})
    assert (out.status, out.next_step) == ("conflict", 0)
    for step in range(3):
        await store.append("s1", rec(step, None if step == 0 else 1.0), {"a": step})
    before = snap(await store.load("s1"))
    for step in (0, 1, 4, 100):
        out = await store.append("s1", rec(step, 1.0), {"a": step})
        assert (out.status, out.next_step, out.response) == ("conflict", 3, None)
    assert snap(await store.load("s1")) == before


async def test_episode_close(store: SessionStore) -> None:
    await store.create(make_meta())
    nxt = await play_episode(store, "s1", 0, [1.0, 2.0, 0.5])
    state = await store.load("s1")
    assert state.current == []
    assert len(state.episodes) == 1
    ep = state.episodes[0]
    assert (ep.index, ep.ret) == (0, 3.5) and isinstance(ep.ret, float)
    assert [r.step for r in ep.records] == [0, 1, 2, 3]
    assert ep.records[0].reward is None and ep.records[-1] == StepRecord(
        3, [3.0, 0.5, -1.25], 0.5, None, True
    )
    meta = state.meta
    assert (meta.episode, meta.episode_steps, meta.episode_return) == (1, 0, 0.0)
    assert (meta.next_step, meta.last_step, meta.returns) == (4, 3, [3.5])
    # a retried `done` answers duplicate and does not close twice
    out = await store.append("s1", rec(3, 0.5, done=True), {"x": 1})
    assert out.status == "duplicate" and out.response == {"a": 3}
    assert snap(await store.load("s1")) == snap(state)
    # the next episode starts where the last one ended
    await play_episode(store, "s1", nxt, [-1.0])
    state = await store.load("s1")
    assert [e.index for e in state.episodes] == [0, 1] and state.meta.returns == [3.5, -1.0]
    assert state.episodes[1].records[0].step == 4


async def test_returns_are_exact_doubles(store: SessionStore) -> None:
    await store.create(make_meta())
    await store.append("s1", rec(0), {})
    await store.append("s1", rec(1, 0.1), {})
    await store.append("s1", rec(2, 0.2), {})
    assert (await store.get_meta("s1")).episode_return == 0.1 + 0.2
    await store.append("s1", rec(3, 1e-300, done=True), {})
    state = await store.load("s1")
    assert state.episodes[0].ret == 0.1 + 0.2 + 1e-300 and state.meta.returns == [0.1 + 0.2 + 1e-300]


@pytest.mark.parametrize(
    ("mode", "count", "returns", "kept"),
    [
        ("best", 2, [1.0, 3.0, 3.0, 2.0, 3.0], [2, 4]),  # ties: the later episode wins
        ("best", 3, [5.0, -1.0, 2.0, 7.0, 0.0, 2.0], [0, 3, 5]),
        ("last", 2, [5.0, -1.0, 2.0, 7.0], [2, 3]),
        ("last", 1, [1.0, 2.0, 3.0], [2]),
        ("best", 0, [1.0, 2.0], []),
    ],
)
async def test_retention(
    store: SessionStore, mode: str, count: int, returns: list[float], kept: list[int]
) -> None:
    await store.create(make_meta(mode=mode, count=count))
    step, reference = 0, []
    for i, ret in enumerate(returns):
        step = await play_episode(store, "s1", step, [ret / 2, ret / 2])
        reference = [*reference, Episode(i, ret, [])]
        reference = retain(reference, [e.ret for e in reference], Retention(mode, count))
        state = await store.load("s1")
        assert [e.index for e in state.episodes] == [e.index for e in reference]
    assert [e.index for e in state.episodes] == kept
    assert [e.ret for e in state.episodes] == [returns[i] for i in kept]
    assert state.meta.returns == returns
    assert all(len(e.records) == 3 for e in state.episodes)


async def test_delete_and_recreate(store: SessionStore) -> None:
    await store.create(make_meta(count=5))
    step = await play_episode(store, "s1", 0, [1.0])
    await store.append("s1", rec(step), {})
    assert await store.delete("s1") is True
    assert await store.load("s1") is None
    assert (await store.append("s1", rec(step + 1, 1.0), {})).status == "missing"
    assert await store.delete("s1") is False
    await store.create(make_meta(count=5))
    state = await store.load("s1")
    assert state.episodes == [] and state.current == [] and state.meta.returns == []


async def test_append_fenced_on_creation_time(store: SessionStore) -> None:
    await store.create(make_meta(count=5))
    await store.append("s1", rec(0), {"a": 0})
    before = snap(await store.load("s1"))
    for created_at in (1700000000.123457, 0.0):  # another incarnation of the session
        out = await store.append("s1", rec(1, 1.0), {"a": 1}, created_at=created_at)
        assert (out.status, out.next_step) == ("conflict", 1)
        out = await store.append("s1", rec(0), {"a": 9}, created_at=created_at)  # not even a duplicate
        assert (out.status, out.next_step) == ("conflict", 1)
    assert snap(await store.load("s1")) == before
    out = await store.append("s1", rec(1, 1.0), {"a": 1}, created_at=1700000000.123456)
    assert out.status == "appended"
    assert (await store.append("s1", rec(1, 1.0), {}, created_at=1700000000.123456)).status == "duplicate"


async def test_meta_after_append_predicts_the_stored_metadata(store: SessionStore) -> None:
    """What the server's mirror computes after an "appended" equals what the store then holds."""
    await store.create(make_meta(count=2))
    predicted = await store.get_meta("s1")
    rewards = [None, 0.1, 0.2, 0.7, None, -3.0, 1e-17, None, 5.0]
    done = [False, False, False, True, False, False, True, False, True]
    for step, (reward, closes) in enumerate(zip(rewards, done, strict=True)):
        record, response = rec(step, reward, done=closes), {"a": step, "r": [1.5, None]}
        assert (await store.append("s1", record, response)).status == "appended"
        predicted = meta_after_append(predicted, record, response)
        assert predicted == await store.get_meta("s1"), step


@pytest.mark.parametrize(("mode", "count"), [("best", 2), ("best", 0), ("last", 1)])
async def test_state_after_append_predicts_the_stored_state(
    store: SessionStore, mode: str, count: int
) -> None:
    """The Python state change (`state_after_append`: counters, returns, closing an episode,
    retention) is what both stores hold after every append (for Redis: what its Lua script does)."""
    memory = MemorySessionStore()
    for s in (store, memory):
        await s.create(make_meta(mode=mode, count=count))
    predicted = await memory.load("s1")
    assert snap(await store.load("s1")) == snap(predicted)
    rng = random.Random(5)
    step = 0
    for _ in range(7):
        length = rng.randint(1, 4)
        for t in range(length + 1):
            reward = None if t == 0 else rng.choice([0.0, 1.0, 0.5])  # returns tie often
            record = rec(step, reward, done=t == length, action=rng.randrange(4))
            response = {"a": step, "r": [1.5, None]}
            for s in (store, memory):
                assert (await s.append("s1", record, response)).status == "appended"
            predicted = state_after_append(predicted, record, response)
            assert snap(await store.load("s1")) == snap(await memory.load("s1")) == snap(predicted), step
            step += 1
    assert len(predicted.meta.returns) == 7 and len(predicted.episodes) == count
    # an episode return that would overflow is refused by the store and the Python change alike
    for record in (rec(step), rec(step + 1, 1e308)):
        assert (await store.append("s1", record, {})).status == "appended"
        predicted = state_after_append(predicted, record, {})
    assert snap(await store.load("s1")) == snap(predicted)
    with pytest.raises(InvalidRecord):
        await store.append("s1", rec(step + 2, 1e308), {})
    with pytest.raises(InvalidRecord):
        state_after_append(predicted, rec(step + 2, 1e308), {})


@pytest.mark.parametrize("bad", ["", "a b", "a{b}", "}x", "{", "a/b", "x" * 129, "é", "a\nb"])
async def test_invalid_session_ids(store: SessionStore, bad: str) -> None:
    with pytest.raises(InvalidSessionId):
        await store.create(make_meta(sid=bad))
    assert await store.load(bad) is None and await store.get_meta(bad) is None
    assert (await store.append(bad, rec(0), {})).status == "missing"
    assert await store.delete(bad) is False


async def test_ids_with_separators_do_not_collide(store: SessionStore) -> None:
    ids = ["a", "a:cur", "a:meta", "a.b-c_D:9", "x" * 128]
    for sid in ids:
        await store.create(make_meta(sid=sid))
    for n, sid in enumerate(ids):
        for step in range(n + 1):
            assert (
                await store.append(sid, rec(step, None if step == 0 else 1.0), {"sid": sid})
            ).status == "appended"
    for n, sid in enumerate(ids):
        state = await store.load(sid)
        assert state.meta.session_id == sid and len(state.current) == n + 1
    assert await store.delete("a") and await store.get_meta("a:cur") is not None


async def test_invalid_records_change_nothing(store: SessionStore) -> None:
    await store.create(make_meta())
    await store.append("s1", rec(0), {"a": 0})
    await store.append("s1", rec(1, 1e308), {"a": 1})
    before = snap(await store.load("s1"))
    bad = [
        (StepRecord(2, [float("nan")], 1.0, 0, False), {}),
        (StepRecord(2, [1.0], float("inf"), 0, False), {}),
        (StepRecord(2, [1.0], 1.0, "left", False), {}),
        (StepRecord(2, [1.0], 1.0, 0, "yes"), {}),
        (StepRecord(-1, [1.0], 1.0, 0, False), {}),
        (StepRecord(2**53, [1.0], 1.0, 0, False), {}),
        (rec(2, 1.0), {"x": object()}),
        (rec(2, 1.0), {"x": float("nan")}),
        (rec(2, 1e308), {}),  # episode return overflows to inf
    ]
    for record, response in bad:
        with pytest.raises(InvalidRecord):
            await store.append("s1", record, response)
    assert snap(await store.load("s1")) == before
    assert (await store.append("s1", rec(2, -1e308), {})).status == "appended"


async def test_values_are_normalised_and_copied(store: SessionStore) -> None:
    await store.create(make_meta())
    obs = np.array([1, 2, 3], dtype=np.float32)
    await store.append("s1", StepRecord(np.int64(0), obs, None, np.int64(2), False), {"a": 2})
    await store.append(
        "s1", StepRecord(1, [1, 2, 3], np.float64(0.5), np.array([0.25, -1.0]), False), {"a": [1]}
    )
    state = await store.load("s1")
    first, second = state.current
    assert first == StepRecord(0, [1.0, 2.0, 3.0], None, 2, False)
    assert type(first.action) is int and all(type(x) is float for x in second.obs)
    assert second == StepRecord(1, [1.0, 2.0, 3.0], 0.5, [0.25, -1.0], False)
    # returned objects are copies
    first.obs.append(99.0)
    state.meta.returns.append(1.0)
    state.meta.metadata["env"] = "changed"
    again = await store.load("s1")
    assert again.current[0].obs == [1.0, 2.0, 3.0] and again.meta.returns == []
    assert again.meta.metadata["env"] == "DarkRoom"


async def test_idle_ttl_expiry_and_refresh(store_harness) -> None:
    store = store_harness.make(ttl_seconds=10.0)
    await store.create(make_meta())
    step = await play_episode(store, "s1", 0, [1.0])  # creates every key kind
    await store_harness.advance(6)
    assert await store.load("s1") is not None  # refreshes
    await store_harness.advance(6)
    assert (await store.append("s1", rec(step), {})).status == "appended"  # 12 s after create
    await store_harness.advance(6)
    assert await store.get_meta("s1") is not None  # does not refresh
    await store_harness.advance(4.5)
    assert await store.get_meta("s1") is None and await store.load("s1") is None
    assert (await store.append("s1", rec(step + 1, 1.0), {})).status == "missing"
    await store.create(make_meta())  # the id is free again, and empty
    state = await store.load("s1")
    assert state.episodes == [] and state.current == [] and state.meta.returns == []


async def test_no_ttl_never_expires(store_harness) -> None:
    store = store_harness.make()
    await store.create(make_meta())
    await store_harness.advance(10_000)
    assert await store.get_meta("s1") is not None


async def test_concurrent_same_step_appends_once(store: SessionStore) -> None:
    await store.create(make_meta())
    await store.append("s1", rec(0), {"who": "first"})

    async def contender(i: int):
        return await store.append("s1", StepRecord(1, [float(i)], 1.0, i, False), {"who": i})

    outs = await asyncio.gather(*(contender(i) for i in range(20)))
    appended = [i for i, o in enumerate(outs) if o.status == "appended"]
    assert len(appended) == 1
    assert all(
        o.status == "duplicate" and o.response == {"who": appended[0]} for o in outs if o.status != "appended"
    )
    state = await store.load("s1")
    assert [r.step for r in state.current] == [0, 1] and state.current[1].action == appended[0]
    assert state.meta.episode_return == 1.0


async def test_concurrent_consecutive_appends_never_lose_or_double(store: SessionStore) -> None:
    total, episode_len, workers = 60, 15, 6
    await store.create(make_meta(count=100))
    winners: dict[int, int] = {}
    lost: list[str] = []

    async def worker(w: int) -> None:
        while True:
            meta = await store.get_meta("s1")
            step = meta.next_step
            if step >= total:
                return
            await asyncio.sleep(0)  # let the others read the same next_step
            first, done = step % episode_len == 0, step % episode_len == episode_len - 1
            record = StepRecord(step, [float(step)], None if first else 1.0, None if done else w, done)
            out = await store.append("s1", record, {"w": w, "step": step})
            if out.status == "appended":
                assert step not in winners
                winners[step] = w
            elif out.status == "duplicate":
                assert out.response["step"] == step
                lost.append(out.status)
            else:
                assert out.status == "conflict" and out.next_step > step
                lost.append(out.status)

    await asyncio.gather(*(worker(w) for w in range(workers)))
    assert sorted(winners) == list(range(total))
    assert lost, "the workers never raced"
    state = await store.load("s1")
    records = [r for e in state.episodes for r in e.records] + state.current
    assert [r.step for r in records] == list(range(total))
    assert all(r.action in (None, winners[r.step]) for r in records)
    assert state.meta.returns == [float(episode_len - 1)] * (total // episode_len)
    assert (state.meta.next_step, state.meta.episode) == (total, total // episode_len)


async def test_memory_store_is_thread_safe() -> None:
    store = MemorySessionStore()
    await store.create(make_meta(count=100))
    counts: list[int] = []

    def racer() -> None:
        async def run() -> int:
            won = 0
            for step in range(200):
                out = await store.append("s1", rec(step, None if step == 0 else 1.0), {})
                won += out.status == "appended"
            return won

        counts.append(asyncio.run(run()))

    threads = [threading.Thread(target=racer) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    # every step was appended by exactly one thread; the others saw duplicate / conflict
    state = await store.load("s1")
    assert [r.step for r in state.current] == list(range(200))
    assert sum(counts) == 200 and state.meta.episode_return == 199.0


async def test_append_many_gives_each_append_its_own_outcome(store: SessionStore) -> None:
    """One round trip, each append fenced on its own: appended, duplicate, conflict (step or
    incarnation), missing and invalid side by side, each as `append` alone would answer it."""
    for sid in ("a", "b", "c", "d", "e"):
        await store.create(make_meta(sid))
    for sid in ("a", "c"):
        await store.append(sid, rec(0), {"a": 0})
    await store.append("e", rec(0), {})
    await store.append("e", rec(1, 1e308), {})
    outcomes = await store.append_many(
        [
            AppendRequest("a", rec(1, 1.0), {"a": 1}),
            AppendRequest("b", rec(0), {"b": 0}, created_at=1700000000.123456),
            AppendRequest("c", rec(0), {"other": True}),  # c's step 0 again: its stored answer
            AppendRequest("d", rec(3), {}),
            AppendRequest("d", rec(0), {}, created_at=1.0),  # another incarnation
            AppendRequest("nope", rec(0), {}),
            AppendRequest("bad id {x}", rec(0), {}),
            AppendRequest("b", StepRecord(1, [float("nan")], 1.0, 0, False), {}),
            AppendRequest("e", rec(2, 1e308), {}),  # episode return overflows
            AppendRequest("a", rec(2, 0.5, done=True), {"a": 2}),  # after a's step 1, same batch
        ]
    )
    status = [o.status if isinstance(o, AppendOutcome) else type(o).__name__ for o in outcomes]
    assert status == [
        "appended",
        "appended",
        "duplicate",
        "conflict",
        "conflict",
        "missing",
        "missing",
        "InvalidRecord",
        "InvalidRecord",
        "appended",
    ]
    assert isinstance(outcomes[2], AppendOutcome) and outcomes[2].response == {"a": 0}
    assert [o.next_step for o in outcomes[3:5] if isinstance(o, AppendOutcome)] == [0, 0]
    state = await store.load("a")
    assert state is not None and state.meta.returns == [1.5] and state.meta.next_step == 3
    assert (await store.get_meta("b")).next_step == 1  # type: ignore[union-attr]
    assert (await store.get_meta("e")).next_step == 2  # type: ignore[union-attr]
    assert await store.append_many([]) == []


async def test_append_many_stores_what_appends_one_by_one_store(store: SessionStore) -> None:
    """Episodes played through batched appends leave every session as sequential appends do."""
    rng = random.Random(3)
    rewards = {sid: [round(rng.uniform(-1, 1), 3) for _ in range(11)] for sid in ("x", "y", "z")}
    for sid in rewards:
        await store.create(make_meta(sid, count=2))
        await store.create(make_meta(f"{sid}-seq", count=2))
    for step in range(12):

        def record(sid: str, step: int = step) -> StepRecord:
            episode_step = step % 4
            reward = None if episode_step == 0 else rewards[sid][step - 1]
            return rec(step, reward, done=episode_step == 3, action=step % 3)

        outcomes = await store.append_many([AppendRequest(sid, record(sid), {"s": step}) for sid in rewards])
        assert [o.status for o in outcomes if isinstance(o, AppendOutcome)] == ["appended"] * 3
        for sid in rewards:
            assert (await store.append(f"{sid}-seq", record(sid), {"s": step})).status == "appended"
    for sid in rewards:
        batched, sequential = await store.load(sid), await store.load(f"{sid}-seq")
        assert batched is not None and sequential is not None
        sequential.meta.session_id = sid
        assert snap(batched) == snap(sequential)
