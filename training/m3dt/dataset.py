"""The M3DT dataset in memory, and training windows sampled from it.

All episodes of all tasks sit in one table padded to the shared widths and the longest episode:
``obs (E, T, 39)``, ``actions (E, T, 4)``, ``rtg (E, T)`` (return-to-go from each step to the episode's
end: the served rule ``target - rewards so far`` with target = the episode's return). A window is
the K steps ending at a uniformly drawn step of a uniformly drawn episode of a drawn task; its prompt
is a P-step segment of one of the task's two best episodes (random segment in training). The
prompt shipped with a checkpoint (and used in evaluation) is the last P steps of the best episode.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from t2mir_model import M3DTBatch, M3DTConfig, TaskPrompt

from .collect import MANIFEST

PROMPT_EPISODES = 2


@dataclass
class SuiteData:
    """Every episode of the suite, padded, with per-task indices."""

    tasks: list[dict[str, Any]]  # manifest entries, in training order
    obs: np.ndarray  # (E, T, obs_dim) float32
    actions: np.ndarray  # (E, T, act_dim) float32
    rtg: np.ndarray  # (E, T) float32
    lengths: np.ndarray  # (E,) int
    task_of: np.ndarray  # (E,) int
    episodes_of: list[np.ndarray]  # per task: its episode rows
    prompt_rows: list[np.ndarray]  # per task: its best episodes' rows (best first)
    manifest_sha256: str

    @property
    def n_tasks(self) -> int:
        """Tasks in the table."""
        return len(self.tasks)

    def target_return(self, task: int) -> float:
        """The return the task is conditioned on: the best return in its data."""
        return float(self.rtg[self.prompt_rows[task][0], 0])


def interleave(entries: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Meta-World and Point-Robot tasks alternated (so the first N tasks mix both families)."""
    mw = [e for e in entries if e["family"] == "metaworld"]
    pr = [e for e in entries if e["family"] != "metaworld"]
    out: list[dict[str, Any]] = []
    for i in range(max(len(mw), len(pr))):
        out += mw[i : i + 1] + pr[i : i + 1]
    return out


def load_suite(directory: str | Path, config: M3DTConfig, max_tasks: int = 0) -> SuiteData:
    """Read a dataset written by ``t2mir collect --suite m3dt`` into one padded table."""
    path = Path(directory)
    manifest = json.loads((path / MANIFEST).read_text())
    entries = interleave(manifest["tasks"])
    if max_tasks:
        entries = entries[:max_tasks]
    arrays = []
    for e in entries:
        with np.load(path / e["file"], allow_pickle=False) as f:
            arrays.append({k: f[k] for k in ("obs", "actions", "rewards")})
    t_max = max(a["rewards"].shape[1] for a in arrays)
    n = sum(a["rewards"].shape[0] for a in arrays)
    obs = np.zeros((n, t_max, config.obs_dim), np.float32)
    actions = np.zeros((n, t_max, config.act_dim), np.float32)
    rtg = np.zeros((n, t_max), np.float32)
    lengths, task_of, episodes_of, prompt_rows = np.zeros(n, int), np.zeros(n, int), [], []
    row = 0
    for i, a in enumerate(arrays):
        k, t = a["rewards"].shape
        rows = np.arange(row, row + k)
        obs[rows, :t, : a["obs"].shape[2]] = a["obs"]
        actions[rows, :t, : a["actions"].shape[2]] = a["actions"]
        rtg[rows, :t] = np.cumsum(a["rewards"][:, ::-1], axis=1)[:, ::-1]
        lengths[rows], task_of[rows] = t, i
        episodes_of.append(rows)
        prompt_rows.append(rows[np.argsort(-rtg[rows, 0], kind="stable")[:PROMPT_EPISODES]])
        row += k
    return SuiteData(
        entries, obs, actions, rtg, lengths, task_of, episodes_of, prompt_rows, manifest["dataset_sha256"]
    )


def shipped_prompt(data: SuiteData, task: int, config: M3DTConfig) -> TaskPrompt:
    """The task's prompt: the last P steps of its best episode, at the task's real widths."""
    entry, row = data.tasks[task], int(data.prompt_rows[task][0])
    end = int(data.lengths[row])
    steps = np.arange(end - config.prompt_steps, end)
    return TaskPrompt(
        obs=torch.from_numpy(data.obs[row, steps, : entry["obs_width"]].copy()),
        actions=torch.from_numpy(data.actions[row, steps, : entry["act_width"]].copy()),
        returns_to_go=torch.from_numpy(data.rtg[row, steps].copy()),
        timesteps=torch.from_numpy(steps).long(),
    )


def sample_batch(
    data: SuiteData, tasks: np.ndarray, config: M3DTConfig, rng: np.random.Generator
) -> M3DTBatch:
    """One training window per entry of ``tasks`` (B,) (task indices)."""
    k, p = config.context_steps, config.prompt_steps
    episodes = np.array([rng.choice(data.episodes_of[t]) for t in tasks])  # (B,)
    ends = (rng.random(len(tasks)) * data.lengths[episodes]).astype(int)  # (B,) step s_t
    steps = ends[:, None] - k + 1 + np.arange(k)[None]  # (B, K)
    valid = steps >= 0
    steps = np.maximum(steps, 0)
    prompt_eps = np.array([rng.choice(data.prompt_rows[t]) for t in tasks])  # (B,)
    starts = (rng.random(len(tasks)) * (data.lengths[prompt_eps] - p + 1)).astype(int)
    pst = starts[:, None] + np.arange(p)[None]  # (B, P)
    ep = episodes[:, None]
    pe = prompt_eps[:, None]
    widths = np.array([data.tasks[t]["act_width"] for t in tasks])
    out = {
        "prompt_obs": data.obs[pe, pst],
        "prompt_actions": data.actions[pe, pst],
        "prompt_rtg": data.rtg[pe, pst],
        "prompt_timesteps": pst,
        "prompt_mask": np.ones_like(pst, bool),
        "obs": data.obs[ep, steps] * valid[..., None],
        "actions": data.actions[ep, steps] * valid[..., None],
        "rtg": data.rtg[ep, steps] * valid,
        "timesteps": steps,
        "mask": valid,
        "action_mask": np.arange(config.act_dim)[None] < widths[:, None],
    }
    return M3DTBatch(**{name: torch.from_numpy(np.ascontiguousarray(v)) for name, v in out.items()})
