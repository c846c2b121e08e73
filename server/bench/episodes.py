"""The client side of a session's episodes: the environment that produces them, the history that
records them.

Environments expose three calls (``reset``, ``step``, ``clone``) with JSON-ready values, so the
load generator never touches numpy or gymnasium. ``synthetic`` draws random observations and
rewards and ends an episode after the model's ``max_episode_steps``: it costs almost nothing, so
the measurement is the server's alone. ``darkroom`` steps ``t2mir/DarkRoom-v0`` (100-step
episodes, one held-out task per session) through gymnasium, registered by the ``gymnasium.envs``
entry point that the training package publishes (``pip install 't2mir[envs]'``).

`ClientHistory` is what a stateless ("naive") client has to keep and re-send with every call:
the closed episodes the model reads plus the open episode's steps. It keeps exactly what the
t2mir session store keeps (the store's own `retain` rule: AD the ``count`` best episodes by
return, ties to the later one; DPT the last one), so the baseline sees the context the t2mir
engine sees.
"""

from __future__ import annotations

import copy
import random
from dataclasses import dataclass, field
from importlib.metadata import entry_points
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from gymnasium.envs.registration import EnvSpec

from server.store.models import Retention, retain

Action = int | list[float]
DARKROOM_ID = "t2mir/DarkRoom-v0"
DARKROOM_TEST_TASKS = 20
"""Held-out tasks of DarkRoom's task split, given to the sessions in turn."""
ENV_KINDS = ("darkroom", "synthetic")


class EpisodeEnv(Protocol):
    """What a session driver needs from an environment."""

    def reset(self) -> list[float]:
        """Start an episode; returns s_0."""
        ...

    def step(self, action: Any) -> tuple[list[float], float, bool]:
        """Apply an action; returns (observation, reward, episode finished)."""
        ...

    def clone(self) -> EpisodeEnv:
        """An independent copy in the same state (to replay a session against another server)."""
        ...


class SyntheticEnv:
    """Random observations in [0, scale), Bernoulli rewards, fixed-length episodes; no simulator."""

    def __init__(self, obs_dim: int, episode_steps: int, seed: int, scale: float = 9.0) -> None:
        self.obs_dim = obs_dim
        self.episode_steps = episode_steps
        self.scale = scale
        self.rng = random.Random(seed)
        self.t = 0

    def _obs(self) -> list[float]:
        return [round(self.rng.random() * self.scale, 4) for _ in range(self.obs_dim)]

    def reset(self) -> list[float]:
        """s_0: a random observation."""
        self.t = 0
        return self._obs()

    def step(self, action: Any) -> tuple[list[float], float, bool]:
        """A random next observation and reward in {0, 1} (the action is ignored)."""
        self.t += 1
        reward = 1.0 if self.rng.random() < 0.2 else 0.0
        return self._obs(), reward, self.t >= self.episode_steps

    def clone(self) -> SyntheticEnv:
        """Same random state, same position in the episode."""
        twin = SyntheticEnv(self.obs_dim, self.episode_steps, 0, self.scale)
        twin.rng.setstate(self.rng.getstate())
        twin.t = self.t
        return twin


class GymEnv:
    """A gymnasium env (TimeLimit-wrapped) with JSON-ready observations."""

    def __init__(self, env: Any, seed: int) -> None:
        self.env = env
        self.seed = seed
        self.episodes = 0

    def reset(self) -> list[float]:
        """Reset with a per-episode seed (deterministic for a session)."""
        obs, _ = self.env.reset(seed=self.seed * 1000 + self.episodes)
        self.episodes += 1
        return [float(x) for x in obs]

    def step(self, action: Any) -> tuple[list[float], float, bool]:
        """One simulator step."""
        obs, reward, terminated, truncated, _ = self.env.step(action)
        return [float(x) for x in obs], float(reward), bool(terminated or truncated)

    def clone(self) -> GymEnv:
        """A deep copy of the simulator state."""
        twin = GymEnv(copy.deepcopy(self.env), self.seed)
        twin.episodes = self.episodes
        return twin


def check_env(kind: str, obs_dim: int, action: dict[str, Any], max_episode_steps: int) -> None:
    """Refuse an env the served model cannot play; raises ValueError with the reason."""
    if kind not in ENV_KINDS:
        raise ValueError(f"unknown env {kind!r}; choose one of {', '.join(ENV_KINDS)}")
    if kind == "darkroom":
        episode_steps = _gym_spec(DARKROOM_ID).max_episode_steps or 0
        if obs_dim != 2 or action.get("kind") != "discrete" or action.get("n") != 5:
            raise ValueError("--env darkroom needs a model with 2-d observations and 5 discrete actions")
        if max_episode_steps < episode_steps:
            raise ValueError(
                f"--env darkroom plays {episode_steps}-step episodes; the model allows {max_episode_steps}"
            )


def _gym_spec(env_id: str) -> EnvSpec:
    """gymnasium's spec of ``env_id``, registering its namespace from the ``gymnasium.envs`` entry
    points first when needed (as ``clients.gym_shim.make_env`` does)."""
    import gymnasium

    if env_id not in gymnasium.registry:
        for register in entry_points(group="gymnasium.envs", name=env_id.partition("/")[0]):
            register.load()()
    return gymnasium.spec(env_id)


def make_envs(kind: str, n: int, obs_dim: int, episode_steps: int, seed: int = 0) -> list[EpisodeEnv]:
    """``n`` independent envs, one per session (DarkRoom: held-out tasks in turn)."""
    if kind == "synthetic":
        return [SyntheticEnv(obs_dim, episode_steps, seed * 100_003 + i) for i in range(n)]
    if kind != "darkroom":
        raise ValueError(f"unknown env {kind!r}; choose one of {', '.join(ENV_KINDS)}")
    import gymnasium

    spec = _gym_spec(DARKROOM_ID)
    return [
        GymEnv(
            gymnasium.make(spec, task=f"test:{i % DARKROOM_TEST_TASKS}", split_seed=seed, seed=seed + i),
            seed + i,
        )
        for i in range(n)
    ]


# ---------------------------------------------------------------- history


@dataclass
class ClosedEpisode:
    """One closed episode as JSON-ready lists."""

    index: int
    obs: list[list[float]]
    actions: list[Action]
    rewards: list[float]
    ret: float
    """Return summed in float64 in step order (the session store's ranking key)."""

    def to_json(self) -> dict[str, Any]:
        """The episode as the baseline reads it."""
        return {"index": self.index, "obs": self.obs, "actions": self.actions, "rewards": self.rewards}


@dataclass
class ClientHistory:
    """Kept closed episodes plus the open episode up to its latest state s_t."""

    retention: Retention
    """Which closed episodes are kept (as the session store keeps them)."""
    episode: int = 0
    """Index of the open episode."""
    kept: list[ClosedEpisode] = field(default_factory=list)
    obs: list[list[float]] = field(default_factory=list)
    """s_0 .. s_t of the open episode."""
    actions: list[Action] = field(default_factory=list)
    """a_0 .. a_t (a_t once answered)."""
    rewards: list[float] = field(default_factory=list)
    """r_0 .. r_{t-1}."""

    @property
    def t(self) -> int:
        """Timestep of the latest state of the open episode (-1 before its first observation)."""
        return len(self.obs) - 1

    def observe(self, obs: list[float], reward: float | None) -> None:
        """Record s_t and, after the episode's first step, the reward r_{t-1} of the previous action."""
        if self.obs:
            if reward is None or len(self.actions) != len(self.obs):
                raise ValueError(
                    "after an episode's first step, the previous action and its reward are needed"
                )
            self.rewards.append(float(reward))
        elif reward is not None:
            raise ValueError("no reward at an episode's first step")
        self.obs.append([float(x) for x in obs])

    def acted(self, action: Action) -> None:
        """Record the answer a_t for the latest state."""
        if len(self.actions) != len(self.obs) - 1:
            raise ValueError("an action needs a new observation first")
        self.actions.append(action)

    def close(self, reward: float) -> ClosedEpisode:
        """Close the open episode with the last action's reward; apply retention; returns the episode."""
        if not self.obs or len(self.actions) != len(self.obs):
            raise ValueError("no answered step to close")
        rewards = [*self.rewards, float(reward)]
        ret = 0.0
        for r in rewards:
            ret += r
        closed = ClosedEpisode(self.episode, self.obs, self.actions, rewards, ret)
        episodes = [*self.kept, closed]
        self.kept = retain(episodes, [e.ret for e in episodes], self.retention)
        self.episode += 1
        self.obs, self.actions, self.rewards = [], [], []
        return closed

    def request_body(self) -> dict[str, Any]:
        """The whole context as one JSON body (what the naive client sends with every act)."""
        return {
            "episode": self.episode,
            "episodes": [e.to_json() for e in self.kept],
            "obs": self.obs,
            "actions": self.actions,
            "rewards": self.rewards,
        }

    def copy(self) -> ClientHistory:
        """An independent copy (closed episodes are never mutated, so they are shared)."""
        return ClientHistory(
            self.retention,
            self.episode,
            list(self.kept),
            copy.deepcopy(self.obs),
            copy.deepcopy(self.actions),
            list(self.rewards),
        )
