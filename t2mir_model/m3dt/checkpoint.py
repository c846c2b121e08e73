"""M3DT checkpoint directories: the shared layout plus the task prompts shipped with the model.

Files: ``config.json`` (`M3DTConfig.to_dict()` with ``"family": "m3dt"``), ``model.safetensors``,
``card.json`` / ``README.md`` (the card: tasks, training command, data manifest hash, measured
numbers, the stage-2 task grouping), and ``prompts.safetensors``: one `TaskPrompt` per task name,
so a session can name its task instead of sending a demonstration. Never unpickles.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file

from ..checkpoint import (
    CARD_FILE,
    CONFIG_FILE,
    FAMILY_FIELD,
    M3DT_FAMILY,
    README_FILE,
    CheckpointError,
    _atomic_write_text,
    _config_data,
    _render_readme,
    load_weights,
    read_card,
    save_weights,
)
from ..t2mir.configuration import ConfigError
from .configuration import M3DTConfig
from .prompt import PromptError, TaskPrompt

if TYPE_CHECKING:
    from .modeling import M3DTPolicy

PROMPTS_FILE = "prompts.safetensors"
_PROMPT_FIELDS = ("obs", "actions", "returns_to_go", "timesteps")


def m3dt_variant(config: M3DTConfig) -> str:
    """'M3DT-8' (8 experts, soft), 'M3DT-8 top-2', or 'Prompt-DT' for a dense config."""
    if not config.moe:
        return "Prompt-DT"
    return f"M3DT-{config.n_experts}" + (f" top-{config.top_k}" if config.top_k else "")


def save_m3dt(
    policy: M3DTPolicy, directory: str | Path, card: dict[str, Any], prompts: Mapping[str, TaskPrompt]
) -> Path:
    """Write an M3DT checkpoint directory (each file replaced atomically) and return its path."""
    path = Path(directory)
    config = policy.config
    for name, prompt in prompts.items():
        prompt.check(config)
        if not name or "\n" in name:
            raise ValueError(f"bad task name {name!r}")
    save_weights(policy, path)
    _atomic_write_text(
        path / CONFIG_FILE, json.dumps({FAMILY_FIELD: M3DT_FAMILY, **config.to_dict()}, indent=2) + "\n"
    )
    names = sorted(prompts)
    tensors = {
        f"{i}.{f}": getattr(prompts[n], f).contiguous() for i, n in enumerate(names) for f in _PROMPT_FIELDS
    }
    fd, tmp = tempfile.mkstemp(dir=path, prefix=f".{PROMPTS_FILE}.")
    os.close(fd)
    save_file(tensors, tmp, metadata={"tasks": json.dumps(names)})
    os.replace(tmp, path / PROMPTS_FILE)
    full = {
        "name": card.get("name", path.name),
        "version": card.get("version", "1"),
        "family": M3DT_FAMILY,
        "env_id": config.env_id,
        "backbone": config.backbone,
        "variant": m3dt_variant(config),
        "parameters": policy.num_parameters(),
        "active_parameters": policy.active_parameters(),
        "tasks": names,
        "created": card.get("created", datetime.now(UTC).isoformat(timespec="seconds")),
        **{k: v for k, v in card.items() if k not in ("name", "version", "created")},
    }
    _atomic_write_text(path / CARD_FILE, json.dumps(full, indent=2) + "\n")
    _atomic_write_text(path / README_FILE, _render_readme(full))
    return path


def read_m3dt_config(directory: str | Path) -> M3DTConfig:
    """Parse and validate ``config.json`` of an M3DT checkpoint directory."""
    path = Path(directory)
    data = _config_data(path)
    family = data.pop(FAMILY_FIELD, None)
    if family != M3DT_FAMILY:
        raise CheckpointError(f"{path / CONFIG_FILE} holds a {family or 't2mir'!r} model, not an M3DT one")
    try:
        return M3DTConfig.from_dict(data)
    except (ConfigError, TypeError) as exc:
        raise CheckpointError(f"{path / CONFIG_FILE} is incompatible with this build: {exc}") from exc


def load_m3dt(cls: type[M3DTPolicy], directory: str | Path, map_location: str | torch.device) -> M3DTPolicy:
    """Build ``cls`` from an M3DT checkpoint directory in eval mode."""
    path = Path(directory)
    policy = cls(read_m3dt_config(path))
    read_card(path)
    load_weights(policy, path, map_location)
    return policy.to(map_location).eval()


def load_prompts(directory: str | Path) -> dict[str, TaskPrompt]:
    """Task name -> prompt shipped with an M3DT checkpoint ({} when it ships none); each checked
    against the checkpoint's config."""
    path = Path(directory)
    config = read_m3dt_config(path)
    file = path / PROMPTS_FILE
    if not file.exists():
        return {}
    try:
        with safe_open(str(file), "pt") as f:
            names = json.loads((f.metadata() or {}).get("tasks", "[]"))
            prompts = {
                name: TaskPrompt(**{field: f.get_tensor(f"{i}.{field}") for field in _PROMPT_FIELDS})
                for i, name in enumerate(names)
            }
    except (SafetensorError, OSError, ValueError, json.JSONDecodeError) as exc:
        raise CheckpointError(f"{file} is corrupt ({exc})") from exc
    for name, prompt in prompts.items():
        try:
            prompt.check(config)
        except PromptError as exc:
            raise CheckpointError(f"{file}: prompt of {name!r}: {exc}") from exc
    return prompts
