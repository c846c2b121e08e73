"""Dataset qualities (paper Appendix D.2): which snapshots a dataset keeps, and whose actions label it.

Definitions (also in ``docs/datasets.md``), for one task whose learner produced snapshots
``k = 0 .. K-1`` in training order:

* ``r_k``: mean return of the episodes snapshot ``k`` rolled out.
* performance ``P_k``: ``r_j`` averaged over the window ``|j - k| <= h`` (clipped to the history),
  ``h = K // 40`` (no smoothing below 40 snapshots; 2 at 100 snapshots; 25 at 1000). One episode
  is a noisy estimate of a policy; the window keeps a lucky episode from deciding a cut.
* first level ``P_0``, final level ``P_{K-1}``; normalised performance
  ``p_k = (P_k - P_0) / (P_{K-1} - P_0)``. This is 0 for the untrained learner and 1 at the end of
  training whatever the sign of the returns (Point-Robot and Cheetah-Vel returns are negative).
  When training made no progress (``P_{K-1} - P_0 <= 1e-8 * (1 + |P_0| + |P_{K-1}|)``), every
  ``p_k`` is taken as 0.
* Mixed keeps every snapshot; Medium-Expert keeps snapshots with ``p_k < 0.8``; Medium those with
  ``p_k < 0.5`` (anywhere in the history, in history order; snapshot 0 always qualifies).
* DPT label policy: Mixed, the final snapshot (the "100 %" expert); Medium-Expert / Medium, the kept
  snapshot with the highest ``P_k`` (latest on ties), i.e. the best policy below 80 % / 50 %.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

QUALITIES: dict[str, float | None] = {"mixed": None, "medium-expert": 0.8, "medium": 0.5}


@dataclass(frozen=True)
class QualitySelection:
    quality: str
    performance: np.ndarray
    """(K,) smoothed return P_k of every snapshot."""
    normalized: np.ndarray
    """(K,) p_k."""
    first_level: float
    final_level: float
    kept: np.ndarray
    """Indices of the snapshots the dataset keeps, ascending."""
    label_snapshot: int
    """Snapshot whose deterministic actions label every stored state (DPT)."""
    improved: bool
    """False when the learner made no progress (every p_k was set to 0)."""


def smoothing_half_window(n_snapshots: int) -> int:
    return n_snapshots // 40


def snapshot_performance(snapshot_returns: np.ndarray) -> np.ndarray:
    """Moving average of the per-snapshot returns over ``|j - k| <= K // 40`` (edges clipped)."""
    r = np.asarray(snapshot_returns, dtype=np.float64)
    h = smoothing_half_window(r.shape[0])
    if h == 0:
        return r.copy()
    csum = np.concatenate([[0.0], np.cumsum(r)])
    k = np.arange(r.shape[0])
    lo, hi = np.maximum(k - h, 0), np.minimum(k + h + 1, r.shape[0])
    return (csum[hi] - csum[lo]) / (hi - lo)


def select_snapshots(snapshot_returns: np.ndarray, quality: str) -> QualitySelection:
    """Apply the quality rule above to one task's per-snapshot mean returns."""
    if quality not in QUALITIES:
        raise ValueError(f"unknown quality {quality!r}; choose one of {sorted(QUALITIES)}")
    perf = snapshot_performance(snapshot_returns)
    if perf.size == 0:
        raise ValueError("no snapshots")
    first, final = float(perf[0]), float(perf[-1])
    gain = final - first
    improved = gain > 1e-8 * (1.0 + abs(first) + abs(final))
    norm = (perf - first) / gain if improved else np.zeros_like(perf)
    threshold = QUALITIES[quality]
    if threshold is None:
        kept = np.arange(perf.size)
        label = perf.size - 1
    else:
        kept = np.flatnonzero(norm < threshold)
        best = perf[kept].max()
        label = int(kept[np.flatnonzero(perf[kept] == best)[-1]])
    return QualitySelection(
        quality=quality,
        performance=perf,
        normalized=norm,
        first_level=first,
        final_level=final,
        kept=kept.astype(np.int64),
        label_snapshot=int(label),
        improved=bool(improved),
    )
