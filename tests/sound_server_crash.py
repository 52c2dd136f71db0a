"""Run by the sound-server crash test in a process of its own: ``python -m
tests.sound_server_crash DELAY`` plays on a private PulseAudio sink, kills the server DELAY
seconds after the streams start, and prints what the transport said.

Its own process because a server that dies as a stream starts can leave PortAudio's ALSA
thread spinning for good, and PortAudio with it for the rest of that process.
"""

from __future__ import annotations

import asyncio
import sys

from parley.speech_io.devices import AudioDeviceError, DeviceTransport
from parley.speech_io.pulse import pulse_null_sinks
from tests.device_endpoint import SR, _Endpoint, _tone


async def crash(delay: float) -> None:
    with pulse_null_sinks(["doomed"]) as p:
        t = DeviceTransport(_Endpoint(_tone(5 * SR)), p.monitors["doomed"], p.sinks["doomed"])
        await t.start()
        await asyncio.sleep(delay)
        p.kill_server()
        try:
            await asyncio.wait_for(t.wait(), 5.0)
            print("stopped without an error", flush=True)
        except AudioDeviceError as exc:
            print(f"stopped: {exc}", flush=True)
        await t.aclose()


def main() -> None:
    try:
        asyncio.run(crash(float(sys.argv[1])))
    except AudioDeviceError as exc:  # leaving the sinks re-scans PortAudio, if it can
        print(f"afterwards: {exc}", flush=True)


if __name__ == "__main__":
    main()
