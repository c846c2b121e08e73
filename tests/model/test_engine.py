"""The decoding engine: cached and uncached engines pick identical actions, across episode
boundaries, slot evictions and mixed batches of rebuilt and incremental rows."""

from __future__ import annotations

import pytest
import torch
from model_factory import tiny_policy

from t2mir_model import ActRequest, DecodeEngine
from t2mir_model.history import SessionHistory
from t2mir_model.t2mir.context import ad_context_episodes, ad_context_tokens, open_episode_tokens, step_tokens
from t2mir_model.t2mir.tokens import slice_tokens


def run_sessions(
    engine: DecodeEngine,
    n_sessions: int,
    episodes: int,
    seed: int,
    sample: bool,
    sparse: bool = False,
    one_at_a_time: bool = False,
) -> list[list]:
    """Drive random 'environments' through the engine in lockstep; returns every session's actions.

    ``sparse``: session i earns no reward in its first i episodes (return 0), random ones after.
    ``one_at_a_time``: one engine call per session instead of two batches of varying subsets."""
    config = engine.config
    g = torch.Generator().manual_seed(seed)
    histories = [SessionHistory() for _ in range(n_sessions)]
    actions: list[list] = [[] for _ in range(n_sessions)]
    steps = config.max_episode_steps

    def reward(session: int, episode: int) -> float:
        value = float(torch.randn((), generator=g))
        return 0.0 if sparse and episode < session else value

    for n in range(episodes):
        for t in range(steps):
            requests = []
            for i, h in enumerate(histories):
                obs = torch.randn(config.observation.dim, generator=g)
                if t == 0:
                    h.observe(obs)
                else:
                    h.observe(obs, reward=reward(i, n), action=actions[i][-1])
                requests.append(ActRequest(i, h, seed=1000 * i + t if sample else None))
            # sessions arrive in varying order and subsets
            order = torch.randperm(n_sessions, generator=g).tolist()
            chunks = (
                [[i] for i in order]
                if one_at_a_time
                else [order[: n_sessions // 2], order[n_sessions // 2 :]]
            )
            for chunk in chunks:
                out = engine.act([requests[i] for i in chunk])
                for i, res in zip(chunk, out.results, strict=True):
                    actions[i].append(res.action)
        for i, h in enumerate(histories):
            h.close(actions[i][-1], reward(i, n))
    return actions


@pytest.mark.parametrize("backbone", ["ad", "dpt"])
@pytest.mark.parametrize("discrete", [True, False])
def test_cached_engine_matches_uncached_engine(backbone, discrete):
    policy = tiny_policy(backbone=backbone, discrete=discrete)
    cached = run_sessions(DecodeEngine(policy, num_slots=3), 5, episodes=4, seed=0, sample=discrete)
    uncached = run_sessions(
        DecodeEngine(policy, num_slots=5, use_cache=False), 5, episodes=4, seed=0, sample=discrete
    )
    for a, b in zip(cached, uncached, strict=True):
        torch.testing.assert_close(torch.stack(a), torch.stack(b))


def test_dropping_unrewarded_episodes_keeps_cached_equal_to_full_and_batched_equal_to_one():
    """With ``unrewarded_context="drop"`` the batched, cached engine picks the actions of an
    uncached engine fed one session at a time; a session that never earned a reward plays
    differently from ``"keep"``, the session rewarded from its first episode plays the same."""
    policy = tiny_policy(discrete=False)
    runs = {}
    for rule in ("keep", "drop"):
        policy.config = policy.config.replace(unrewarded_context=rule)
        runs[rule] = run_sessions(DecodeEngine(policy, num_slots=3), 5, 4, seed=0, sample=False, sparse=True)
    alone = run_sessions(
        DecodeEngine(policy, num_slots=1, use_cache=False),
        5,
        4,
        seed=0,
        sample=False,
        sparse=True,
        one_at_a_time=True,
    )
    for a, b in zip(runs["drop"], alone, strict=True):
        torch.testing.assert_close(torch.stack(a), torch.stack(b))
    torch.testing.assert_close(torch.stack(runs["drop"][0]), torch.stack(runs["keep"][0]))
    assert not torch.allclose(torch.stack(runs["drop"][4]), torch.stack(runs["keep"][4]))


def test_ad_context_drops_unrewarded_episodes_until_one_earned_a_reward():
    h = SessionHistory()
    for ret in (0.0, 0.0):
        h.observe(torch.zeros(4))
        h.close(torch.tensor(0), ret)
    assert [e.index for e in ad_context_episodes(h.episodes, 3)] == [0, 1]
    assert ad_context_episodes(h.episodes, 3, "drop") == []
    config = tiny_policy().config.replace(unrewarded_context="drop")
    h.observe(torch.zeros(4))
    assert ad_context_tokens(config, h, torch.tensor(0)).shape == (1, 1)  # s_0 only, as in episode 0
    h.close(torch.tensor(0), 2.0)
    h.observe(torch.zeros(4))
    h.close(torch.tensor(0), 0.0)
    for rule in ("keep", "drop"):  # once a reward is earned, every episode is ranked as usual
        assert [e.index for e in ad_context_episodes(h.episodes, 3, rule)] == [3, 2]


def test_hits_and_misses():
    policy = tiny_policy()
    engine = DecodeEngine(policy, num_slots=2)
    h = SessionHistory()
    h.observe(torch.zeros(4))
    assert not engine.act([ActRequest("a", h)]).results[0].cache_hit
    h.observe(torch.ones(4), reward=1.0, action=torch.tensor(2))
    assert engine.is_cached("a", h)
    assert engine.act([ActRequest("a", h)]).results[0].cache_hit
    engine.evict("a")
    assert not engine.is_cached("a", h)


def test_ad_context_sorts_by_return_best_last_and_keeps_l_minus_1():
    policy = tiny_policy()
    h = SessionHistory()
    for ret in (3.0, 1.0, 5.0, 1.0):
        h.observe(torch.zeros(4))
        h.close(torch.tensor(0), ret)
    chosen = ad_context_episodes(h.episodes, policy.config.context_episodes)
    assert [e.ret for e in chosen] == [3.0, 5.0]
    h.observe(torch.zeros(4))
    tokens = ad_context_tokens(policy.config, h, torch.tensor(0))
    assert tokens.shape == (1, 3 + 3 + 1)
    assert tokens.reward[0, 2] == 3.0 and tokens.reward[0, 5] == 5.0


def test_engine_refuses_overlong_episodes_and_oversized_batches():
    policy = tiny_policy()
    engine = DecodeEngine(policy, num_slots=1)
    h = SessionHistory()
    h.observe(torch.zeros(4))
    for _ in range(policy.config.max_episode_steps):
        h.observe(torch.zeros(4), reward=0.0, action=torch.tensor(0))
    with pytest.raises(ValueError, match="max_episode_steps"):
        engine.act([ActRequest("a", h)])
    with pytest.raises(ValueError, match="exceed"):
        engine.act([ActRequest("a", SessionHistory()), ActRequest("b", SessionHistory())])


def test_a_new_session_takes_the_lowest_free_slot_and_packed_batches_read_in_place():
    engine = DecodeEngine(tiny_policy(), num_slots=5)
    histories = {key: SessionHistory() for key in "abcx"}
    for h in histories.values():
        h.observe(torch.zeros(4))
    engine.act([ActRequest(key, h) for key, h in histories.items()])  # slots 0, 1, 2, 3
    engine.evict("a")
    engine.evict("b")  # slot 1 freed last, slot 0 is still the lowest
    histories["d"] = SessionHistory()
    histories["d"].observe(torch.ones(4))
    for _ in range(2):
        histories["d"].observe(torch.ones(4), reward=0.0, action=torch.tensor(1))
    engine.act([ActRequest("d", histories["d"])])
    assert engine.cache.lengths == [7, 1, 1, 1, 0]  # d's 7-token context went to slot 0
    for key in "cdx":
        histories[key].observe(torch.ones(4), reward=1.0, action=torch.tensor(0))
    out = engine.act([ActRequest(key, histories[key]) for key in "cdx"])
    assert all(r.cache_hit for r in out.results)
    reads = engine.cache.reads
    assert (reads.gathered, reads.padding_rows) == (0, 1)  # slots 0, 2, 3 read in place, slot 1 padding


def test_a_spread_batch_moves_into_free_slots_once_and_acts_as_before():
    engine = DecodeEngine(tiny_policy(), num_slots=12)
    reference = DecodeEngine(tiny_policy(), num_slots=12, use_cache=False)  # same seed: same weights
    histories = {key: SessionHistory() for key in "abcdef"}
    for i, h in enumerate(histories.values()):
        h.observe(torch.full((4,), float(i)))
    engine.act([ActRequest(key, h) for key, h in histories.items()])  # slots 0..5
    spread = ["b", "d", "f"]  # slots 1, 3, 5: a range of 5 for 3 rows would be gathered
    for step in range(3):
        for key in spread:
            histories[key].observe(torch.randn(4), reward=float(step), action=torch.tensor(step % 5))
        requests = [ActRequest(key, histories[key]) for key in spread]
        out, expected = engine.act(requests), reference.act(requests)
        assert all(r.cache_hit for r in out.results)
        for got, want in zip(out.results, expected.results, strict=True):
            assert torch.equal(got.action, want.action)
    reads = engine.cache.reads
    assert (reads.moved_rows, reads.gathered) == (3, 0)  # moved once into slots 6, 7, 8, then in place
    assert [engine.cache.lengths[s] for s in (1, 3, 5)] == [0, 0, 0]
    assert engine.cache.lengths[6:9] == [10, 10, 10]  # the first state, then 3 tokens per step


def test_a_spread_batch_gathers_when_no_free_run_fits():
    engine = DecodeEngine(tiny_policy(), num_slots=6)
    histories = {key: SessionHistory() for key in "abcdef"}
    for h in histories.values():
        h.observe(torch.zeros(4))
    engine.act([ActRequest(key, h) for key, h in histories.items()])  # every slot taken
    for key in "bdf":
        histories[key].observe(torch.ones(4), reward=0.0, action=torch.tensor(1))
    engine.act([ActRequest(key, histories[key]) for key in "bdf"])
    assert (engine.cache.reads.moved_rows, engine.cache.reads.gathered) == (0, 1)


@pytest.mark.parametrize("discrete", [True, False])
def test_a_batch_of_step_tokens_is_each_history_s_last_three_tokens(discrete):
    g = torch.Generator().manual_seed(0)
    histories = []
    for steps in (2, 5, 3):  # open episodes at different steps
        h = SessionHistory()
        h.observe(torch.randn(2, generator=g))
        for _ in range(steps):
            action = torch.randint(0, 4, ()) if discrete else torch.rand(3, generator=g)
            h.observe(torch.randn(2, generator=g), float(torch.rand((), generator=g)), action)
        histories.append(h)
    example = torch.zeros((), dtype=torch.long) if discrete else torch.zeros(3)
    batch = step_tokens(histories)
    assert batch.shape == (3, 3)
    for b, h in enumerate(histories):
        full = open_episode_tokens(h, example)
        last = slice_tokens(full, full.shape[1] - 3, full.shape[1])
        for name in ("kind", "timestep", "valid", "query"):
            assert torch.equal(getattr(batch, name)[b], getattr(last, name)[0]), name
        assert torch.equal(batch.obs[b, 2], last.obs[0, 2])  # each modality on its own token
        assert torch.equal(batch.action[b, 0], last.action[0, 0])
        assert batch.reward[b, 1] == last.reward[0, 1]
