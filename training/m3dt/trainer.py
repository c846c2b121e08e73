"""``t2mir train`` for M3DT: the three stages, resumable, logged to TensorBoard.

1. **Backbone** (``backbone_steps``): the whole Prompt-DT without the MoE branch, on all tasks
   (every batch draws its tasks uniformly, so every task is seen at the same rate).
2. **Experts** (``expert_steps``): backbone frozen; tasks are grouped (`training.m3dt.grouping`,
   one group per expert) and expert e is trained on its group's tasks only (each row of a batch is
   routed to its task's expert), from a zero output layer (``expert_zero_init``). Routers stay
   untouched.
3. **Routers** (``router_steps``): backbone and experts frozen; the routers learn the soft mixture
   on all tasks, at ``router_lr`` held after warmup (``router_lr_decay`` off; stages 1 and 2
   decay theirs).

A dense baseline (``model.moe = false``) runs stage 1 only. Frozen parameters are outside the
stage's optimiser and have ``requires_grad`` off, so they stay bit-identical. ``OUT/last`` holds a
resumable state (checkpoint + ``trainer.pt`` optimiser state + ``trainer.json`` step, RNG, grouping);
``OUT/final`` the final checkpoint with the shipped prompts and a card (command, dataset hash,
grouping, per-task target returns).
"""

from __future__ import annotations

import json
import math
import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from t2mir_model import EXPERTS, ROUTER, M3DTPolicy, read_card

from .config import M3DTTrainConfig
from .dataset import SuiteData, load_suite, sample_batch, shipped_prompt
from .grouping import gradient_groups, random_groups

TRAINER_TENSORS, TRAINER_JSON = "trainer.pt", "trainer.json"
STAGES = ("backbone", "experts", "routers")


@dataclass
class M3DTTrainResult:
    """Where the run left its model (``OUT/final``, or ``OUT/last`` when stopped early) and what it did."""

    final_dir: Path
    steps: int
    wall_seconds: float
    groups: list[int] | None


def stage_of(step: int, cfg: M3DTTrainConfig) -> tuple[int, int, int]:
    """(stage index 0..2, step inside the stage, the stage's length) of a global step."""
    bounds = [cfg.backbone_steps, cfg.expert_steps, cfg.router_steps]
    for i, n in enumerate(bounds):
        if step < n:
            return i, step, n
        step -= n
    raise ValueError("step past the end of the run")


def part_of(name: str) -> str:
    """'routers', 'experts' or 'backbone': which stage trains a parameter."""
    if ROUTER in name:
        return "routers"
    if EXPERTS in name:
        return "experts"
    return "backbone"


def set_stage(policy: M3DTPolicy, stage: int) -> list[nn.Parameter]:
    """Freeze every parameter outside ``stage``'s part; returns the trainable ones."""
    trainable = []
    for name, p in policy.named_parameters():
        p.requires_grad_(part_of(name) == STAGES[stage])
        if p.requires_grad:
            trainable.append(p)
    return trainable


def make_optimizer(params: list[nn.Parameter], cfg: M3DTTrainConfig) -> torch.optim.Optimizer:
    """AdamW with weight decay on matrices only."""
    decay = [p for p in params if p.ndim >= 2]
    other = [p for p in params if p.ndim < 2]
    groups = [{"params": decay, "weight_decay": cfg.weight_decay}, {"params": other, "weight_decay": 0.0}]
    return torch.optim.AdamW(groups, lr=cfg.lr, betas=(0.9, 0.95))


def lr_at(step: int, length: int, cfg: M3DTTrainConfig, stage: int) -> float:
    """A stage's learning rate: warmup, then cosine decay to 10% (stages 1 and 2, and stage 3 with
    ``router_lr_decay``) or the peak held (stage 3); stage 3's peak is ``router_lr`` when set."""
    peak = cfg.router_lr if stage == 2 and cfg.router_lr > 0 else cfg.lr
    warm = min(cfg.warmup_steps, max(1, length // 10))
    if step < warm:
        return peak * (step + 1) / warm
    if stage == 2 and not cfg.router_lr_decay:
        return peak
    progress = min(1.0, (step - warm) / max(1, length - warm))
    return peak * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * progress)))


def zero_expert_outputs(policy: M3DTPolicy) -> None:
    """Set every expert's output layer (weights and bias) to zero: the MoE branch then adds nothing
    until stage 2 trains it."""
    with torch.no_grad():
        for name, p in policy.named_parameters():
            if EXPERTS in name and name.rsplit(".", 1)[-1] in ("w2", "b2"):
                p.zero_()


def compute_groups(
    policy: M3DTPolicy, data: SuiteData, cfg: M3DTTrainConfig, rng: np.random.Generator
) -> list[int]:
    """Stage 2's task -> expert assignment by ``cfg.grouping``."""
    n_groups = policy.config.n_experts
    if cfg.grouping == "random":
        return random_groups(data.n_tasks, n_groups, cfg.seed)
    shared = [p for n, p in policy.named_parameters() if ".mlp." in n]

    def task_gradient(task: int) -> torch.Tensor:
        for p in shared:
            p.grad = None
            p.requires_grad_(True)
        for _ in range(cfg.grouping_batches):
            batch = sample_batch(data, np.full(cfg.batch_size, task), policy.config, rng)
            loss, _ = policy.loss(batch, use_moe=False)
            (loss / cfg.grouping_batches).backward()
        # (D,); a parameter the loss does not reach has a zero gradient
        grad = torch.cat([(torch.zeros_like(p) if p.grad is None else p.grad).reshape(-1) for p in shared])
        for p in shared:
            p.grad = None
        return grad.detach()

    was_training = policy.training
    policy.eval()  # no dropout noise in the gradients
    groups = gradient_groups(data.n_tasks, n_groups, task_gradient, cfg.grouping_restarts, cfg.seed)
    policy.train(was_training)
    return groups


STAGE_ONE_FIELDS = ("seed", "max_tasks", "batch_size", "backbone_steps", "lr", "weight_decay", "warmup_steps")
"""Training settings that shape stage 1, which a run starting from another's stage 1 must share."""
MOE_FIELDS = ("moe", "n_experts", "router_hidden", "top_k")
"""Model settings outside the backbone: the only ones such a run may change."""


def start_from_backbone(
    policy: M3DTPolicy, source: Path, cfg: M3DTTrainConfig, dataset_sha256: str
) -> tuple[int, dict[str, Any]]:
    """Load the backbone of ``source``, a run's resumable state at the end of its stage 1
    (`M3DTTrainConfig.backbone_from`), into ``policy``; set torch's RNG to the source's. Returns
    the step to continue from (``cfg.backbone_steps``) and the source's numpy RNG state. Refuses a
    source trained on other data or with other stage-1 or backbone settings."""
    if not (source / TRAINER_JSON).exists():
        raise ValueError(f"backbone_from: {source} holds no resumable run state ({TRAINER_JSON})")
    if source.resolve().is_relative_to(Path(cfg.out).resolve()):
        raise ValueError(f"backbone_from: {source} lies inside this run's directory {cfg.out}")
    meta = json.loads((source / TRAINER_JSON).read_text())
    if meta["stage"] != 0 or meta["step"] != cfg.backbone_steps:
        raise ValueError(
            f"backbone_from: {source} stopped at step {meta['step']} (stage {meta['stage'] + 1}); "
            f"it must hold the end of stage 1, step backbone_steps = {cfg.backbone_steps}"
        )
    card = read_card(source)
    saved, own = card["training"]["config"], cfg.to_dict()
    differ = [key for key in STAGE_ONE_FIELDS if saved.get(key) != own[key]]
    differ += [
        f"model.{key}"
        for key in own["model"]
        if key not in MOE_FIELDS and saved["model"].get(key) != own["model"][key]
    ]
    if card["data"].get("dataset_sha256") != dataset_sha256:
        differ.append("dataset (manifest hash)")
    if differ:
        raise ValueError(f"backbone_from: {source} was trained with other settings: {', '.join(differ)}")
    state = M3DTPolicy.from_pretrained(source).state_dict()
    backbone = {name: tensor for name, tensor in state.items() if part_of(name) == "backbone"}
    policy.load_state_dict(backbone, strict=False)
    torch.set_rng_state(torch.load(source / TRAINER_TENSORS, weights_only=True)["torch_rng"])
    return meta["step"], meta["numpy_rng"]


def _save_state(
    directory: Path,
    policy: M3DTPolicy,
    optimizer: torch.optim.Optimizer,
    meta: dict[str, Any],
    card: dict[str, Any],
) -> None:
    tmp = directory.with_name(directory.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    policy.save_pretrained(tmp, card=card)
    torch.save(
        {"optimizer": optimizer.state_dict(), "torch_rng": torch.get_rng_state()}, tmp / TRAINER_TENSORS
    )
    (tmp / TRAINER_JSON).write_text(json.dumps(meta))
    old = directory.with_name(directory.name + ".old")
    shutil.rmtree(old, ignore_errors=True)
    if directory.exists():
        os.replace(directory, old)
    os.replace(tmp, directory)
    shutil.rmtree(old, ignore_errors=True)


def train_m3dt(
    cfg: M3DTTrainConfig,
    resume: bool = True,
    progress: bool = True,
    stop_after: int | None = None,
    command: str = "",
) -> M3DTTrainResult:
    """Run (or resume) the three stages; returns the final checkpoint's directory."""
    from torch.utils.tensorboard import SummaryWriter
    from tqdm import tqdm

    torch.set_num_threads(cfg.threads)
    torch.manual_seed(cfg.seed)
    rng = np.random.default_rng(cfg.seed)
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    data = load_suite(cfg.dataset, cfg.model, cfg.max_tasks)
    policy = M3DTPolicy(cfg.model).train()
    if cfg.expert_zero_init:
        zero_expert_outputs(policy)  # draws no random numbers: the backbone's init is unchanged
    step, groups, saved_stage = 0, None, -1
    last = out / "last"
    opt_state = None
    if resume and (last / TRAINER_JSON).exists():
        saved = M3DTPolicy.from_pretrained(last)
        if saved.config != policy.config:
            raise ValueError(f"{last}: the saved run has a different model config; refusing to resume")
        policy.load_state_dict(saved.state_dict())
        meta = json.loads((last / TRAINER_JSON).read_text())
        step, groups, saved_stage = meta["step"], meta["groups"], meta["stage"]
        rng.bit_generator.state = meta["numpy_rng"]
        tensors = torch.load(last / TRAINER_TENSORS, weights_only=True)
        torch.set_rng_state(tensors["torch_rng"])
        opt_state = tensors["optimizer"]
    if cfg.backbone_from and step == 0:
        step, rng_state = start_from_backbone(policy, Path(cfg.backbone_from), cfg, data.manifest_sha256)
        rng.bit_generator.state = rng_state
    elif cfg.backbone_from and step < cfg.backbone_steps:
        raise ValueError(f"backbone_from: {last} holds a stage 1 of this run's own (step {step}); start over")
    base_card = {
        "training": {"command": command, "config": cfg.to_dict()},
        "data": {"dataset": cfg.dataset, "dataset_sha256": data.manifest_sha256, "n_tasks": data.n_tasks},
    }
    writer = SummaryWriter(str(out / "tb"))
    start = time.monotonic()
    end = cfg.total_steps if stop_after is None else min(cfg.total_steps, step + stop_after)
    bar = tqdm(total=cfg.total_steps, initial=step, desc="m3dt train", disable=not progress)
    stage, optimizer = -1, None
    try:
        while step < end:
            s, inner, length = stage_of(step, cfg)
            if s != stage:
                stage = s
                if stage == 1 and groups is None:
                    groups = compute_groups(policy, data, cfg, rng)
                    writer.add_text("grouping", json.dumps(_group_names(data, groups)), step)
                optimizer = make_optimizer(set_stage(policy, stage), cfg)
                if opt_state is not None and saved_stage == stage:
                    optimizer.load_state_dict(opt_state)
                opt_state = None
            assert optimizer is not None
            for g in optimizer.param_groups:
                g["lr"] = lr_at(inner, length, cfg, stage)
            tasks = rng.integers(0, data.n_tasks, size=cfg.batch_size)
            batch = sample_batch(data, tasks, cfg.model, rng)
            expert_ids = torch.as_tensor(np.asarray(groups)[tasks]) if stage == 1 and groups else None
            loss, output = policy.loss(batch, expert_ids=expert_ids, use_moe=stage > 0)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_([p for g in optimizer.param_groups for p in g["params"]], 1.0)
            optimizer.step()
            step += 1
            bar.update(1)
            if step % cfg.log_every == 0 or step == end:
                writer.add_scalar(f"loss/{STAGES[stage]}", float(loss.detach()), step)
                writer.add_scalar("lr", optimizer.param_groups[0]["lr"], step)
                if stage == 2 and output.routing:
                    r = output.routing[-1]
                    writer.add_scalar("routing/entropy_last_layer", float(r.entropy / r.tokens), step)
                bar.set_postfix(stage=STAGES[stage], loss=f"{float(loss.detach()):.4f}")
            if step % cfg.checkpoint_every == 0 or step == end:
                meta = {"step": step, "stage": stage, "groups": groups, "numpy_rng": rng.bit_generator.state}
                _save_state(last, policy, optimizer, meta, base_card)
    finally:
        bar.close()
        writer.close()
    final = out / "final"
    if step >= cfg.total_steps:
        policy.eval()
        prompts = {data.tasks[t]["name"]: shipped_prompt(data, t, cfg.model) for t in range(data.n_tasks)}
        card = {
            **base_card,
            "name": out.name,
            "grouping": {"rule": cfg.grouping, "groups": _group_names(data, groups)} if groups else None,
            "targets": {data.tasks[t]["name"]: data.target_return(t) for t in range(data.n_tasks)},
            "suite": {
                e["name"]: {k: e[k] for k in ("family", "goal", "obs_width", "act_width", "episode_steps")}
                for e in data.tasks
            },
            "wall_seconds": time.monotonic() - start,
        }
        policy.save_pretrained(final, card=card, prompts=prompts)
        return M3DTTrainResult(final, step, time.monotonic() - start, groups)
    return M3DTTrainResult(last, step, time.monotonic() - start, groups)


def _group_names(data: SuiteData, groups: list[int] | None) -> list[list[str]]:
    if not groups:
        return []
    out: list[list[str]] = [[] for _ in range(max(groups) + 1)]
    for t, g in enumerate(groups):
        out[g].append(data.tasks[t]["name"])
    return out
