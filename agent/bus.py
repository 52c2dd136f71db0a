"""Handing a session's events out: to synchronous listeners and to async iterators."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable

from parley.agent.events import Event


class EventBus:
    """Fans events out, behind an epoch fence.

    Nothing made under an epoch older than :attr:`epoch` gets out: the session bumps the
    epoch on an interruption, and whatever the cancelled reply still emits is dropped here.
    """

    def __init__(self) -> None:
        self.epoch = 0
        self.stale_dropped = 0
        self._listeners: list[Callable[[Event], None]] = []
        self._queues: list[asyncio.Queue[Event | None]] = []

    def subscribe(self, listener: Callable[[Event], None]) -> None:
        """Call ``listener`` synchronously with every event (it must not block)."""
        self._listeners.append(listener)

    async def events(self) -> AsyncIterator[Event]:
        """Every event from now on, until :meth:`close`."""
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
        for queue in self._queues:
            queue.put_nowait(event)

    def close(self) -> None:
        """End every iterator from :meth:`events`."""
        for queue in self._queues:
            queue.put_nowait(None)
