"""The training loop of Algorithms 1 and 3, single process or DDP under ``torchrun``.

Per step: sample a query batch and a key batch from the same tasks, minimise
imitation + balance + w_con * contrastive loss with AdamW (warmup + cosine, gradient clipping),
then move the momentum key routers (Eq. 8). Logs to TensorBoard, checkpoints periodically, resumes.
"""

from __future__ import annotations

import os
import shlex
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.tensorboard import SummaryWriter
from tqdm.auto import tqdm

from t2mir_model import (
    ActionSpec,
    LossOutput,
    ObservationSpec,
    PolicyBatch,
    T2MIRConfig,
    T2MIRPolicy,
    set_sparse_dispatch,
)
from training.datasets import LearningHistoryDataset, load_dataset
from training.envs import task_split
from training.evaluation import EvalResult, evaluate
from training.evaluation.protocol import EvalProtocol, measured_metrics, provenance
from training.train.batches import to_policy_batches
from training.train.config import TrainConfig
from training.train.schedule import lr_factor
from training.train.state import load_training_state, save_training_state


@dataclass
class TrainResult:
    """Where the run left its model and what it measured."""

    final_dir: Path
    steps: int
    wall_seconds: float
    losses: list[tuple[int, float]]
    """(step, total loss) at every logged step."""
    eval: EvalResult | None


class _LossModule(nn.Module):
    """Wraps ``compute_loss`` as a forward so DDP can synchronise its gradients."""

    def __init__(self, policy: T2MIRPolicy) -> None:
        super().__init__()
        self.policy = policy

    def forward(self, batch: PolicyBatch, keys: PolicyBatch) -> LossOutput:
        return self.policy.compute_loss(batch, keys)


def observation_stats(dataset: LearningHistoryDataset) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Per-feature mean and std over every valid step of the dataset (std floored at 1e-3)."""
    total = np.zeros(dataset.obs_dim)
    total_sq = np.zeros(dataset.obs_dim)
    count = 0
    for task in dataset.tasks:
        valid = np.arange(dataset.horizon)[None, :] < task.lengths[:, None]  # (E, T)
        obs = task.observations[valid].astype(np.float64)  # (n, obs_dim)
        total += obs.sum(0)
        total_sq += (obs**2).sum(0)
        count += obs.shape[0]
    mean = total / count
    std = np.sqrt(np.maximum(total_sq / count - mean**2, 0.0))
    return tuple(mean.tolist()), tuple(np.maximum(std, 1e-3).tolist())


def policy_config(config: TrainConfig, dataset: LearningHistoryDataset) -> T2MIRConfig:
    """The model config a training run produces: ``config.model`` with the dataset's spaces,
    observation statistics, environment and horizon."""
    env = dataset.manifest["env"]
    if dataset.action_kind == "discrete":
        action = ActionSpec("discrete", n=dataset.action_n)
    else:
        action = ActionSpec(
            "continuous", dim=dataset.act_dim, low=tuple(env["action_low"]), high=tuple(env["action_high"])
        )
    mean, std = observation_stats(dataset)
    return config.model_config(
        ObservationSpec(dataset.obs_dim, mean=mean, std=std), action, dataset.env_id, dataset.horizon
    )


def build_optimizer(policy: T2MIRPolicy, config: TrainConfig) -> torch.optim.AdamW:
    """AdamW with weight decay on matrices only (not on biases, norms or gate vectors)."""
    decay = [p for p in policy.parameters() if p.requires_grad and p.ndim >= 2]
    no_decay = [p for p in policy.parameters() if p.requires_grad and p.ndim < 2]
    groups = [
        {"params": decay, "weight_decay": config.weight_decay},
        {"params": no_decay, "weight_decay": 0.0},
    ]
    return torch.optim.AdamW(groups, lr=config.lr)


def draw_batches(
    dataset: LearningHistoryDataset, config: TrainConfig, rng: np.random.Generator
) -> tuple[PolicyBatch, PolicyBatch]:
    """One (batch, key batch) pair on ``config.device``, sampled as Algorithm 1 (AD) or 3 (DPT) does."""
    sample = (
        dataset.sample_ad(rng, config.batch_size, config.model.context_episodes, config.ad_episodes)
        if config.model.backbone == "ad"
        else dataset.sample_dpt(rng, config.batch_size, config.n_queries, config.prompt_history)
    )
    batch, keys = to_policy_batches(sample, dataset.action_kind == "discrete", rng)
    return batch.to(config.device), keys.to(config.device)


def optimisation_step(
    compute_loss: Callable[[PolicyBatch, PolicyBatch], LossOutput],
    policy: T2MIRPolicy,
    optimizer: torch.optim.Optimizer,
    batch: PolicyBatch,
    keys: PolicyBatch,
    grad_clip: float,
) -> tuple[LossOutput, float]:
    """Loss, backward, clipped AdamW step and the momentum key-router update -> (loss, grad norm).

    ``compute_loss`` is the policy's (or its DDP wrapper's) forward."""
    loss = compute_loss(batch, keys)
    optimizer.zero_grad(set_to_none=True)
    loss.total.backward()
    grad_norm = float(torch.nn.utils.clip_grad_norm_(policy.parameters(), grad_clip))
    optimizer.step()
    policy.momentum_update()
    return loss, grad_norm


def _set_lr(optimizer: torch.optim.Optimizer, config: TrainConfig, step: int) -> float:
    lr = config.lr * lr_factor(step, config.warmup_steps, config.steps, config.min_lr_ratio)
    for group in optimizer.param_groups:
        group["lr"] = lr
    return lr


def _log_step(writer: SummaryWriter, loss: LossOutput, lr: float, grad_norm: float, step: int) -> None:
    writer.add_scalar("loss/total", loss.total.item(), step)
    writer.add_scalar("loss/action", loss.action.item(), step)
    writer.add_scalar("loss/balance", loss.balance.item(), step)
    writer.add_scalar("loss/contrastive", loss.contrastive.item(), step)
    if loss.accuracy is not None:
        writer.add_scalar("train/action_accuracy", loss.accuracy.item(), step)
    writer.add_scalar("train/lr", lr, step)
    writer.add_scalar("train/grad_norm", grad_norm, step)
    for layer in loss.routing:
        for name, value in layer.summary().items():
            writer.add_scalar(f"routing/layer{layer.layer}/{name}", float(value), step)
        if layer.token is not None:
            for m, modality in enumerate("sar"):
                share = layer.token.counts[m] / layer.token.counts[m].sum().clamp_min(1)
                for e, v in enumerate(share.tolist()):
                    writer.add_scalar(f"routing/layer{layer.layer}/token_{modality}/expert{e}", v, step)


def _card(config: TrainConfig, step: int, wall: float, result: EvalResult | None) -> dict:
    command = "t2mir " + shlex.join(sys.argv[1:]) if sys.argv[1:] else ""
    card = {
        "name": Path(config.out).name,
        "training": {
            **provenance(command, config.dataset),
            "steps": step,
            "wall_seconds": round(wall, 1),
            "dataset": config.dataset,
            "config": config.to_dict(),
        },
    }
    if result is not None:
        protocol = EvalProtocol((result.seed,), int(result.returns.shape[1]), sample=result.sample)
        record = provenance(protocol.command(str(Path(config.out) / "final")), config.dataset)
        card["metrics"] = measured_metrics(protocol, [result], [], record)
    return card


def rank_spread(policy: nn.Module) -> float:
    """Largest difference of any parameter or buffer between the DDP ranks (0.0 when in sync).

    Collective: every rank must call it. The momentum key routers are updated outside DDP's
    gradient sync, so this is what shows that every rank really trains the same model."""
    flat = torch.cat([t.detach().reshape(-1).double() for t in (*policy.parameters(), *policy.buffers())])
    low, high = flat.clone(), flat.clone()  # (P,) float64
    dist.all_reduce(low, op=dist.ReduceOp.MIN)
    dist.all_reduce(high, op=dist.ReduceOp.MAX)
    return float((high - low).max())


def train(
    config: TrainConfig, resume: bool = True, progress: bool = True, stop_after: int | None = None
) -> TrainResult:
    """Run (or resume) a training run; returns where the final model went.

    ``stop_after``: leave the run after this many steps with a resumable checkpoint in OUT/last
    (time-boxed runs on a shared CPU); the schedule still follows ``config.steps``."""
    distributed = int(os.environ.get("WORLD_SIZE", "1")) > 1
    if distributed:
        dist.init_process_group("nccl" if config.device.startswith("cuda") else "gloo")
    rank = dist.get_rank() if distributed else 0
    if config.threads:
        torch.set_num_threads(config.threads)
    out = Path(config.out)
    dataset = load_dataset(config.dataset, split="train")
    torch.manual_seed(config.seed)
    policy = T2MIRPolicy(policy_config(config, dataset)).to(config.device)
    set_sparse_dispatch(policy, config.expert_dispatch == "sparse")
    optimizer = build_optimizer(policy, config)
    rng = np.random.default_rng(config.seed + 9973 * rank)
    start = 0
    if resume and (out / "last").exists():
        start = load_training_state(out / "last", policy, optimizer, rng)
    module: nn.Module = _LossModule(policy)
    if distributed:
        module = DistributedDataParallel(module, find_unused_parameters=True)
    # Rank 0 logs, evaluates and saves the model: `writer is not None` marks it where the writer is used.
    writer = SummaryWriter(str(out / "tb")) if rank == 0 else None
    test_tasks = task_split(dataset.env_id, dataset.manifest.get("split_seed", 0))[1]
    began = time.perf_counter()
    bar = tqdm(total=config.steps, initial=start, desc=f"train {out.name}", disable=not progress or rank != 0)
    losses: list[tuple[int, float]] = []
    result = None
    end = min(config.steps, stop_after) if stop_after is not None else config.steps
    policy.train()
    for step in range(start, end):
        batch, keys = draw_batches(dataset, config, rng)
        lr = _set_lr(optimizer, config, step)
        loss, grad_norm = optimisation_step(module, policy, optimizer, batch, keys, config.grad_clip)
        done = step + 1
        if writer is not None and (done % config.log_every == 0 or done == config.steps):
            _log_step(writer, loss, lr, grad_norm, done)
            losses.append((done, loss.total.item()))
            bar.set_postfix(loss=f"{losses[-1][1]:.4f}")
        bar.update(1)
        if rank == 0 and done % config.checkpoint_every == 0 and done < config.steps:
            save_training_state(out / "last", policy, optimizer, done, rng, _card(config, done, 0, None))
        if writer is not None and config.eval_every and done % config.eval_every == 0 and done < config.steps:
            result = evaluate(
                policy, test_tasks, config.eval_episodes, seed=config.seed, sample=config.eval_sample
            )
            writer.add_scalar("eval/last_episode_return", result.last_mean, done)
            writer.add_scalar("eval/best_episode_return", result.best_mean, done)
            policy.train()
    bar.close()
    wall = time.perf_counter() - began
    if distributed:
        spread = rank_spread(policy)
        if spread > 0:
            raise RuntimeError(f"DDP ranks diverged: parameters differ by up to {spread:.3g} between ranks")
        if rank == 0:
            print(f"ranks in sync: {dist.get_world_size()} ranks hold identical parameters after step {end}")
    if end < config.steps:
        if writer is not None:
            save_training_state(out / "last", policy, optimizer, end, rng, _card(config, end, wall, None))
            writer.close()
        if distributed:
            dist.destroy_process_group()
        return TrainResult(out / "last", end, wall, losses, None)
    if writer is not None:
        if config.final_eval:
            result = evaluate(
                policy,
                test_tasks,
                config.eval_episodes,
                seed=config.seed,
                sample=config.eval_sample,
                progress=progress,
            )
            writer.add_scalar("eval/last_episode_return", result.last_mean, config.steps)
            result.write(out / "eval.json", out / "eval.csv")
        save_training_state(
            out / "last", policy, optimizer, config.steps, rng, _card(config, config.steps, wall, result)
        )
        policy.save_pretrained(out / "final", card=_card(config, config.steps, wall, result))
        writer.close()
    if distributed:
        dist.barrier()
        dist.destroy_process_group()
    return TrainResult(out / "final", config.steps, wall, losses, result)
