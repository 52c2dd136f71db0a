"""Playing a scenario through real sound devices, in real time.

Two private PulseAudio null sinks stand in for a room: the agent plays into ``parley_out``
and listens to ``parley_in``'s monitor through :class:`DeviceTransport`, exactly as on a
sound card. A second duplex stream plays the user: it records what the agent played (from
``parley_out``'s monitor) and plays the scripted user channel, plus the scenario's echo of
the agent, into ``parley_in``. Both channels are kept sample-aligned by that one callback.

That room stream has latency of its own, which a real room does not: the user's voice
enters the agent's microphone sink late, and the agent's speaker sink is recorded late.
It is measured before each run (a click through a null sink and its monitor) and taken
out of the recorded output, so the metrics time the agent, its devices included, and not
the rig. The figure is reported as ``rig_latency_ms``.
"""

from __future__ import annotations

import asyncio
import shutil
from collections.abc import Callable
from typing import Any

import numpy as np

from parley.agent.core.clock import MonotonicClock
from parley.agent.core.events import FirstAudio
from parley.agent.core.model import AgentModel
from parley.agent.core.session import DuplexSession
from parley.agent.harness.record import RunRecord
from parley.agent.harness.runner import SR, ScenarioScript, agent_config_for
from parley.agent.harness.scenario import Scenario
from parley.config import AgentConfig
from parley.errors import EngineUnavailableError, ParleyError

SINKS = ["parley_out", "parley_in"]
BLOCK = 160  # 10 ms


def check_realtime_available() -> None:
    """Raise a clear error when this machine cannot run ``bench --realtime``."""
    from parley.speech_io.pulse import PULSE_PACKAGES, REQUIRED_TOOLS

    missing = [t for t in REQUIRED_TOOLS if shutil.which(t) is None]
    if missing:
        raise EngineUnavailableError(
            f"--realtime needs PulseAudio ({', '.join(missing)} not found); on Debian: "
            f"apt-get install {PULSE_PACKAGES}"
        )
    from parley.speech_io.soundcard import load_sounddevice

    try:
        load_sounddevice()
    except ParleyError as exc:
        raise EngineUnavailableError(f"--realtime needs PortAudio: {exc}") from None


def measure_rig_latency(sd, sink: int, monitor: int, tries: int = 3) -> int:
    """The rig's own round trip in samples: played into ``sink``, recorded from ``monitor``.

    The room stream adds this to every measurement: the user's voice reaches the agent's
    microphone sink that much after the room writes it (playback half), and the agent's
    speaker sink is recorded that much after it sounded (capture half). In a real room
    both are air, a few ms. Measured with a stream set up like the room's; median of
    ``tries`` clicks.
    """
    length = SR // 2
    at = SR // 10
    click = np.zeros(length, dtype=np.float32)
    click[at : at + 80] = 0.5 * np.sin(2 * np.pi * 1000 * np.arange(80) / SR)
    found = []
    for _ in range(tries):
        heard = sd.playrec(
            click, samplerate=SR, channels=1, dtype="float32", blocking=True,
            device=(monitor, sink), blocksize=BLOCK, latency="low",
        )[:, 0]  # fmt: skip
        loud = np.flatnonzero(np.abs(heard) > 0.05)
        if loud.size:
            found.append(int(loud[0]) - at)
    if not found:
        raise EngineUnavailableError(
            f"calibration click played into {sink} never came back from {monitor}"
        )
    return max(0, int(np.median(found)))


def _first_sound(output: np.ndarray, start: int, limit: int) -> int:
    """The first audible sample of ``output`` at or after ``start`` (within ``limit``)."""
    span = np.flatnonzero(np.abs(output[start : start + limit]) > 1e-4)
    return start + int(span[0]) if span.size else start


class _Room:
    """The user's side of the room as a PortAudio callback: plays the script into the
    agent's microphone sink (with the echo of what the agent played) and records both."""

    def __init__(self, script: ScenarioScript, sd: Any, done: Callable[[], object]) -> None:
        self.sd = sd
        self.total = script.total
        self.user, self.echo = script.user, script.echo_path()
        self.output = np.zeros(self.total, dtype=np.float32)
        self.mic = np.zeros(self.total, dtype=np.float32)
        self.pos = 0
        self.done = done

    def __call__(
        self, indata: np.ndarray, outdata: np.ndarray, frames: int, _t: Any, _status: Any
    ) -> None:
        # Runs on PortAudio's thread: never waits.
        pos, n = self.pos, max(0, min(frames, self.total - self.pos))
        played = indata[:n, 0]
        self.output[pos : pos + n] = played
        heard = self.user[pos : pos + n].copy()
        if self.echo is not None:
            heard += self.echo.process(played)
        self.mic[pos : pos + n] = heard
        outdata[:] = 0
        outdata[:n, 0] = heard
        self.pos += frames
        if self.pos >= self.total:
            self.done()
            raise self.sd.CallbackStop


def _on_room_time(
    raw: list[tuple[Any, float]], origin: float, output: np.ndarray
) -> list[dict[str, Any]]:
    """Events on the room's time base: seconds since the room stream started; a
    first_audio is placed where its sound actually reached the room."""
    events = []
    for e, t in raw:
        d = e.to_dict()
        d["t"] = t - origin
        if d["type"] == "first_audio":
            d["output_sample"] = _first_sound(output, max(0, int(d["t"] * SR) - BLOCK), SR // 2)
        events.append(d)
    return events


async def run_scenario_realtime(
    model: AgentModel, scenario: Scenario, base: AgentConfig, seed: int = 0
) -> RunRecord:
    """Run ``scenario`` through PulseAudio null sinks in real time."""
    from parley.agent.core.live import connect_devices
    from parley.speech_io.pulse import pulse_null_sinks
    from parley.speech_io.soundcard import load_sounddevice

    sd = load_sounddevice()
    script = ScenarioScript(scenario, seed)
    config = agent_config_for(base, scenario)
    loop = asyncio.get_running_loop()
    done = asyncio.Event()
    room = _Room(script, sd, lambda: loop.call_soon_threadsafe(done.set))

    with pulse_null_sinks(SINKS) as dev:
        rig = measure_rig_latency(sd, dev.sinks["parley_in"], dev.monitors["parley_in"])
        clock = MonotonicClock()
        session = DuplexSession(model, config, clock=clock)
        raw: list[tuple[Any, float]] = []
        session.subscribe(lambda e: raw.append((e, clock.now())))
        # Underrun lines from ALSA would land in the middle of the bench's report.
        transport = connect_devices(
            session,
            dev.monitors["parley_in"],
            dev.sinks["parley_out"],
            capture_native_stderr=True,
        )
        session.subscribe(
            lambda e: (
                script.reply_started(room.pos, room.pos) if isinstance(e, FirstAudio) else None
            )
        )
        stream = sd.Stream(
            device=(dev.monitors["parley_out"], dev.sinks["parley_in"]),
            samplerate=SR, blocksize=BLOCK, channels=1, dtype="float32",
            latency="low", callback=room,
        )  # fmt: skip
        try:
            async with transport:
                stream.start()
                origin = clock.now()
                async with asyncio.timeout(script.total / SR + 30):
                    await done.wait()
        finally:
            stream.close()
            await session.aclose()

    # What the agent played, as it sounded at its speaker sink: the recording is late by
    # the rig's round trip (see measure_rig_latency), so it moves back by that much.
    output = np.concatenate([room.output[rig:], np.zeros(rig, dtype=np.float32)])
    return script.record(
        mic=room.mic,
        output=output,
        events=_on_room_time(raw, origin, output),
        endpoint_silence_ms=float(config.endpoint_silence_ms),
        model_compute_s=session.compute_s,
        realtime=True,
        rig_latency_ms=rig * 1000.0 / SR,
    )
