"""How long an engine call takes, from recent calls, and how long a new act would wait for its answer.

The batcher's overload control (`server.batcher`) needs, for an act about to be queued, the time
until its engine call would have answered it. Two estimates make it:

- `CallCost`: the seconds one engine call takes as a function of its batch size, ``d(n) = a + b n``,
  fitted by exponentially weighted least squares over recent calls (each call's weight decays by
  ``decay`` per later call: with 0.95, about the last 20 calls count). While every recent call had
  about the same batch size (no slope can be fitted), ``d(n) = mean d * max(1, n / mean n)``: no
  fixed cost, so an upper bound for any engine whose call cost grows at most linearly with the
  batch. With no call seen yet, ``d(n) = 0`` (nothing is refused before the first measurement).
- `expected_wait`: with ``q`` requests queued ahead, batches of at most ``B`` and a call of ``m``
  requests running for ``e`` seconds so far, a new request is answered after
  ``max(d(m) - e, 0) + (q // B) d(B) + d(q % B + 1)``: the rest of the running call, the full
  batches ahead of it, then its own call. The batch window (``max_wait_ms``, a few ms) is left out.
"""

from __future__ import annotations

from dataclasses import dataclass, field

DECAY = 0.95
"""Weight kept by a measured call per later call."""
MIN_SPREAD = 0.25
"""Variance of recent batch sizes below which no slope is fitted."""


@dataclass
class CallCost:
    """Engine-call seconds against batch size, fitted over recent calls (see the module docstring)."""

    decay: float = DECAY
    _w: float = field(default=0.0, init=False)
    _n: float = field(default=0.0, init=False)
    _nn: float = field(default=0.0, init=False)
    _d: float = field(default=0.0, init=False)
    _nd: float = field(default=0.0, init=False)

    def observe(self, batch: int, seconds: float) -> None:
        """Add one engine call of ``batch`` requests that took ``seconds``."""
        k = self.decay
        self._w = self._w * k + 1.0
        self._n = self._n * k + batch
        self._nn = self._nn * k + batch * batch
        self._d = self._d * k + seconds
        self._nd = self._nd * k + batch * seconds

    def seconds(self, batch: int) -> float:
        """Expected seconds of an engine call of ``batch`` requests (0 before any call was seen)."""
        if self._w <= 0.0 or batch <= 0:
            return 0.0
        mean_n, mean_d = self._n / self._w, self._d / self._w
        spread = self._nn / self._w - mean_n * mean_n
        if spread < MIN_SPREAD:
            return mean_d * max(1.0, batch / mean_n)
        slope = max((self._nd / self._w - mean_n * mean_d) / spread, 0.0)
        fixed = max(mean_d - slope * mean_n, 0.0)
        return fixed + slope * batch


def expected_wait(
    cost: CallCost, queued: int, max_batch: int, running: int = 0, running_for: float = 0.0
) -> float:
    """Seconds until a request queued behind ``queued`` others is answered, with ``running``
    requests in an engine call that started ``running_for`` seconds ago (module docstring)."""
    rest = max(cost.seconds(running) - running_for, 0.0) if running else 0.0
    full, partial = divmod(queued, max_batch)
    return rest + full * cost.seconds(max_batch) + cost.seconds(partial + 1)
