"""Connecting a session to real sound devices."""

from __future__ import annotations

from typing import Any

from parley.agent.session import DuplexSession


def connect_devices(
    session: DuplexSession,
    input_device: int | str | None = None,
    output_device: int | str | None = None,
    **options: Any,
):
    """A :class:`~parley.speech_io.devices.DeviceTransport` for ``session`` whose unplayed
    output is dropped the moment playback pauses or is cut, so the speaker goes silent
    within the device's own buffer. Use it as ``async with connect_devices(session): ...``."""
    from parley.speech_io.devices import DeviceTransport

    transport = DeviceTransport(session, input_device, output_device, **options)

    def on_event(event) -> None:
        if event.type in ("playback_paused", "interrupted"):
            transport.clear_output()

    session.subscribe(on_event)
    return transport
