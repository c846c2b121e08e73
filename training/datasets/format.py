"""On-disk format of a learning-history dataset (schema version 1), shared by writer and reader.

A dataset is a directory::

    DIR/manifest.json      # what was collected, with which budget, one entry per task
    DIR/train_003.npz      # one numpy archive per task (``np.load(..., allow_pickle=False)``)
    DIR/collect.log        # log of the collection run (not read back)

Arrays in a task file, ``E`` episodes in history order, ``T`` = the environment's episode length;
episodes that end early (Walker-Param may terminate) are padded with zeros after ``lengths[e]``:

=============  ======================================  =============================================
name           shape / dtype                            meaning
=============  ======================================  =============================================
observations   (E, T, obs_dim) float32                  s_t, the state the action was chosen in
actions        (E, T) int64 | (E, T, act_dim) float32   a_t as executed (discrete id / env units)
rewards        (E, T) float32                           r_t received after a_t
lengths        (E,) int64                               valid steps of each episode (1..T)
returns        (E,) float32                             sum of the episode's rewards
labels         like actions                             DPT expert action for s_t
snapshot       (E,) int64                               policy snapshot that produced the episode
meta           () str (JSON), optional                  the task's manifest entry and run settings
=============  ======================================  =============================================

Every write goes to a temporary name in the same directory and is ``os.replace``'d into place, so a
reader never sees half of a file under its final name.
"""

from __future__ import annotations

import hashlib
import json
import os
import zipfile
from pathlib import Path
from typing import Any

import numpy as np

SCHEMA_VERSION = 1
MANIFEST_NAME = "manifest.json"
LOG_NAME = "collect.log"
TMP_SUFFIX = ".tmp"
ARRAY_NAMES = ("observations", "actions", "rewards", "lengths", "returns", "labels", "snapshot")
META_NAME = "meta"


class DatasetError(ValueError):
    """A dataset directory or file is missing, corrupt, or does not match what the reader expects."""


def task_file_name(split: str, index: int) -> str:
    """``train_003.npz``: the file holding the learning history of task ``split:index``."""
    return f"{split}_{int(index):03d}.npz"


def _fsync_replace(tmp: Path, final: Path) -> None:
    os.replace(tmp, final)
    try:  # make the rename itself durable; not every filesystem allows opening a directory
        fd = os.open(final.parent, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def temp_path(final: Path) -> Path:
    """A temporary sibling of ``final`` unique to this process (``*.tmp`` is never read as data)."""
    return final.with_name(f".{final.name}.{os.getpid()}{TMP_SUFFIX}")


def write_bytes_atomic(path: str | Path, data: bytes) -> None:
    """Write ``data`` to ``path`` through a temporary file and an atomic rename."""
    final = Path(path)
    tmp = temp_path(final)
    try:
        with open(tmp, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        _fsync_replace(tmp, final)
    finally:
        if tmp.exists():
            tmp.unlink()


def manifest_text(manifest: dict[str, Any]) -> str:
    """JSON of a manifest, indented, with each task entry on a single line (diff-friendly)."""
    head = json.dumps({k: v for k, v in manifest.items() if k != "tasks"}, indent=1)
    tasks = ",\n".join("  " + json.dumps(t) for t in manifest.get("tasks", []))
    return f'{head[:-2]},\n "tasks": [\n{tasks}\n ]\n}}\n'


def write_manifest(path: str | Path, manifest: dict[str, Any]) -> None:
    """Atomically (re)write the manifest (after every finished task)."""
    write_bytes_atomic(path, manifest_text(manifest).encode())


def write_task_file(path: str | Path, arrays: dict[str, np.ndarray], meta: dict | None = None) -> str:
    """Atomically write one task's arrays as a compressed ``.npz``; returns the file's sha256.

    ``meta`` (JSON) is stored as the extra 0-d string array ``meta``: it makes each file
    self-describing, so a resumed run can rebuild the manifest from the files alone.
    """
    missing = [name for name in ARRAY_NAMES if name not in arrays]
    if missing:
        raise ValueError(f"task arrays lack {missing}")
    payload = {name: np.ascontiguousarray(arrays[name]) for name in ARRAY_NAMES}
    if meta is not None:
        payload[META_NAME] = np.array(json.dumps(meta))
    final = Path(path)
    tmp = temp_path(final)
    try:
        with open(tmp, "wb") as fh:
            np.savez_compressed(fh, **payload)  # type: ignore[arg-type]  # the stub lets **kwds reach allow_pickle
            fh.flush()
            os.fsync(fh.fileno())
        digest = sha256_file(tmp)
        _fsync_replace(tmp, final)
    finally:
        if tmp.exists():
            tmp.unlink()
    return digest


def sha256_file(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def read_task_file(path: str | Path) -> dict[str, np.ndarray]:
    """Load every array of a task file, turning any decoding failure into a :class:`DatasetError`."""
    path = Path(path)
    if not path.is_file():
        raise DatasetError(f"{path}: task file is missing")
    try:
        with np.load(path, allow_pickle=False) as npz:
            missing = [name for name in ARRAY_NAMES if name not in npz.files]
            if missing:
                raise DatasetError(f"{path}: arrays {missing} are missing (found {sorted(npz.files)})")
            return {name: npz[name] for name in ARRAY_NAMES}
    except DatasetError:
        raise
    except (zipfile.BadZipFile, EOFError, OSError, ValueError, KeyError) as exc:
        raise DatasetError(
            f"{path}: cannot be read as a numpy archive ({type(exc).__name__}: {exc})"
        ) from exc


def read_task_meta(path: str | Path) -> dict:
    """The JSON ``meta`` record of a task file (only that member is decompressed)."""
    path = Path(path)
    try:
        with np.load(path, allow_pickle=False) as npz:
            if META_NAME not in npz.files:
                raise DatasetError(f"{path}: field '{META_NAME}' is missing")
            return json.loads(str(npz[META_NAME]))
    except DatasetError:
        raise
    except (zipfile.BadZipFile, EOFError, OSError, ValueError, KeyError) as exc:
        raise DatasetError(
            f"{path}: cannot be read as a numpy archive ({type(exc).__name__}: {exc})"
        ) from exc


def check_task_arrays(
    arrays: dict[str, np.ndarray],
    *,
    where: str,
    obs_dim: int,
    horizon: int,
    action_kind: str,
    act_dim: int,
    n_episodes: int | None = None,
) -> None:
    """Validate shapes, dtypes and invariants of one task's arrays; errors name ``where`` and the field."""

    def fail(field: str, msg: str) -> None:
        raise DatasetError(f"{where}: field '{field}': {msg}")

    lengths = arrays["lengths"]
    if lengths.ndim != 1 or lengths.dtype != np.int64:
        fail("lengths", f"expected (E,) int64, got {lengths.shape} {lengths.dtype}")
    n = lengths.shape[0]
    if n == 0:
        fail("lengths", "the file holds no episodes")
    if n_episodes is not None and n != n_episodes:
        fail("lengths", f"{n} episodes in the file but the manifest says {n_episodes}")
    if lengths.min() < 1 or lengths.max() > horizon:
        fail("lengths", f"episode lengths must lie in [1, {horizon}], got [{lengths.min()}, {lengths.max()}]")
    act_shape = (n, horizon) if action_kind == "discrete" else (n, horizon, act_dim)
    act_dtype = np.int64 if action_kind == "discrete" else np.float32
    expected = {
        "observations": ((n, horizon, obs_dim), np.float32),
        "actions": (act_shape, act_dtype),
        "labels": (act_shape, act_dtype),
        "rewards": ((n, horizon), np.float32),
        "returns": ((n,), np.float32),
        "snapshot": ((n,), np.int64),
    }
    for field, (shape, dtype) in expected.items():
        arr = arrays[field]
        if arr.shape != shape:
            fail(field, f"expected shape {shape}, got {arr.shape}")
        if arr.dtype != dtype:
            fail(field, f"expected dtype {np.dtype(dtype).name}, got {arr.dtype}")
        if arr.dtype.kind == "f" and not np.isfinite(arr).all():
            fail(field, "contains NaN or infinite values")
    sums = arrays["rewards"].sum(axis=1, dtype=np.float64)
    tol = 1e-3 * (1.0 + np.abs(sums))
    if np.any(np.abs(sums - arrays["returns"]) > tol):
        fail("returns", "does not equal the sum of each episode's rewards")
    if np.any(np.diff(arrays["snapshot"]) < 0):
        fail("snapshot", "snapshot indices must be non-decreasing along the history")
