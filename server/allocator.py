"""glibc malloc settings of the server process, so memory freed after a load goes back to the system.

An engine call allocates transient tensors from a few kB to tens of MB (gathered cache rows,
attention masks, activations of rebuilt contexts; their size grows with the batch and the context).
With glibc's defaults, the first large block freed raises malloc's mmap threshold to that block's
size (up to 32 MiB): from then on such blocks come from the heaps of malloc's arenas (one per
thread that contended, up to 8 per core), whose freed memory is fragmented and seldom returned.
Measured on the shipped DarkRoom checkpoint, 200 sessions took the process from 486 MB to 930 MB
and none of it came back when they were deleted (docs/memory.md).

`tune_malloc` fixes the mmap threshold (blocks of at least 128 KiB are mapped on their own and
unmapped when freed, which also fixes the trim threshold) and caps the number of arenas. It runs
at the start of ``t2mir serve``, before any worker thread exists. A setting the environment already
gives (``MALLOC_MMAP_THRESHOLD_``, ``MALLOC_ARENA_MAX``, ``MALLOC_TRIM_THRESHOLD_`` or
``GLIBC_TUNABLES``) is left alone; elsewhere than on glibc nothing is done.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import os
from collections.abc import Mapping
from dataclasses import dataclass

log = logging.getLogger("t2mir.server")

M_TRIM_THRESHOLD = -1
M_TOP_PAD = -2
M_MMAP_THRESHOLD = -3
M_ARENA_MAX = -8
"""``mallopt`` parameter numbers (glibc's malloc.h)."""


@dataclass(frozen=True)
class MallocOption:
    """One ``mallopt`` setting, the environment variable and tunable that override it, the
    ``t2mir serve`` flag that overrides those, and the server's default (None: glibc's own)."""

    env: str
    tunable: str
    param: int
    flag: str
    default: int | None


MALLOC_OPTIONS = (
    MallocOption("MALLOC_MMAP_THRESHOLD_", "glibc.malloc.mmap_threshold", M_MMAP_THRESHOLD,
                 "--malloc-mmap-threshold", 128 * 1024),
    MallocOption("MALLOC_TRIM_THRESHOLD_", "glibc.malloc.trim_threshold", M_TRIM_THRESHOLD,
                 "--malloc-trim-threshold", 128 * 1024),
    MallocOption("MALLOC_TOP_PAD_", "glibc.malloc.top_pad", M_TOP_PAD, "--malloc-top-pad", None),
    MallocOption("MALLOC_ARENA_MAX", "glibc.malloc.arena_max", M_ARENA_MAX, "--malloc-arena-max", 2),
)  # fmt: skip
"""Every setting the server makes, with its default (module docstring)."""


def tune_malloc(
    environ: Mapping[str, str] = os.environ, flags: Mapping[str, int] | None = None
) -> dict[str, int]:
    """Apply the `MALLOC_OPTIONS`: a value in ``flags`` (by ``env`` name) always, a default unless
    ``environ`` already sets it. Returns what was applied by ``env`` name (empty when the C library
    is not glibc)."""
    libc = _glibc()
    if libc is None:
        return {}
    flags = flags or {}
    tunables = environ.get("GLIBC_TUNABLES", "")
    applied = {}
    for option in MALLOC_OPTIONS:
        value = flags.get(option.env)
        if value is None:
            if option.default is None or option.env in environ or option.tunable in tunables:
                continue
            value = option.default
        if libc.mallopt(option.param, value) == 1:
            applied[option.env] = value
        else:
            log.warning("mallopt(%d, %d) failed", option.param, value)
    return applied


def _glibc() -> ctypes.CDLL | None:
    """The process's C library when it is glibc (it has ``gnu_get_libc_version``), else None."""
    name = ctypes.util.find_library("c")
    if name is None:
        return None
    try:
        libc = ctypes.CDLL(name)
    except OSError:
        return None
    if not hasattr(libc, "gnu_get_libc_version") or not hasattr(libc, "mallopt"):
        return None
    libc.mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    libc.mallopt.restype = ctypes.c_int
    return libc
