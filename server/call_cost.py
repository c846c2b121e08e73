"""How long an engine call takes, from recent calls, and how long a new act would wait for its answer.

The batcher's overload control (`server.batcher`) needs, for an act about to be queued, the time
until its answer would be back on the event loop. The estimate is meant to hold at a high quantile,
not on average: an act admitted on a mean estimate misses its deadline whenever the calls ahead of
it run slow, and on busy cores they often do. It is made of:

- `CallCost`: the seconds one engine call takes as a function of its batch size. The mean,
  ``m(n) = a + b n``, is fitted by exponentially weighted least squares over recent calls (each
  call's weight decays by ``decay`` per later call: with 0.95, about the last 20 calls count).
  While every recent call had about the same batch size (no slope can be fitted),
  ``m(n) = mean d * max(1, n / mean n)``: no fixed cost, so an upper bound for any engine whose
  call cost grows at most linearly with the batch. Each call's cost over the mean predicted for
  it before it was seen is kept for the last `WINDOW` calls; `CallCost.seconds` is
  ``m(n) * f``, with ``f`` the `QUANTILE` of those ratios (at least 1): once more than one
  recent call in ten ran slow (rebuilt contexts, stalls for CPU), the estimate is as slow as they
  were, for as long as such calls keep coming. With no call seen yet, the cost is 0 (nothing is refused before the first
  measurement).
- `Quantile`: the same windowed quantile for any delay; the batcher keeps one of the hand-off (an
  engine call's answer back on the event loop), the part of an act's time after its call that the
  batcher can see.
- `expected_wait`: with ``q`` requests queued ahead, batches of at most ``B``, a call of ``r``
  requests running for ``e`` seconds so far, recent calls of ``k`` requests on average and a
  hand-off of ``h``, a new request is answered after
  ``max(d(r) - e, 0) + (q // B) d(B) + d(s) + h``: the rest of the running call, the full batches
  ahead of it, then its own call of ``s`` requests. That call takes every request queued when it
  starts: with nothing running or queued ahead it starts at once, ``s = q % B + 1``; otherwise
  requests arriving meanwhile join it, so it is as large as recent calls were,
  ``s = min(B, max(q % B + 1, k))``. The batch window (``max_wait_ms``, a few ms) is left out.
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass, field

DECAY = 0.95
"""Weight kept by a measured call per later call."""
MIN_SPREAD = 0.25
"""Variance of recent batch sizes below which no slope is fitted."""
WINDOW = 64
"""Recent observations a `Quantile` keeps."""
QUANTILE = 0.9
"""The quantile of recent observations that estimates the next one."""
MIN_OBSERVATIONS = 10
"""Observations a `Quantile` needs before it reports its quantile; with fewer it reports their
median, so that one slow call after start-up (a cold cache, a stall) does not stand for the 0.9
quantile of three calls and shed every act that follows."""


@dataclass
class Quantile:
    """The ``q`` quantile of the last ``window`` observations (0 before any; their median while
    fewer than `MIN_OBSERVATIONS`)."""

    q: float = QUANTILE
    window: int = WINDOW
    _values: deque[float] = field(init=False)
    _value: float = field(default=0.0, init=False)

    def __post_init__(self) -> None:
        if not 0.0 <= self.q <= 1.0 or self.window < 1:
            raise ValueError("q must be in [0, 1] and window >= 1")
        self._values = deque(maxlen=self.window)

    def observe(self, value: float) -> None:
        """Add one observation."""
        self._values.append(value)
        ordered = sorted(self._values)
        q = self.q if len(ordered) >= MIN_OBSERVATIONS else 0.5
        self._value = ordered[max(math.ceil(q * len(ordered)) - 1, 0)]

    @property
    def value(self) -> float:
        """The quantile (nearest rank) of the kept observations."""
        return self._value


@dataclass
class CallCost:
    """Engine-call seconds against batch size, fitted over recent calls (see the module docstring)."""

    decay: float = DECAY
    slowdown: Quantile = field(default_factory=Quantile)
    """Recent calls' cost over the mean predicted for them."""
    _w: float = field(default=0.0, init=False)
    _n: float = field(default=0.0, init=False)
    _nn: float = field(default=0.0, init=False)
    _d: float = field(default=0.0, init=False)
    _nd: float = field(default=0.0, init=False)

    def observe(self, batch: int, seconds: float) -> None:
        """Add one engine call of ``batch`` requests that took ``seconds``."""
        predicted = self.mean_seconds(batch)
        if predicted > 0.0:
            self.slowdown.observe(seconds / predicted)
        k = self.decay
        self._w = self._w * k + 1.0
        self._n = self._n * k + batch
        self._nn = self._nn * k + batch * batch
        self._d = self._d * k + seconds
        self._nd = self._nd * k + batch * seconds

    def mean_seconds(self, batch: int) -> float:
        """The mean seconds of an engine call of ``batch`` requests (0 before any call was seen)."""
        if self._w <= 0.0 or batch <= 0:
            return 0.0
        mean_n, mean_d = self._n / self._w, self._d / self._w
        spread = self._nn / self._w - mean_n * mean_n
        if spread < MIN_SPREAD:
            return mean_d * max(1.0, batch / mean_n)
        slope = max((self._nd / self._w - mean_n * mean_d) / spread, 0.0)
        fixed = max(mean_d - slope * mean_n, 0.0)
        return fixed + slope * batch

    def seconds(self, batch: int) -> float:
        """The seconds an engine call of ``batch`` requests takes at the `QUANTILE` of recent calls."""
        return self.mean_seconds(batch) * max(self.slowdown.value, 1.0)

    @property
    def typical_batch(self) -> float:
        """The recent calls' mean batch size (0 before any call was seen)."""
        return self._n / self._w if self._w > 0.0 else 0.0


def expected_wait(
    cost: CallCost,
    queued: int,
    max_batch: int,
    running: int = 0,
    running_for: float = 0.0,
    handoff: float = 0.0,
) -> float:
    """Seconds until a request queued behind ``queued`` others is answered, with ``running``
    requests in an engine call that started ``running_for`` seconds ago and a hand-off of
    ``handoff`` seconds (module docstring)."""
    rest = max(cost.seconds(running) - running_for, 0.0) if running else 0.0
    full, partial = divmod(queued, max_batch)
    own = partial + 1
    if running or full:  # requests arriving meanwhile join its call
        own = min(max_batch, max(own, round(cost.typical_batch)))
    return rest + full * cost.seconds(max_batch) + cost.seconds(own) + handoff
