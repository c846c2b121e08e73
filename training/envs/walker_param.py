"""Walker-Param: Walker2d whose physical parameters differ from task to task.

Built on gymnasium's MuJoCo ``Walker2d-v5`` (subclassed; same XML, frame skip 4, reward, reset
noise drawn from the env's ``np_random``). Observation: the 17-d Walker2d-v5 observation as
float32. Action: Box ``[-1, 1]^6``. Reward: Walker2d-v5's ``forward velocity + healthy bonus
(1 while healthy) - 1e-3 ||a||^2``.

Termination (decision): gymnasium's default is kept: an episode *terminates* as soon as the walker
is unhealthy (torso height outside (0.8, 2.0) or torso angle outside (-1, 1)). Episodes therefore
last at most 200 steps (truncated by the registration) and may be shorter (terminated=True).
Datasets and evaluators must handle variable-length episodes; a falling walker is what makes the
task hard, and changing it would change the reward scale of the paper's Table 1.

Tasks (the rand-param scheme of the meta-RL literature): every task multiplies, element by
element, the XML's ``body_mass`` (per body), ``body_inertia`` (per body and axis) and
``geom_friction`` (per geom and coefficient) by ``1.5 ** U(-3, 3)`` and ``dof_damping`` (per dof)
by ``1.3 ** U(-3, 3)``. Params hold the four scale arrays as (nested) lists; ``set_task`` rebuilds
the model's arrays from the XML defaults times the scales, so tasks can be switched in any order.
50 tasks are drawn per seed: 45 train, 5 test.
"""

from __future__ import annotations

from typing import Any

import mujoco
import numpy as np
from gymnasium import utils
from gymnasium.envs.mujoco.mujoco_env import expand_model_path
from gymnasium.envs.mujoco.walker2d_v5 import Walker2dEnv
from gymnasium.spaces import Box

from training.envs.tasks import TaskSpec, require_task, seed_env_rng

ENV_ID = "t2mir/WalkerParam-v0"
EPISODE_STEPS = 200
OBS_DIM = 17
N_TRAIN, N_TEST = 45, 5
XML_FILE = "walker2d_v5.xml"
LOG_SCALE_LIMIT = 3.0

# params key -> (MjModel attribute, base of the log-uniform scale)
SCALED_FIELDS: dict[str, tuple[str, float]] = {
    "body_mass_scale": ("body_mass", 1.5),
    "body_inertia_scale": ("body_inertia", 1.5),
    "dof_damping_scale": ("dof_damping", 1.3),
    "geom_friction_scale": ("geom_friction", 1.5),
}


def _field_shapes() -> dict[str, tuple[int, ...]]:
    """Shapes of the scaled model arrays, read from the Walker2d-v5 XML."""
    model = mujoco.MjModel.from_xml_path(expand_model_path(XML_FILE))
    return {key: tuple(getattr(model, attr).shape) for key, (attr, _) in SCALED_FIELDS.items()}


def sample_tasks(seed: int) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """50 seeded parameter scalings (45 train params, 5 test params)."""
    rng = np.random.default_rng(seed)
    shapes = _field_shapes()
    params = []
    for _ in range(N_TRAIN + N_TEST):
        task: dict[str, Any] = {}
        for key, (_, base) in SCALED_FIELDS.items():
            exponent = rng.uniform(-LOG_SCALE_LIMIT, LOG_SCALE_LIMIT, size=shapes[key])
            task[key] = (base**exponent).tolist()
        params.append(task)
    return params[:N_TRAIN], params[N_TRAIN:]


class WalkerParamEnv(Walker2dEnv):
    """Walker2d-v5 whose mass, inertia, damping and friction come from the task."""

    env_ids: tuple[str, ...] = (ENV_ID,)

    def __init__(self, task: TaskSpec | None = None, seed: int | None = None, **kwargs: Any) -> None:
        """Create the env for ``task`` (default: ``train:0`` of seed 0).

        ``seed`` seeds ``np_random`` (the next reset() equals reset(seed=seed)); other keyword
        arguments go to gymnasium's Walker2dEnv (e.g. ``terminate_when_unhealthy``).
        """
        super().__init__(**kwargs)
        utils.EzPickle.__init__(self, task, seed, **kwargs)  # pickles as (task, seed, kwargs)
        self.observation_space = Box(-np.inf, np.inf, shape=(OBS_DIM,), dtype=np.float32)
        self._defaults = {key: getattr(self.model, attr).copy() for key, (attr, _) in SCALED_FIELDS.items()}
        if task is None:
            from training.envs.registry import resolve_task

            task = resolve_task(ENV_ID, "train:0")
        self.task: TaskSpec = task
        self.set_task(task)
        seed_env_rng(self, seed)

    def set_task(self, task: TaskSpec) -> None:
        """Apply the task's scales to the model (dynamics change at once; reset() to restart)."""
        require_task(task, self.env_ids, tuple(SCALED_FIELDS))
        scaled = {}
        for key in SCALED_FIELDS:
            scale = np.asarray(task.params[key], dtype=np.float64)
            if scale.shape != self._defaults[key].shape:
                raise ValueError(
                    f"{key} has shape {scale.shape}, the Walker2d model needs {self._defaults[key].shape}"
                )
            if not np.all(np.isfinite(scale)) or np.any(scale <= 0):
                raise ValueError(f"{key} must hold positive finite scales")
            scaled[key] = self._defaults[key] * scale
        for key, (attr, _) in SCALED_FIELDS.items():
            getattr(self.model, attr)[:] = scaled[key]
        self.task = task
        self._ezpickle_args = (task, *self._ezpickle_args[1:])  # pickle keeps the current task

    def _get_obs(self) -> np.ndarray:
        return super()._get_obs().astype(np.float32)

    # Returns plain floats where MuJoCo's typing promises numpy scalars (JSON-friendly infos).
    def step(self, action: Any) -> tuple[np.ndarray, float, bool, bool, dict[str, Any]]:  # type: ignore[override]
        """Walker2d-v5 step (terminates when unhealthy, see module docstring)."""
        obs, reward, terminated, truncated, info = super().step(np.asarray(action, dtype=np.float64))
        return obs, float(reward), bool(terminated), truncated, info
