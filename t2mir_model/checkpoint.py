"""Checkpoint directories: safetensors weights + JSON config + model card. Never unpickles.

Layout of a checkpoint directory::

    config.json        the family's config (T2MIRConfig.to_dict()); ``family`` names the model family
                       when it is not T2MIR (absent in T2MIR checkpoints)
    model.safetensors  state dict (tensors only)
    card.json          env id, spaces, normalisation, training command, measured metrics, version
    README.md          the card rendered for people
"""

from __future__ import annotations

import json
import os
import tempfile
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file, save_file

from .t2mir.configuration import ConfigError, T2MIRConfig

if TYPE_CHECKING:
    from .t2mir.modeling import T2MIRPolicy

CHECKPOINT_FORMAT = "t2mir-checkpoint"
CHECKPOINT_FORMAT_VERSION = 2
"""2: expert first layers stored (d, E, hidden) instead of (E, d, hidden); version 1 is upgraded on load."""
CONFIG_FILE, WEIGHTS_FILE, CARD_FILE, README_FILE = (
    "config.json",
    "model.safetensors",
    "card.json",
    "README.md",
)


FAMILY_FIELD = "family"
"""Key of ``config.json`` naming the model family that reads the checkpoint."""
T2MIR_FAMILY = "t2mir"
"""The family of a checkpoint whose config names none (every T2MIR checkpoint)."""
M3DT_FAMILY = "m3dt"
"""The M3DT family (`t2mir_model.m3dt`)."""


class CheckpointError(RuntimeError):
    """A checkpoint directory is missing, corrupt or incompatible with this build."""


def _atomic_write_text(path: Path, text: str) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    with os.fdopen(fd, "w") as f:
        f.write(text)
    os.replace(tmp, path)


def build_card(policy: T2MIRPolicy, card: dict[str, Any]) -> dict[str, Any]:
    """The stored model card: the caller's fields plus what the config says about spaces and inputs."""
    config = policy.config
    return {
        "format": CHECKPOINT_FORMAT,
        "format_version": CHECKPOINT_FORMAT_VERSION,
        "name": card.get("name", Path(config.env_id or "t2mir").name),
        "version": card.get("version", "1"),
        "env_id": config.env_id,
        "backbone": config.backbone,
        "variant": variant_name(config),
        "observation": {"dim": config.observation.dim},
        "action": {k: v for k, v in vars(config.action).items() if v is not None},
        "normalisation": {
            "obs_mean": config.observation.mean,
            "obs_std": config.observation.std,
            "reward_scale": config.reward_scale,
        },
        "parameters": policy.num_parameters(),
        "created": card.get("created", datetime.now(UTC).isoformat(timespec="seconds")),
        **{k: v for k, v in card.items() if k not in ("name", "version", "created")},
    }


def variant_name(config: T2MIRConfig) -> str:
    """'T2MIR-AD', 'AD', 'T2MIR-DPT w/o task MoE', ... for a config."""
    base = config.backbone.upper()
    moe = config.moe
    if moe.token_moe and moe.task_moe:
        return f"T2MIR-{base}"
    if moe.token_moe:
        return f"T2MIR-{base} w/o task MoE"
    if moe.task_moe:
        return f"T2MIR-{base} w/o token MoE"
    return base


def _render_readme(card: dict[str, Any]) -> str:
    lines = [
        f"# {card['name']} ({card['variant']})",
        "",
        f"- environment: `{card['env_id']}`",
        f"- version: {card['version']}",
        f"- parameters: {card['parameters']:,}",
    ]
    if "training" in card:
        lines.append(f"- training: `{json.dumps(card['training'])}`")
    if "metrics" in card:
        lines += ["", "## Measured", "", "```json", json.dumps(card["metrics"], indent=2), "```"]
    return "\n".join(lines) + "\n"


def save_weights(model: torch.nn.Module, path: Path) -> None:
    """Write ``model.safetensors`` of a checkpoint directory (any family), replaced atomically."""
    path.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().to("cpu").contiguous() for k, v in model.state_dict().items()}
    fd, tmp = tempfile.mkstemp(dir=path, prefix=f".{WEIGHTS_FILE}.")
    os.close(fd)
    save_file(
        state, tmp, metadata={"format": CHECKPOINT_FORMAT, "format_version": str(CHECKPOINT_FORMAT_VERSION)}
    )
    os.replace(tmp, path / WEIGHTS_FILE)


def save_checkpoint(policy: T2MIRPolicy, directory: str | Path, card: dict[str, Any]) -> Path:
    """Write a checkpoint directory (files replaced atomically) and return its path."""
    path = Path(directory)
    save_weights(policy, path)
    _atomic_write_text(path / CONFIG_FILE, json.dumps(policy.config.to_dict(), indent=2) + "\n")
    full_card = build_card(policy, card)
    _atomic_write_text(path / CARD_FILE, json.dumps(full_card, indent=2) + "\n")
    _atomic_write_text(path / README_FILE, _render_readme(full_card))
    return path


def _config_data(directory: str | Path) -> dict[str, Any]:
    """The parsed ``config.json`` of a checkpoint directory, as stored."""
    path = Path(directory)
    if not path.is_dir():
        raise CheckpointError(f"checkpoint directory {path} does not exist")
    try:
        data = json.loads((path / CONFIG_FILE).read_text())
    except FileNotFoundError as exc:
        raise CheckpointError(f"{path / CONFIG_FILE} is missing: not a t2mir checkpoint") from exc
    except json.JSONDecodeError as exc:
        raise CheckpointError(f"{path / CONFIG_FILE} is not valid JSON ({exc})") from exc
    if not isinstance(data, dict):
        raise CheckpointError(f"{path / CONFIG_FILE} is not a JSON object")
    return data


def read_family(directory: str | Path) -> str:
    """The model family of a checkpoint directory: its config's ``family``, T2MIR when absent."""
    return str(_config_data(directory).get(FAMILY_FIELD, T2MIR_FAMILY))


def read_config(directory: str | Path) -> T2MIRConfig:
    """Parse and validate ``config.json`` of a T2MIR checkpoint directory."""
    path = Path(directory)
    data = _config_data(path)
    family = data.pop(FAMILY_FIELD, T2MIR_FAMILY)
    if family != T2MIR_FAMILY:
        raise CheckpointError(f"{path / CONFIG_FILE} holds a {family!r} model, not a T2MIR one")
    try:
        return T2MIRConfig.from_dict(data)
    except ConfigError as exc:
        raise CheckpointError(f"{path / CONFIG_FILE} is incompatible with this build: {exc}") from exc


def read_card(directory: str | Path) -> dict[str, Any]:
    """The model card of a checkpoint directory ({} when absent)."""
    path = Path(directory) / CARD_FILE
    if not path.exists():
        return {}
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise CheckpointError(f"{path} is not valid JSON ({exc})") from exc


def update_card(directory: str | Path, fields: dict[str, Any]) -> dict[str, Any]:
    """Merge ``fields`` into a checkpoint's card (e.g. new measured metrics) and re-render its README."""
    path = Path(directory)
    card = {**read_card(path), **fields}
    if not card:
        raise CheckpointError(f"{path / CARD_FILE} is missing")
    _atomic_write_text(path / CARD_FILE, json.dumps(card, indent=2) + "\n")
    _atomic_write_text(path / README_FILE, _render_readme(card))
    return card


def upgrade_state(state: dict[str, torch.Tensor], version: int) -> dict[str, torch.Tensor]:
    """Bring a state dict written by an older checkpoint format to the current layout."""
    if version > CHECKPOINT_FORMAT_VERSION:
        raise CheckpointError(
            f"checkpoint format version {version} is newer than this build's {CHECKPOINT_FORMAT_VERSION}"
        )
    if version < 2:  # expert banks: w1 (E, d, hidden) -> (d, E, hidden)
        state = {
            k: v.permute(1, 0, 2).contiguous() if k.endswith("experts.w1") else v for k, v in state.items()
        }
    return state


def _format_version(weights: Path) -> int:
    with safe_open(str(weights), "pt") as f:
        metadata = f.metadata() or {}
    try:
        return int(metadata.get("format_version", "1"))
    except ValueError as exc:
        raise CheckpointError(f"{weights}: unreadable format_version {metadata['format_version']!r}") from exc


def load_checkpoint(
    cls: type[T2MIRPolicy], directory: str | Path, map_location: str | torch.device
) -> T2MIRPolicy:
    """Build ``cls`` from a checkpoint directory, refusing missing, extra or mis-shaped tensors."""
    path = Path(directory)
    config = read_config(path)
    read_card(path)
    policy = cls(config)
    load_weights(policy, path, map_location)
    return policy.to(map_location).eval()


def load_weights(model: torch.nn.Module, directory: Path, map_location: str | torch.device) -> None:
    """Load ``model.safetensors`` of a checkpoint directory into ``model`` (any family), refusing
    missing, extra or mis-shaped tensors with a CheckpointError that names them."""
    path = directory
    weights = path / WEIGHTS_FILE
    if not weights.exists():
        raise CheckpointError(f"{weights} is missing")
    try:
        state = load_file(str(weights), device=str(map_location))
        version = _format_version(weights)
    except (SafetensorError, OSError, ValueError) as exc:
        raise CheckpointError(f"{weights} is corrupt or not a safetensors file ({exc})") from exc
    state = upgrade_state(state, version)
    expected = model.state_dict()
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    mismatched = sorted(k for k in set(expected) & set(state) if expected[k].shape != state[k].shape)
    if missing or unexpected or mismatched:
        details = []
        if missing:
            details.append(f"missing tensors {missing[:5]}")
        if unexpected:
            details.append(f"unexpected tensors {unexpected[:5]}")
        if mismatched:
            details.append(
                "shape mismatch "
                + ", ".join(
                    f"{k}: stored {tuple(state[k].shape)} vs config {tuple(expected[k].shape)}"
                    for k in mismatched[:5]
                )
            )
        raise CheckpointError(f"{weights} does not match {path / CONFIG_FILE}: " + "; ".join(details))
    model.load_state_dict(state)
