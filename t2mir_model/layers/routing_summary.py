"""Routing statistics of many forwards summed per MoE layer, as plain data (DESIGN.md decision 8).

Every family returns, per forward, one statistics object per MoE layer; each family's statistics
class knows how to sum a group of its own objects into a `LayerRoutingSummary`. `summarize_routing`
groups the objects of many forwards by class and layer and asks each class for its summary, so a
consumer (the server's metrics, training logs) never rebuilds a family's routing objects.

A family with other routers adds optional fields here (a soft router: its summed expert weights and
how often each expert had the highest weight) and names their usage in `LayerRoutingSummary.usage`.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Protocol, Self

from torch import Tensor


@dataclass(frozen=True)
class LayerRoutingSummary:
    """One MoE layer's routing statistics summed over several forwards; tensors float32 on the CPU."""

    layer: int
    modalities: tuple[str, ...] = ()
    """Names of the rows of ``token_counts`` (token modalities, e.g. 's', 'a', 'r')."""
    token_counts: Tensor | None = None
    """(M, E) top-k selections of the token router by token modality; None without a token router."""
    task_weights: Tensor | None = None
    """(E,) task-router gate values summed over valid tokens; None without a task router."""
    expert_weights: Tensor | None = None
    """(E,) soft-router (M3DT) softmax weights summed over valid tokens; None without a soft router."""
    expert_top: Tensor | None = None
    """(E,) valid tokens whose highest soft-router weight is each expert; None without a soft router."""
    mean_entropy: float | None = None
    """Mean over valid tokens of the entropy (nats) of the soft-router weights; None without one."""

    def usage(self) -> dict[str, Tensor]:
        """Router name -> (E,) expert usage, for load and entropy gauges of every router present."""
        out: dict[str, Tensor] = {}
        if self.token_counts is not None:
            out["token"] = self.token_counts.sum(0)
        if self.task_weights is not None:
            out["task"] = self.task_weights
        if self.expert_weights is not None:
            out["soft"] = self.expert_weights
        return out


class LayerStatistics(Protocol):
    """One MoE layer's routing statistics from one forward, as a family's forward returns them."""

    @property
    def layer(self) -> int:
        """Index of the block the statistics come from."""
        ...

    @classmethod
    def summarize(cls, stats: Sequence[Self]) -> LayerRoutingSummary:
        """Sum a group of this class's statistics, all of one layer, into one summary."""
        ...


def summarize_routing(forwards: Iterable[Sequence[LayerStatistics]]) -> list[LayerRoutingSummary]:
    """Per-layer summaries (ordered by layer) of the routing statistics of several forwards.

    ``forwards``: one sequence of per-layer statistics per forward (e.g. every `EngineOutput.routing`
    entry of several engine calls). Each layer is summed in one pass over all the forwards."""
    groups: dict[tuple[type[LayerStatistics], int], list[LayerStatistics]] = {}
    for forward in forwards:
        for stats in forward:
            groups.setdefault((type(stats), stats.layer), []).append(stats)
    summaries = [kind.summarize(group) for (kind, _), group in groups.items()]
    return sorted(summaries, key=lambda s: s.layer)
