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
gives (``MALLOC_MMAP_THRESHOLD_``, ``MALLOC_ARENA_MAX``, ``MALLOC_TRIM_THRESHOLD_``,
``MALLOC_TOP_PAD_`` or ``GLIBC_TUNABLES``) is left alone, unless a ``t2mir serve`` flag gives it
(``--malloc-mmap-threshold``, ``--malloc-trim-threshold``, ``--malloc-top-pad``,
``--malloc-arena-max``: the flag wins); elsewhere than on glibc nothing is done.

What the small threshold costs. Every block of 128 KiB or more is a fresh mapping, zero-filled page
by page on first touch and unmapped when freed, so an engine call pays page faults for all its large
transient tensors. One cached decode step of the shipped DarkRoom checkpoint (200-step context, one
torch thread, arena max 2; CPU time per step, which other jobs on the cores do not inflate; ``python
scripts/malloc_step_cost.py --mmap-threshold N --trim-threshold M``), the settings in turn, two
rounds (a third for 128 KiB and 4 MiB, one for 32 MiB / 1 MiB), on 2 cores shared with other jobs at
load average 8-12:

| mmap / trim threshold | batch 1 | batch 64 | RSS after the steps |
|---|---|---|---|
| 128 KiB / 128 KiB (default) | 2.1-3.1 ms | 57-77 ms | 368 MB |
| 1 MiB / 1 MiB | 2.3-2.8 ms | 52-57 ms | 373 MB |
| 4 MiB / 4 MiB | 2.1-2.4 ms | 49-56 ms | 387 MB |
| 32 MiB / 32 MiB | 1.9-2.3 ms | 24-31 ms | 473-528 MB |
| 32 MiB / 1 MiB | 2.5 ms | 27 ms | 460 MB |
| glibc's own (a rising threshold) | 2.3 ms | 25-27 ms | 502-530 MB |

So at batch 1 the setting is within the noise, and at batch 64 the gathered key/value rows (tens of
MB per layer) cost twice their compute when mapped per call. But a threshold above those blocks
keeps them in the arenas' heaps: with 32 MiB / 32 MiB, `tests/server/test_memory_soak.py`'s server
(200 sessions per cycle, in-process store) went 468 -> 611 -> 700 -> 728 MB over three cycles with
every session deleted after each (the test allows 96 MB after the first cycle, then 10%), so it does
not keep memory bounded. The end-to-end benchmark, ``t2mir bench --sessions=1,64 --duration 5
--warmup 1 --transport http --no-growth --parity-acts 0 --no-baseline`` with
``--server-arg=--malloc-mmap-threshold=N --server-arg=--malloc-trim-threshold=N`` for N = 128 KiB,
1, 4 and 32 MiB, two interleaved rounds, measured the same direction at 64 sessions (server CPU per
act 3.0 / 3.7, 2.7 / 4.6, 2.9 / 2.2, 2.4 / 1.8 ms), but its acts/s (46-165) varied with the host's
load more than with the allocator. The default
stays 128 KiB until a setting that keeps the soak test's bounds is measured faster. The largest
per-step blocks, the gathered keys and values, no longer come from malloc at all: a step that
gathers copies them into a workspace the cache keeps (`KVCache.gather_workspace`).
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
