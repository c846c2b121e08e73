"""Drive gymnasium environments through t2mir sessions, episode after episode.

    with T2MIRClient(url) as client:
        returns = run_episodes(client, env, episodes=20)              # one env, one new session
        returns = run_episodes(client, [env_a, env_b], episodes=5)     # one session per env
        returns = run_episodes(client, vector_env, episodes=5)         # one session per sub-env

Every env's spaces are checked against what the session's model expects (observation size, action
kind and size) before the first act. Actions are converted to the env's space: a Python int for
``Discrete`` (offset by ``start``), an array of the space's dtype (float32 for the usual ``Box``)
clipped to its bounds. Terminated and truncated episodes both end with a ``done`` act carrying the
final observation and reward. gymnasium is imported only when a function here is called.

`make_env` is ``gymnasium.make`` that first registers ids published by installed packages::

    env = make_env("t2mir/DarkRoom-v0", task="test:3")   # the project's envs, without importing them
    env = make_env("t2mir/MT50-v0", task="reach-v3")      # one Meta-World task of the M3DT suite
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from importlib.metadata import entry_points
from typing import Any

import numpy as np

from clients.protocol import SessionInfo
from clients.session import Session

ENV_PLUGINS = "gymnasium.envs"
"""Entry-point group of env registrations: named for a namespace, a function registering its ids."""


class SpaceMismatch(ValueError):
    """The environment's spaces do not match the session's model."""


@dataclass(frozen=True)
class EpisodeReport:
    """What ``on_episode`` receives after each closed episode."""

    env_index: int
    """Which env (list position or vector sub-env index)."""
    episode: int
    """0-based episode number of that env in this run."""
    episode_return: float
    steps: int
    """Environment steps in the episode."""
    session_id: str


def _flat_size(space: Any) -> int:
    from gymnasium import spaces

    if isinstance(space, spaces.Box):
        return int(np.prod(space.shape, dtype=np.int64))
    if isinstance(space, spaces.Discrete):
        return 1
    raise SpaceMismatch(f"unsupported observation space {space} (expected Box or Discrete)")


def make_env(env_id: str, **kwargs: Any) -> Any:
    """``gymnasium.make(env_id, **kwargs)``, registering ``env_id``'s namespace first if needed.

    Packages publish their gymnasium ids as entry points of the ``gymnasium.envs`` group named for
    the ids' namespace (``t2mir`` for ``t2mir/DarkRoom-v0``), each a function that registers them;
    when ``env_id`` is not registered yet, the entry points of its namespace are loaded and called.
    Raises ImportError when such a package or its dependencies are missing.
    """
    import gymnasium

    namespace, slash, _ = env_id.partition("/")
    if slash and ":" not in env_id and env_id not in gymnasium.registry:
        for register in entry_points(group=ENV_PLUGINS, name=namespace):
            register.load()()
    return gymnasium.make(env_id, **kwargs)


def check_spaces(info: SessionInfo, observation_space: Any, action_space: Any) -> None:
    """Raise `SpaceMismatch` unless the spaces fit ``info``'s observation size and action space."""
    from gymnasium import spaces

    model = f"model {info.model.name!r}" if info.model.name else "the session's model"
    size = _flat_size(observation_space)
    if info.observation_dim is not None and size != info.observation_dim:
        raise SpaceMismatch(
            f"env observations {observation_space} have {size} values, {model} expects {info.observation_dim}"
        )
    spec = info.action
    if spec is None:
        return  # the server does not say; the first act will fail if the env does not fit
    if spec.kind == "discrete":
        if not isinstance(action_space, spaces.Discrete) or int(action_space.n) != spec.n:
            raise SpaceMismatch(f"env action space {action_space}, {model} has Discrete({spec.n}) actions")
    elif spec.kind == "continuous":
        if not isinstance(action_space, spaces.Box) or _flat_size(action_space) != spec.dim:
            raise SpaceMismatch(
                f"env action space {action_space}, {model} has {spec.dim}-d continuous actions"
            )
    else:
        raise SpaceMismatch(f"{model} has an unknown action kind {spec.kind!r}")


def convert_action(action: Any, action_space: Any) -> Any:
    """The server's action in ``action_space``'s terms (int for Discrete, clipped array for Box)."""
    from gymnasium import spaces

    if isinstance(action_space, spaces.Discrete):
        value = int(np.asarray(action).reshape(()))
        if not 0 <= value < int(action_space.n):
            raise ValueError(f"server action {value} is outside Discrete({action_space.n})")
        return int(action_space.start) + value
    array = np.asarray(action, dtype=action_space.dtype)
    if array.size != int(np.prod(action_space.shape, dtype=np.int64)):
        raise ValueError(f"server action has {array.size} values, env expects shape {action_space.shape}")
    return np.clip(array.reshape(action_space.shape), action_space.low, action_space.high)


def _fallback_action(action_space: Any) -> Any:
    """A valid action for a vector sub-env whose episodes are all done (ignored by the run)."""
    from gymnasium import spaces

    if isinstance(action_space, spaces.Discrete):
        return int(action_space.start)
    return np.clip(np.zeros(action_space.shape, action_space.dtype), action_space.low, action_space.high)


class _Runner:
    """Bookkeeping of one `run_episodes` call (sessions, returns, callback)."""

    def __init__(self, sessions: list[Session], on_episode: Callable[[EpisodeReport], Any] | None) -> None:
        self.sessions = sessions
        self.returns: list[list[float]] = [[] for _ in sessions]
        self.on_episode = on_episode

    def close_episode(self, index: int, observation: Any, reward: Any, steps: int) -> None:
        session = self.sessions[index]
        session.end(observation, reward)
        episode_return = session.episode_returns[-1]
        self.returns[index].append(episode_return)
        if self.on_episode is not None:
            report = EpisodeReport(
                index, len(self.returns[index]) - 1, episode_return, steps, session.session_id
            )
            self.on_episode(report)


def _run_env(
    runner: _Runner, index: int, env: Any, episodes: int, seed: int | None, max_steps: int | None
) -> None:
    session = runner.sessions[index]
    for episode in range(episodes):
        observation, _ = env.reset(seed=seed if episode == 0 else None)
        action = session.reset(observation)
        steps = 0
        while True:
            observation, reward, terminated, truncated, _ = env.step(convert_action(action, env.action_space))
            steps += 1
            if terminated or truncated or (max_steps is not None and steps >= max_steps):
                runner.close_episode(index, observation, reward, steps)
                break
            action = session.step(observation, reward)


def _run_vector(runner: _Runner, env: Any, episodes: int, seed: int | None) -> None:
    from gymnasium.vector import AutoresetMode

    mode = AutoresetMode(env.metadata.get("autoreset_mode", AutoresetMode.NEXT_STEP))
    space = env.single_action_space
    n = env.num_envs
    observations, _ = env.reset(seed=seed)
    actions = [runner.sessions[i].reset(observations[i]) for i in range(n)]
    steps = [0] * n
    awaiting_reset = [False] * n  # NEXT_STEP: this sub-env's next step() is its reset

    def active(i: int) -> bool:
        return len(runner.returns[i]) < episodes

    while any(active(i) for i in range(n)):
        batch = [
            convert_action(actions[i], space)
            if active(i) and not awaiting_reset[i]
            else _fallback_action(space)
            for i in range(n)
        ]
        observations, rewards, terminated, truncated, infos = env.step(
            np.stack([np.asarray(a) for a in batch])
        )
        finished = np.zeros(n, dtype=bool)
        for i in range(n):
            if awaiting_reset[i]:
                awaiting_reset[i] = False
                if active(i):
                    actions[i], steps[i] = runner.sessions[i].reset(observations[i]), 0
                continue
            if not active(i):
                finished[i] = bool(terminated[i] or truncated[i])
                continue
            steps[i] += 1
            if not (terminated[i] or truncated[i]):
                actions[i] = runner.sessions[i].step(observations[i], rewards[i])
                continue
            finished[i] = True
            final = infos["final_obs"][i] if mode == AutoresetMode.SAME_STEP else observations[i]
            runner.close_episode(i, final, rewards[i], steps[i])
            if mode == AutoresetMode.NEXT_STEP:
                awaiting_reset[i] = True
            elif mode == AutoresetMode.SAME_STEP and active(i):
                actions[i], steps[i] = runner.sessions[i].reset(observations[i]), 0
        if mode == AutoresetMode.DISABLED and finished.any():
            observations, _ = env.reset(options={"reset_mask": finished})
            for i in map(int, np.flatnonzero(finished)):
                if active(i):
                    actions[i], steps[i] = runner.sessions[i].reset(observations[i]), 0


def run_episodes(
    client: Any,
    env: Any,
    episodes: int,
    session: Session | Sequence[Session] | None = None,
    on_episode: Callable[[EpisodeReport], Any] | None = None,
    *,
    model: str | None = None,
    sampling: str | None = None,
    action_noise: float | None = None,
    task: str | None = None,
    prompt: Any = None,
    target_return: float | None = None,
    websocket: bool = False,
    encoding: str = "json",
    seed: int | None = None,
    max_episode_steps: int | None = None,
    keep_sessions: bool = False,
) -> list[float]:
    """Run ``episodes`` episodes on every env and return their returns.

    Args:
        client: a `T2MIRClient`.
        env: a gymnasium ``Env``, a list of them, or a ``VectorEnv`` (one session per sub-env).
        episodes: episodes per env (each session's in-context history grows across them).
        session: existing session(s), one per env; by default new ones are created with
            ``model`` / ``sampling`` / ``action_noise`` (M3DT models: ``task`` or ``prompt``, and
            ``target_return``; see `T2MIRClient.create_session`), over a WebSocket with
            ``websocket=True``, and deleted at the end unless ``keep_sessions``.
        on_episode: called with an `EpisodeReport` after every episode.
        seed: passed to the first ``reset`` of each env (vector envs: to its first reset).
        max_episode_steps: end episodes after this many steps (single envs only; vector envs
            rely on their own time limits).

    Returns:
        The returns, env by env (all episodes of env 0, then env 1, ...).
    """
    from gymnasium.vector import VectorEnv

    if episodes < 0:
        raise ValueError(f"episodes must be >= 0, got {episodes}")
    vector = isinstance(env, VectorEnv)
    envs = list(env) if isinstance(env, list | tuple) else [env]
    count = env.num_envs if vector else len(envs)
    if vector and max_episode_steps is not None:
        raise ValueError("max_episode_steps applies to single envs; give vector envs a TimeLimit")
    created: list[Session] = []
    try:
        if session is None:
            for _ in range(count):
                created.append(
                    Session.create(
                        client,
                        model=model,
                        sampling=sampling,
                        action_noise=action_noise,
                        task=task,
                        prompt=prompt,
                        target_return=target_return,
                        websocket=websocket,
                        encoding=encoding,
                    )
                )
            sessions = created
        else:
            sessions = [session] if isinstance(session, Session) else list(session)
        if len(sessions) != count:
            raise ValueError(f"{len(sessions)} session(s) given for {count} env(s)")
        for i, item in enumerate(sessions):
            obs_space = env.single_observation_space if vector else envs[i].observation_space
            act_space = env.single_action_space if vector else envs[i].action_space
            check_spaces(item.info, obs_space, act_space)
        runner = _Runner(sessions, on_episode)
        if vector:
            _run_vector(runner, env, episodes, seed)
        else:
            for i, single in enumerate(envs):
                _run_env(runner, i, single, episodes, seed, max_episode_steps)
        return [value for per_env in runner.returns for value in per_env]
    finally:
        for item in created:
            with contextlib.suppress(Exception):
                item.close(delete=not keep_sessions)
