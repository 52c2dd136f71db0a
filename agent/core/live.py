"""Connecting a session to real sound devices."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from parley.agent.core.events import Event, FirstAudio, Interrupted, PlaybackPaused
from parley.agent.core.session import DuplexSession

if TYPE_CHECKING:
    from parley.speech_io.devices import DeviceTransport


def connect_devices(
    session: DuplexSession,
    input_device: int | str | None = None,
    output_device: int | str | None = None,
    **options: Any,
) -> DeviceTransport:
    """A :class:`~parley.speech_io.devices.DeviceTransport` for ``session`` whose unplayed
    output is dropped the moment playback pauses or is cut, so the speaker goes silent
    within the device's own buffer, and whose queued silence is dropped when a reply's
    first audio arrives, so the reply starts within that buffer too. Use it as
    ``async with connect_devices(session): ...``."""
    import asyncio

    from parley.speech_io.devices import DeviceTransport

    transport = DeviceTransport(session, input_device, output_device, **options)

    def on_event(event: Event) -> None:
        if isinstance(event, PlaybackPaused | Interrupted):
            transport.clear_output()
        elif isinstance(event, FirstAudio):
            # Emitted while the transport is pulling: clear once that pull is queued. The
            # session takes the reply samples back (rewind_output) and hands them out again
            # at once, ahead of the silence that was waiting in front of them.
            asyncio.get_running_loop().call_soon(transport.clear_output)

    session.subscribe(on_event)
    return transport
