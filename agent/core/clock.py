"""Clocks: every timestamp the agent takes goes through one of these, injected.

Real sessions use :class:`MonotonicClock`; the virtual-time runner uses
:class:`VirtualClock`, which only moves when told to, so a scripted minute of conversation
runs in a fraction of that and gives the same event times on every run.
"""

from __future__ import annotations

import time
from typing import Protocol


class Clock(Protocol):
    """Seconds on some monotonic time base."""

    def now(self) -> float: ...


class MonotonicClock:
    """Wall-clock seconds since this clock was created."""

    def __init__(self) -> None:
        self._origin = time.perf_counter()

    def now(self) -> float:
        return time.perf_counter() - self._origin


class VirtualClock:
    """Time that moves only through :meth:`set` or :meth:`advance`."""

    def __init__(self, start: float = 0.0) -> None:
        self._now = start

    def now(self) -> float:
        return self._now

    def set(self, t: float) -> None:
        if t < self._now:
            raise ValueError(f"virtual time cannot go back ({t} < {self._now})")
        self._now = t

    def advance(self, dt: float) -> None:
        self.set(self._now + dt)
