"""Per-connection budgets: what a client may spend, refilled with time.

Every session shares one event loop and one model, so anything a client can make the
server do faster than real time is taken from the other sessions. A client over its budget
is not refused: it is made to wait, which costs it its own latency and nobody else's. The
server waits before reading its next message, so what it sends meanwhile stays in its own
socket.
"""

from __future__ import annotations

from collections.abc import Callable

__all__ = ["Budget"]


class Budget:
    """A token bucket: ``rate`` units per second, at most ``burst`` saved up.

    :meth:`spend` always succeeds and returns how long the spender must now wait for the
    bucket to be out of debt. ``now`` is the clock in seconds (injected for tests).
    """

    def __init__(self, rate: float, burst: float, now: Callable[[], float]) -> None:
        if rate <= 0 or burst <= 0:
            raise ValueError(f"a budget needs rate > 0 and burst > 0, got {rate}, {burst}")
        self.rate = rate
        self.burst = burst
        self._now = now
        self._tokens = burst
        self._last = now()

    def _refill(self) -> None:
        t = self._now()
        self._tokens = min(self.burst, self._tokens + (t - self._last) * self.rate)
        self._last = t

    def spend(self, amount: float) -> float:
        """Take ``amount``; seconds until the balance is back to zero (0 when it is not
        below)."""
        self._refill()
        self._tokens -= amount
        return max(0.0, -self._tokens / self.rate)

    def wait(self) -> float:
        """Seconds until the balance is back to zero, spending nothing."""
        return self.spend(0.0)
