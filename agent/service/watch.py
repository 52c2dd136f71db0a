"""Timeouts of one connection: a client that stops reading, or stops talking altogether.

A client that never reads its events cannot be caught by counting them: once the socket's
buffers are full, the send loop waits on the socket, the receive loop stops reading (so its
own messages wait in its socket, not in our memory) and the event count stops growing long
before any bound. What does not stop is the clock, so the watch asks how long the oldest
unsent event has waited. A silent connection is the same question about received messages.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass

__all__ = ["ConnectionWatch", "Expiry"]

CLOSE_SLOW_CONSUMER = 1008
"""Policy violation: the client does not read what it asked for."""
CLOSE_IDLE = 1001
"""Going away: the server ends a connection nobody uses."""


@dataclass(frozen=True)
class Expiry:
    """Why a connection is being closed: the WebSocket close code, the reason sent with
    it, and the metrics error code it counts under."""

    code: int
    reason: str
    metric: str


class ConnectionWatch:
    """Tracks a connection's last received message and its send progress.

    ``slow_consumer_s``: events pending (or one being written) and none sent for this long
    closes the connection with 1008. ``idle_s``: no client message for this long closes it
    with 1001. ``None`` or 0 turns either off. ``now`` is a monotonic clock in seconds.
    """

    def __init__(
        self,
        slow_consumer_s: float | None,
        idle_s: float | None,
        now: Callable[[], float] = time.monotonic,
    ) -> None:
        self.slow_consumer_s = slow_consumer_s or None
        self.idle_s = idle_s or None
        self._now = now
        start = now()
        self._last_received = start
        self._last_sent = start
        self._sending = False

    def received(self) -> None:
        """A client message arrived."""
        self._last_received = self._now()

    def sending(self) -> None:
        """The send loop took an event and is writing it."""
        if not self._sending:
            # The wait counts from when there was something to send, not from the last
            # event sent an hour ago.
            self._last_sent = self._now()
        self._sending = True

    def sent(self) -> None:
        """The event was written to the socket."""
        self._sending = False
        self._last_sent = self._now()

    def expired(self, pending: int) -> Expiry | None:
        """The reason to close now, if any; ``pending`` is the number of queued events."""
        now = self._now()
        waiting = pending > 0 or self._sending
        if (
            self.slow_consumer_s is not None
            and waiting
            and now - self._last_sent >= self.slow_consumer_s
        ):
            return Expiry(
                CLOSE_SLOW_CONSUMER,
                f"client read no events for {self.slow_consumer_s:g} s",
                "client_too_slow",
            )
        if self.idle_s is not None and now - self._last_received >= self.idle_s:
            return Expiry(CLOSE_IDLE, f"no client message for {self.idle_s:g} s", "client_idle")
        return None

    def check_interval(self) -> float:
        """How often to ask: a fraction of the shortest timeout, so a close comes late by
        at most that fraction."""
        spans = [s for s in (self.slow_consumer_s, self.idle_s) if s is not None]
        return min(1.0, min(spans) / 8) if spans else 1.0

    async def wait(self, pending: Callable[[], int]) -> Expiry:
        """Return when a timeout expires (never, if both are off)."""
        while True:
            await asyncio.sleep(self.check_interval())
            reason = self.expired(pending())
            if reason is not None:
                return reason
