"""Resumable training state: model checkpoint + optimiser + RNG states, written atomically.

``<out>/last/`` holds a regular checkpoint directory (so it can be served or evaluated as is) plus
``trainer.pt`` (optimiser and scheduler state, loaded with ``weights_only=True``) and
``trainer.json`` (step, numpy and torch RNG states).
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import torch

from t2mir_model import T2MIRPolicy

TRAINER_TENSORS, TRAINER_JSON = "trainer.pt", "trainer.json"


def save_training_state(
    directory: Path,
    policy: T2MIRPolicy,
    optimizer: torch.optim.Optimizer,
    step: int,
    rng: np.random.Generator,
    card: dict[str, Any],
) -> None:
    """Write the state of an interrupted-or-not run to ``directory`` (replaced as a whole)."""
    tmp = directory.with_name(directory.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    policy.save_pretrained(tmp, card=card)
    torch.save(
        {"optimizer": optimizer.state_dict(), "torch_rng": torch.get_rng_state()}, tmp / TRAINER_TENSORS
    )
    (tmp / TRAINER_JSON).write_text(json.dumps({"step": step, "numpy_rng": rng.bit_generator.state}))
    old = directory.with_name(directory.name + ".old")
    shutil.rmtree(old, ignore_errors=True)
    if directory.exists():
        os.replace(directory, old)
    os.replace(tmp, directory)
    shutil.rmtree(old, ignore_errors=True)


def load_training_state(
    directory: Path, policy: T2MIRPolicy, optimizer: torch.optim.Optimizer, rng: np.random.Generator
) -> int:
    """Restore policy weights, optimiser and RNGs from ``directory``; returns the next step."""
    saved = T2MIRPolicy.from_pretrained(directory)
    if saved.config != policy.config:
        raise ValueError(f"{directory}: the saved run has a different model config; refusing to resume")
    policy.load_state_dict(saved.state_dict())
    tensors = torch.load(directory / TRAINER_TENSORS, weights_only=True)
    optimizer.load_state_dict(tensors["optimizer"])
    torch.set_rng_state(tensors["torch_rng"])
    meta = json.loads((directory / TRAINER_JSON).read_text())
    rng.bit_generator.state = meta["numpy_rng"]
    return int(meta["step"])
