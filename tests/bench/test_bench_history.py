"""The naive client's history keeps what the session store keeps, and the baseline rebuilds from it
exactly the context the t2mir engine reads."""

from __future__ import annotations

import random

import pytest
import torch

from server.bench.baseline import BadRequest, history_from_body
from server.bench.episodes import ClientHistory
from server.store import Retention, retain
from t2mir_model import ActionSpec, ObservationSpec, T2MIRConfig
from t2mir_model.history import Episode, SessionHistory
from t2mir_model.t2mir.context import ad_context_tokens

CONFIG = T2MIRConfig(
    observation=ObservationSpec(2),
    action=ActionSpec("discrete", n=5),
    d_model=32,
    n_layers=2,
    n_heads=4,
    max_episode_steps=4,
    context_episodes=3,
)


def play(history: ClientHistory, reference: SessionHistory, episodes: int, seed: int) -> None:
    """Random episodes recorded in both the client history and an engine-side SessionHistory."""
    rng = random.Random(seed)
    for _ in range(episodes):
        reward = None
        for t in range(CONFIG.max_episode_steps):
            obs = [rng.random(), rng.random()]
            history.observe(obs, reward)
            prev = torch.tensor(history.actions[-1]) if t else None
            reference.observe(torch.tensor(obs), reward, prev)
            history.acted(rng.randrange(5))
            reward = float(rng.choice([0.0, 0.0, 1.0, 0.5]))
        closed = history.close(reward)
        reference.close(torch.tensor(closed.actions[-1]), reward)


@pytest.mark.parametrize(("mode", "count"), [("best", 2), ("last", 1), ("best", 0)])
def test_retention_matches_the_server(mode, count):
    history = ClientHistory(Retention(mode, count))
    closed = []
    rng = random.Random(3)
    for _ in range(9):
        history.observe([0.0, 0.0], None)
        history.acted(0)
        closed.append(history.close(float(rng.choice([0.0, 1.0, 2.0]))))
    episodes = [
        Episode(e.index, torch.zeros(1, 2), torch.zeros(1, dtype=torch.long), torch.zeros(1)) for e in closed
    ]
    kept = retain(episodes, [e.ret for e in closed], Retention(mode, count))
    assert [e.index for e in history.kept] == [e.index for e in kept]


def test_baseline_context_equals_engine_context():
    history = ClientHistory(Retention("best", CONFIG.context_episodes - 1))
    reference = SessionHistory()
    play(history, reference, episodes=5, seed=0)
    history.observe([0.25, 0.75], None)
    reference.observe(torch.tensor([0.25, 0.75]))
    history.acted(3)
    history.observe([0.5, 0.5], 1.0)
    reference.observe(torch.tensor([0.5, 0.5]), 1.0, torch.tensor(3))
    example = torch.zeros((), dtype=torch.long)
    rebuilt = ad_context_tokens(CONFIG, history_from_body(history.request_body(), CONFIG), example)
    expected = ad_context_tokens(CONFIG, reference, example)
    assert rebuilt.shape == expected.shape == (1, 3 * CONFIG.max_episode_steps * 2 + 4)
    for name in ("kind", "obs", "action", "reward", "timestep", "valid", "query"):
        assert torch.equal(getattr(rebuilt, name), getattr(expected, name)), name


@pytest.mark.parametrize(
    "body",
    [
        {"episodes": [], "obs": [], "actions": [], "rewards": []},
        {"episodes": [], "obs": [[0.0, 1.0]], "actions": [1], "rewards": []},
        {"episodes": [], "obs": [[0.0]], "actions": [], "rewards": []},
        {"episodes": [], "obs": [[0.0, 1.0], [1.0, 1.0]], "actions": [7], "rewards": [0.0]},
        {
            "episodes": [{"index": 0, "obs": [], "actions": [], "rewards": []}],
            "obs": [[0, 0]],
            "actions": [],
            "rewards": [],
        },
        {"obs": [[0.0, 1.0]]},
    ],
)
def test_baseline_refuses_malformed_contexts(body):
    with pytest.raises(BadRequest):
        history_from_body(body, CONFIG)
