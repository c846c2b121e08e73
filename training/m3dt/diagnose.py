"""Training-set diagnostics of M3DT checkpoints: what each stage adds, on the same batches.

    python -m training.m3dt.diagnose [--dataset data/m3dt] [--batches 40] CKPT [CKPT ...]

For every checkpoint, the mean action loss over fixed training batches (seed 0; the same windows for
every checkpoint) of the backbone alone (stage 1's model), of the backbone with each task routed to
its own group's expert (the grouping on the card: what stage 2 trained, an upper bound for the
routers), and of the soft mixture the routers choose (the served model), plus the mean entropy of
each block's router weights (nats; uniform over E experts is log E). A dense checkpoint has the
first only.
"""

from __future__ import annotations

import argparse
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from t2mir_model import M3DTBatch, M3DTPolicy, read_card

from .dataset import SuiteData, load_suite, sample_batch


@dataclass(frozen=True)
class StageLosses:
    """One checkpoint's mean losses and router entropies over the diagnostic batches."""

    checkpoint: str
    backbone: float
    group_experts: float | None  # each task through its own group's expert; None for dense
    soft: float | None  # the routers' soft mixture; None for dense
    entropy: list[float]  # per block; empty for dense


def fixed_batches(
    data: SuiteData, policy: M3DTPolicy, n: int, batch_size: int = 32
) -> list[tuple[np.ndarray, M3DTBatch]]:
    """``n`` training batches drawn with seed 0: (task of each row, batch)."""
    rng = np.random.default_rng(0)
    out = []
    for _ in range(n):
        tasks = rng.integers(0, data.n_tasks, size=batch_size)
        out.append((tasks, sample_batch(data, tasks, policy.config, rng)))
    return out


def stage_losses(
    directory: str | Path, data: SuiteData, batches: list[tuple[np.ndarray, M3DTBatch]]
) -> StageLosses:
    """The diagnostics of one checkpoint on ``batches`` (tasks indexed as in ``data``)."""
    policy = M3DTPolicy.from_pretrained(directory).eval()
    card = read_card(directory)
    group_of = {
        name: g for g, names in enumerate((card.get("grouping") or {}).get("groups", [])) for name in names
    }
    groups = np.array([group_of.get(t["name"], -1) for t in data.tasks])
    sums = {"backbone": 0.0, "group_experts": 0.0, "soft": 0.0}
    entropy = np.zeros(policy.config.n_layers)
    tokens = 0.0
    moe = policy.config.moe
    with torch.no_grad():
        for tasks, batch in batches:
            sums["backbone"] += float(policy.loss(batch, use_moe=False)[0])
            if not moe:
                continue
            if group_of:
                sums["group_experts"] += float(
                    policy.loss(batch, expert_ids=torch.as_tensor(groups[tasks]))[0]
                )
            loss, output = policy.loss(batch)
            sums["soft"] += float(loss)
            for r in output.routing:
                entropy[r.layer] += float(r.entropy)
            tokens += float(output.routing[0].tokens)
    n = len(batches)
    return StageLosses(
        checkpoint=str(directory),
        backbone=sums["backbone"] / n,
        group_experts=sums["group_experts"] / n if moe and group_of else None,
        soft=sums["soft"] / n if moe else None,
        entropy=[float(e / tokens) for e in entropy] if moe else [],
    )


def main(argv: list[str] | None = None) -> int:
    """Print (and with ``--json`` write) the diagnostics of each checkpoint."""
    parser = argparse.ArgumentParser(
        prog="python -m training.m3dt.diagnose", description=__doc__.split("\n")[0]
    )
    parser.add_argument("checkpoints", nargs="+")
    parser.add_argument("--dataset", default="data/m3dt")
    parser.add_argument("--batches", type=int, default=40)
    parser.add_argument("--json", default=None, help="write the results here")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    first = M3DTPolicy.from_pretrained(args.checkpoints[0])
    data = load_suite(args.dataset, first.config)
    batches = fixed_batches(data, first, args.batches)
    results = [stage_losses(c, data, batches) for c in args.checkpoints]
    for r in results:
        parts = [f"backbone {r.backbone:.5f}"]
        if r.group_experts is not None:
            parts.append(f"group experts {r.group_experts:.5f}")
        if r.soft is not None:
            entropy = " ".join(f"{e:.2f}" for e in r.entropy)
            parts += [f"soft {r.soft:.5f}", f"router entropy per block [{entropy}]"]
        print(f"{r.checkpoint}: " + ", ".join(parts))
    if args.json:
        Path(args.json).write_text(json.dumps([r.__dict__ for r in results], indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
