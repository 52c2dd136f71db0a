"""Handing a session's events out: to synchronous listeners and to async iterators."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Callable

from parley.agent.core.events import Event

log = logging.getLogger(__name__)


class EventBus:
    """Fans events out, behind an epoch fence.

    Nothing made under an epoch older than :attr:`epoch` gets out: the session bumps the
    epoch on an interruption, and whatever the cancelled reply still emits is dropped here.

    With ``max_pending``, each async iterator keeps at most that many unread events and
    drops the oldest beyond it (counted in :attr:`dropped`): an application may open
    ``events()`` and stop reading it, and a ten-turn conversation emits thousands of events.
    """

    def __init__(self, max_pending: int | None = None, name: str = "session") -> None:
        if max_pending is not None and max_pending < 1:
            raise ValueError(f"max_pending must be at least 1, got {max_pending}")
        self.epoch = 0  # moved on by fence() only
        self.stale_dropped = 0
        self.max_pending = max_pending
        self.dropped = 0  # events dropped from unread iterators, over all of them
        self._name = name
        self._listeners: list[Callable[[Event], None]] = []
        self._queues: list[asyncio.Queue[Event | None]] = []
        self._closed = False

    def fence(self) -> int:
        """Start a new epoch: from now on nothing emitted under an older one gets out.
        Returns the new epoch."""
        self.epoch += 1
        return self.epoch

    def subscribe(self, listener: Callable[[Event], None]) -> None:
        """Call ``listener`` synchronously with every event (it must not block)."""
        self._listeners.append(listener)

    async def events(self) -> AsyncIterator[Event]:
        """Every event from now on, until :meth:`close` (at once if already closed)."""
        if self._closed:
            return
        # Unbounded as a queue: emit keeps it to max_pending events, and the close marker
        # must always fit behind them.
        queue: asyncio.Queue[Event | None] = asyncio.Queue()
        self._queues.append(queue)
        try:
            while (event := await queue.get()) is not None:
                yield event
        finally:
            self._queues.remove(queue)

    def emit(self, event: Event) -> None:
        if event.epoch < self.epoch:
            self.stale_dropped += 1
            return
        for listener in self._listeners:
            listener(event)
        if self._closed:
            return  # iterators have their close marker; nothing may go behind it
        for queue in self._queues:
            if self.max_pending is not None and queue.qsize() >= self.max_pending:
                queue.get_nowait()
                self.dropped += 1
                if self.dropped == 1:
                    log.warning(
                        "%s: an events() iterator is not being read; dropping its oldest "
                        "events beyond %d",
                        self._name,
                        self.max_pending,
                    )
            queue.put_nowait(event)

    def close(self) -> None:
        """End every iterator from :meth:`events`, once each has drained what it holds."""
        if self._closed:
            return
        self._closed = True
        for queue in self._queues:
            queue.put_nowait(None)
