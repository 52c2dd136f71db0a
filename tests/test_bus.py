"""The event bus on its own: listeners, iterators, the epoch fence, a bound on the unread."""

from __future__ import annotations

import asyncio

import pytest

from parley.agent.core.bus import EventBus
from parley.agent.core.events import TextDelta


def delta(epoch: int, text: str) -> TextDelta:
    return TextDelta(t=0.0, epoch=epoch, reply_id=1, text=text)


def test_fence_drops_what_older_epochs_still_emit() -> None:
    bus = EventBus()
    heard: list[str] = []
    bus.subscribe(lambda e: heard.append(e.text))
    bus.emit(delta(0, "a"))
    assert bus.fence() == 1 and bus.epoch == 1
    bus.emit(delta(0, "late"))  # a cut reply's producer, still running
    bus.emit(delta(1, "b"))
    assert heard == ["a", "b"] and bus.stale_dropped == 1


async def test_iterators_get_every_event_then_end_on_close() -> None:
    bus = EventBus()
    got: list[str] = []

    async def read() -> None:
        async for event in bus.events():
            got.append(event.text)

    reader = asyncio.create_task(read())
    await asyncio.sleep(0)  # the iterator is registered
    for text in "xyz":
        bus.emit(delta(0, text))
    bus.close()
    await asyncio.wait_for(reader, 1)
    assert got == ["x", "y", "z"]
    # Closed: a new iterator ends at once, and listeners still hear (nothing queues).
    assert [e async for e in bus.events()] == []


async def test_an_unread_iterator_keeps_only_the_newest() -> None:
    bus = EventBus(max_pending=2)
    stream = bus.events()
    first = asyncio.ensure_future(stream.__anext__())
    await asyncio.sleep(0)  # the iterator is registered and waiting
    bus.emit(delta(0, "0"))
    assert (await first).text == "0"
    for i in range(1, 6):  # nobody reads these as they come
        bus.emit(delta(0, str(i)))
    assert bus.dropped == 3
    assert [(await stream.__anext__()).text for _ in range(2)] == ["4", "5"]
    await stream.aclose()


def test_max_pending_must_be_positive() -> None:
    with pytest.raises(ValueError, match="at least 1"):
        EventBus(max_pending=0)
