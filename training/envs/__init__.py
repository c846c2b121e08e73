"""The paper's six benchmark families (seven ids) as gymnasium environments with task splits.

Importing this package registers ``t2mir/DarkRoom-v0``, ``t2mir/PointRobot-v0``,
``t2mir/CheetahVel-v0``, ``t2mir/CheetahVel3Cluster-v0``, ``t2mir/WalkerParam-v0``,
``t2mir/Reach-v0`` and ``t2mir/Push-v0`` with gymnasium (idempotently). MuJoCo and Meta-World
modules load only when one of their envs or task splits is requested.

Typical use::

    from training.envs import task_split, make_env, make_batch_env
    train, test = task_split("t2mir/CheetahVel-v0", seed=0)
    env = make_env("t2mir/CheetahVel-v0", train[3], seed=1)   # == gym.make(id, task=train[3])
    batch = make_batch_env("t2mir/CheetahVel-v0", test, seed=0)
"""

from training.envs.batch import DarkRoomBatchEnv, PointRobotBatchEnv, SyncBatchEnv, make_batch_env
from training.envs.darkroom import darkroom_expert_action
from training.envs.registry import (
    ENV_IDS,
    EnvInfo,
    env_info,
    make_env,
    register_envs,
    resolve_task,
    task_split,
)
from training.envs.tasks import TaskSpec, parse_task_name

register_envs()

__all__ = [
    "ENV_IDS",
    "DarkRoomBatchEnv",
    "EnvInfo",
    "PointRobotBatchEnv",
    "SyncBatchEnv",
    "TaskSpec",
    "darkroom_expert_action",
    "env_info",
    "make_batch_env",
    "make_env",
    "parse_task_name",
    "register_envs",
    "resolve_task",
    "task_split",
]
