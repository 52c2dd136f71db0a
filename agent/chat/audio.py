"""The chat app's audio side: a tap between the session and whatever moves the samples,
and the backends that move them (sound devices, or an in-memory room for tests).

Nothing here waits on the UI. The tap runs on the event loop inside the transport's pump:
it applies mute and push-to-talk, keeps both channels for saving and stores the latest
levels as plain floats; the app reads those on its own timer. The PortAudio callbacks
themselves stay inside :class:`~parley.speech_io.devices.DeviceTransport`, which never
waits on the loop.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any, Protocol

import numpy as np

from parley.agent.chat.stats import level_db
from parley.agent.core.session import DuplexSession
from parley.speech_io.audio import SAMPLE_RATE as SR
from parley.speech_io.soundcard import DeviceInfo, TransportStats

MAX_RECORD_S = 3600  # both channels are kept for saving; an hour is ~230 MB each


class _Recording:
    """Samples appended in chunks, with the newest ones removable (a rewound output)."""

    def __init__(self, limit: int) -> None:
        self._chunks: list[np.ndarray] = []
        self.length = 0
        self._limit = limit

    def append(self, x: np.ndarray) -> None:
        if self.length + len(x) <= self._limit:
            self._chunks.append(x.copy())
            self.length += len(x)

    def drop_newest(self, n: int) -> None:
        while n > 0 and self._chunks:
            last = self._chunks[-1]
            if len(last) <= n:
                self._chunks.pop()
                self.length -= len(last)
                n -= len(last)
            else:
                self._chunks[-1] = last[: len(last) - n]
                self.length -= n
                n = 0

    def samples(self) -> np.ndarray:
        return np.concatenate(self._chunks) if self._chunks else np.zeros(0, np.float32)

    def span(self, a: int, b: int) -> np.ndarray:
        """Samples ``[a, b)``; only called on a turn's end, so concatenating is fine."""
        return self.samples()[max(0, a) : max(0, b)]


class ChatEndpoint:
    """The session as a transport sees it, with the app's controls in between.

    ``muted`` (or push-to-talk mode while not talking) sends silence to the session
    instead of the microphone, so the VAD, echo canceller and turn logic see a silent
    user rather than a gap. ``subscribe`` passes through, so
    :func:`~parley.agent.core.live.connect_devices` can take this in place of the session.
    """

    def __init__(self, session: DuplexSession, record_s: int = MAX_RECORD_S) -> None:
        self.session = session
        self.sample_rate = session.sample_rate
        self.muted = False
        self.push_to_talk = False
        self.talking = False  # push-to-talk: the talk key is held down (toggled)
        self.mic_db = -100.0  # level of the last block heard, before mute
        self.out_db = -100.0
        self.mic = _Recording(record_s * SR)
        self.out = _Recording(record_s * SR)

    @property
    def open(self) -> bool:
        """Whether the microphone reaches the session now."""
        return not self.muted and (self.talking or not self.push_to_talk)

    def subscribe(self, listener: Callable[[Any], None]) -> None:
        self.session.subscribe(listener)

    def push_input(self, samples: np.ndarray) -> None:
        self.mic_db = level_db(samples)
        if not self.open:
            samples = np.zeros_like(samples)
        self.mic.append(samples)
        self.session.push_input(samples)

    def pull_output(self, n: int) -> np.ndarray:
        out = self.session.pull_output(n)
        self.out_db = level_db(out)
        self.out.append(out)
        return out

    def rewind_output(self, n: int) -> None:
        self.out.drop_newest(n)
        self.session.rewind_output(n)

    def played_silence(self, n: int) -> None:
        self.out.append(np.zeros(n, dtype=np.float32))
        self.session.played_silence(n)

    @property
    def vad_speech(self) -> bool:
        """The detector's current decision (confirmed or tentative speech)."""
        detector = self.session.input.detector
        return detector.is_speech or detector.tentative


class AudioBackend(Protocol):
    """What moves samples between the endpoint and the world."""

    description: str

    async def start(self, endpoint: ChatEndpoint) -> None: ...

    async def wait(self) -> None:
        """Return when the audio stops by itself; raise what stopped it, if anything did."""

    async def aclose(self) -> None: ...

    @property
    def stats(self) -> TransportStats: ...

    def devices(self) -> list[DeviceInfo]:
        """Devices to offer in the picker (empty when there is nothing to pick)."""


class _Scoped:
    """The endpoint for one transport: the session listener ``connect_devices`` adds (drop
    the device buffer on a pause) goes quiet once that transport is closed, so a transport
    left behind by a device switch never rewinds the session again."""

    def __init__(self, endpoint: ChatEndpoint) -> None:
        self.endpoint = endpoint
        self.sample_rate = endpoint.sample_rate
        self.push_input = endpoint.push_input
        self.pull_output = endpoint.pull_output
        self.rewind_output = endpoint.rewind_output
        self.played_silence = endpoint.played_silence
        self.closed = False

    def subscribe(self, listener: Callable[[Any], None]) -> None:
        self.endpoint.subscribe(lambda event: None if self.closed else listener(event))


CHAT_AHEAD_BLOCKS = 6


class DeviceBackend:
    """Sound cards through :class:`~parley.speech_io.devices.DeviceTransport`, in 10 ms
    blocks, with the output dropped the moment playback pauses (``connect_devices``)."""

    def __init__(
        self, input_device: int | str | None = None, output_device: int | str | None = None
    ) -> None:
        self.input_device, self.output_device = input_device, output_device
        self.description = "devices"
        self.latency_ms = 0.0  # input + output buffer, as PortAudio reports them
        self._transport: Any = None
        self._scope: _Scoped | None = None

    async def start(self, endpoint: ChatEndpoint) -> None:
        from parley.agent.core.live import connect_devices

        self._scope = _Scoped(endpoint)
        self._transport = connect_devices(
            self._scope,  # type: ignore[arg-type]  # duck-typed: it only pumps and subscribes
            self.input_device,
            self.output_device,
            block_ms=10,
            # The UI redraws on the loop that tops the output up: 60 ms of lead rides out a
            # slow frame. It costs no reaction time, since a pause drops the lead and a
            # reply's first audio jumps it (connect_devices).
            ahead_blocks=CHAT_AHEAD_BLOCKS,
        )
        await self._transport.start()
        t = self._transport
        self.latency_ms = 1000.0 * (t.input_format.latency + t.output_format.latency)
        self.description = (
            f"in {t.input_format.device.name} / out {t.output_format.device.name} "
            f"({1000 * t.output_format.latency:.0f} ms)"
        )

    async def wait(self) -> None:
        await self._transport.wait()

    async def aclose(self) -> None:
        if self._scope is not None:
            self._scope.closed = True
        if self._transport is not None:
            await self._transport.aclose()

    @property
    def stats(self) -> TransportStats:
        return self._transport.stats if self._transport is not None else TransportStats()

    def devices(self) -> list[DeviceInfo]:
        from parley.speech_io.soundcard import list_devices

        return list_devices()


class VirtualBackend:
    """An in-memory room: the user's channel goes in, the agent's output is collected.

    ``speed`` paces frames to the wall clock (1.0: real time, 3.0: three times as fast),
    and at real time a frame more than 50 ms late counts as an underrun; without it frames run as fast
    as the session settles, and ``on_frame`` (say, a virtual clock's setter) sees
    the input time after each one. ``fail_at`` raises a device error at that input sample,
    standing in for an unplugged device.
    """

    def __init__(
        self,
        user: np.ndarray,
        *,
        frame: int = 160,
        speed: float | None = None,
        tail_s: float = 0.0,
        on_frame: Callable[[float], None] | None = None,
        settle: bool = True,
        fail_at: int | None = None,
    ) -> None:
        self.user = np.asarray(user, dtype=np.float32)
        self.total = len(self.user) + round(tail_s * SR)
        self.frame, self.speed, self._on_frame = frame, speed, on_frame
        self._settle, self.fail_at = settle, fail_at
        self.description = "virtual audio (in memory)"
        self.position = 0
        self.played = _Recording(self.total + frame)
        self._task: asyncio.Task[None] | None = None
        self._stats = TransportStats()
        self.resume = asyncio.Event()  # tests may hold the room still between phases
        self.resume.set()

    async def start(self, endpoint: ChatEndpoint) -> None:
        self._task = asyncio.create_task(self._run(endpoint), name="parley-virtual-room")

    async def _run(self, endpoint: ChatEndpoint) -> None:
        from parley.speech_io.devices import AudioDeviceError

        session = endpoint.session
        t0 = time.perf_counter()
        self.played.append(endpoint.pull_output(self.frame))
        while self.position < self.total:
            await self.resume.wait()
            if self.fail_at is not None and self.position >= self.fail_at:
                raise AudioDeviceError("virtual device vanished (simulated unplug)")
            chunk = self.user[self.position : self.position + self.frame]
            if len(chunk) < self.frame:
                chunk = np.concatenate([chunk, np.zeros(self.frame - len(chunk), np.float32)])
            endpoint.push_input(chunk)
            self.position += self.frame
            self._stats.input_blocks += 1
            if self._on_frame is not None:
                self._on_frame(self.position / SR)
            if self._settle:
                await session.settle()
            self.played.append(endpoint.pull_output(self.frame))
            self._stats.output_blocks += 1
            if self.speed:
                ahead = t0 + self.position / SR / self.speed - time.perf_counter()
                if ahead < -0.05 and self.speed <= 1.0:
                    # A real device would have starved; faster than real time, no device
                    # would have asked that soon, so lateness then is not an underrun.
                    self._stats.output_underruns += 1
                await asyncio.sleep(max(0.0, ahead))
            else:
                await asyncio.sleep(0)  # let the UI run between frames

    async def wait(self) -> None:
        assert self._task is not None
        await self._task

    async def aclose(self) -> None:
        if self._task is not None and not self._task.done():
            self._task.cancel()
            await asyncio.wait([self._task])

    @property
    def stats(self) -> TransportStats:
        return self._stats

    def devices(self) -> list[DeviceInfo]:
        return []


BackendFactory = Callable[[int | str | None, int | str | None], AudioBackend]
