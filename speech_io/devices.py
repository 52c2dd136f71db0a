"""Sound-card input and output for the duplex session, through sounddevice (PortAudio).

sounddevice itself is imported in one place only, :func:`~parley.speech_io.soundcard.load_sounddevice`,
when a transport starts, so importing this module works on a machine without PortAudio.

Threading: PortAudio calls the stream callbacks on its own threads; the session's
:class:`AudioEndpoint` may only be touched on the event loop thread. The callbacks therefore
never call the endpoint and never wait on the loop: the input callback copies its block into
a ring and wakes the loop (``call_soon_threadsafe``); the output callback plays what the loop
has already put into the output ring, and silence for whatever is missing. One pump task on
the loop moves microphone blocks into ``push_input`` and keeps the output ring a couple of
blocks ahead with ``pull_output``.

Input and output are two separate streams, not one duplex stream: with the ALSA PulseAudio
plugin a duplex stream whose sound server died hung ``Pa_AbortStream`` for good, while
separate streams reported the loss and closed.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import threading
from typing import Any

import numpy as np

from parley.speech_io.audio import SAMPLE_RATE
from parley.speech_io.block_pump import AudioEndpoint, BlockPump, StallWatch
from parley.speech_io.native_stderr import NativeStderr
from parley.speech_io.soundcard import (
    AudioDeviceError,
    DeviceInfo,
    Kind,
    StreamFormat,
    TransportStats,
    _negotiate,
    _pick,
    abandon_streams,
    find_device,
    list_devices,
    load_sounddevice,
    refresh_devices,
)

__all__ = [
    "AudioDeviceError",
    "AudioEndpoint",
    "DeviceInfo",
    "DeviceTransport",
    "StreamFormat",
    "TransportStats",
    "find_device",
    "list_devices",
    "refresh_devices",
]

log = logging.getLogger(__name__)

_FLAGS = ("input_underflow", "input_overflow", "output_underflow", "output_overflow")


def _settle(fut: asyncio.Future[Exception | None], value: Exception | None) -> None:
    if not fut.done():
        fut.set_result(value)


class DeviceTransport:
    """Connects an :class:`AudioEndpoint` to a sound card: microphone in, speaker out.

    ``input_device``/``output_device``: ``None`` (the default device), an index or a name,
    as :func:`find_device` takes them. Audio moves in blocks of ``block_ms``; the output
    ring is kept ``ahead_blocks`` blocks ahead of the device. A device that cannot take
    ``sample_rate`` mono is opened at a rate and channel count it accepts (or at
    ``device_sample_rate``/``device_channels`` when given) and converted with soxr; input
    takes channel 0, output goes to every channel.

    Use as ``async with DeviceTransport(endpoint) as t: ...`` or ``start()``/``aclose()``.
    When a device fails or stalls for ``stall_timeout`` seconds the transport stops itself,
    logs an :class:`AudioDeviceError`, and raises it from :meth:`wait` and on leaving the
    ``async with`` block. Errors raised by the endpoint stop it the same way.

    Options: ``latency`` is PortAudio's suggested latency (seconds, or "low"/"high");
    ``input_buffer_ms`` is how far the loop may fall behind the microphone before blocks
    are dropped (counted in :attr:`stats`); ``close_timeout`` bounds how long closing a
    broken device may take. Timing uses the event loop's clock only.
    """

    def __init__(
        self,
        endpoint: AudioEndpoint,
        input_device: int | str | None = None,
        output_device: int | str | None = None,
        block_ms: int = 10,
        sample_rate: int = SAMPLE_RATE,
        *,
        ahead_blocks: int = 2,
        latency: float | str = "low",
        device_sample_rate: int | None = None,
        device_channels: int | None = None,
        input_buffer_ms: int = 500,
        stall_timeout: float = 3.0,
        close_timeout: float = 2.0,
        capture_native_stderr: bool = False,
    ) -> None:
        if block_ms <= 0 or ahead_blocks < 1 or (sample_rate * block_ms) % 1000:
            raise ValueError(
                f"block_ms={block_ms} must be positive, a whole number of samples at {sample_rate} Hz"
            )
        if getattr(endpoint, "sample_rate", sample_rate) != sample_rate:
            raise ValueError(
                f"endpoint runs at {endpoint.sample_rate} Hz, transport at {sample_rate} Hz"
            )
        self.sample_rate = sample_rate
        self._endpoint = endpoint
        self._specs: dict[Kind, int | str | None] = {"input": input_device, "output": output_device}
        self._block_ms, self._ahead_blocks, self._latency = block_ms, ahead_blocks, latency
        self._force = (device_sample_rate, device_channels)
        self._input_buffer_ms, self._stall_timeout, self._close_timeout = (
            input_buffer_ms,
            stall_timeout,
            close_timeout,
        )
        self.input_format: StreamFormat | None = None
        self.output_format: StreamFormat | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._event = asyncio.Event()
        self._wake_pending = False
        self._task: asyncio.Task[None] | None = None
        self._streams: list[Any] = []
        # ALSA/PortAudio print underruns and failed assertions to fd 2 while streams live.
        # Opt-in: fd 2 is process-wide, and a full-screen app that draws on it (Textual
        # does) would vanish into the log with the chatter.
        self._native = NativeStderr() if capture_native_stderr else None
        self._stopping = False
        self._stopped = asyncio.Event()
        self._state = "new"
        self._error: BaseException | None = None
        self._failure: tuple[Kind, str] | None = None
        # Each field is written by one thread only (input_*, output_*, cleared: the loop),
        # so plain ints need no lock; flags are kept per stream and merged on reading.
        self._stats = TransportStats()
        self._flags: dict[Kind, dict[str, int]] = {"input": {}, "output": {}}
        self.pump: BlockPump | None = None
        self._scratch = np.zeros(0, dtype=np.float32)

    # ------------------------------------------------------------------ public surface

    @property
    def stats(self) -> TransportStats:
        """A snapshot of the counters."""
        flags = dict(self._flags["input"])
        for k, v in self._flags["output"].items():
            flags[k] = flags.get(k, 0) + v
        return dataclasses.replace(self._stats, status_flags=flags)

    @property
    def error(self) -> BaseException | None:
        """What stopped the transport, if anything did."""
        return self._error

    async def __aenter__(self) -> DeviceTransport:
        await self.start()
        return self

    async def __aexit__(self, exc_type: object, exc: object, tb: object) -> None:
        await self.aclose()
        if exc_type is None and self._error is not None:
            raise self._error

    async def start(self) -> None:
        """Find and open the devices, prefill the output, start the streams and the pump."""
        if self._state != "new":
            raise RuntimeError(f"DeviceTransport cannot start when {self._state}")
        self._state = "starting"
        self._loop = asyncio.get_running_loop()
        if self._native is not None:
            self._native.start()
        try:
            sd = self._sd = load_sounddevice()
            devices = await asyncio.to_thread(list_devices)
            fmts = []
            for kind in ("input", "output"):
                dev = _pick(devices, self._specs[kind], kind)
                fmts.append(
                    await asyncio.to_thread(
                        _negotiate, sd, dev, kind, self.sample_rate, self._block_ms, *self._force
                    )
                )
            pump = self.prepare(*await asyncio.to_thread(self._open_streams, sd, fmts))
            pump.service(pump.prime)
            await asyncio.to_thread(self._start_streams, sd)
            self._task = asyncio.create_task(self._run(), name="parley-audio-pump")
            self._state = "running"
        except BaseException:
            await self._close_streams()
            self._state = "closed"
            self._stopped.set()
            raise

    async def wait(self) -> None:
        """Return once the transport has stopped; raise the error that stopped it, if any."""
        if self._state == "new":
            raise RuntimeError("DeviceTransport.wait() before start()")
        await self._stopped.wait()
        if self._error is not None:
            raise self._error

    async def aclose(self) -> None:
        """Stop the pump and the streams. Unplayed output is dropped, never drained."""
        if self._state in ("new", "closed"):
            self._state = "closed"
            return
        self._stopping = True
        if self._task is not None and not self._task.done():
            self._task.cancel()
            await asyncio.wait([self._task])
        await self._close_streams()
        self._state = "closed"
        self._stopped.set()

    def clear_output(self) -> int:
        """Drop the output not yet handed to the device (barge-in), tell the endpoint with
        ``rewind_output`` and return how many endpoint samples that was. What the device
        already holds (about ``output_format.latency``) still plays."""
        if self.pump is None:
            return 0
        n = self.pump.clear()
        self._event.set()
        return n

    # ------------------------------------------------------------------ loop side

    def prepare(self, in_fmt: StreamFormat, out_fmt: StreamFormat) -> BlockPump:
        """The pump for streams of these formats (no PortAudio involved: tests drive it)."""
        self.input_format, self.output_format = in_fmt, out_fmt
        self.pump = BlockPump(
            self._endpoint,
            in_fmt,
            out_fmt,
            sample_rate=self.sample_rate,
            block_ms=self._block_ms,
            ahead_blocks=self._ahead_blocks,
            input_buffer_ms=self._input_buffer_ms,
            stats=self._stats,
        )
        self._scratch = np.zeros(4 * out_fmt.blocksize, dtype=np.float32)
        return self.pump

    def check_health(self, watch: StallWatch, now: float) -> None:
        """Raise for a failed stream, or one that has stalled."""
        if self._failure is not None:
            kind, why = self._failure
            raise AudioDeviceError(
                f"{kind} device {self._fmt(kind).device.describe()} failed: {why}"
            )
        watch.check(self._stats, now, lambda kind: self._fmt(kind).device.describe())

    def _fmt(self, kind: Kind) -> StreamFormat:
        fmt = self.input_format if kind == "input" else self.output_format
        assert fmt is not None
        return fmt

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        watch = StallWatch(self._stall_timeout, loop.time())
        pump = self.pump
        assert pump is not None
        try:
            while True:
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(self._stall_timeout / 4):
                        await self._event.wait()
                self._event.clear()
                # Reset before servicing: a block written from here on wakes us again.
                self._wake_pending = False
                pump.service()
                self.check_health(watch, loop.time())
        except Exception as exc:
            if isinstance(exc, AudioDeviceError):
                log.error("audio transport stopped: %s", exc)
            else:
                log.exception("audio transport stopped: the endpoint failed")
            self._error = exc
            self._stopping = True
            await self._close_streams()
            self._stopped.set()

    # ------------------------------------------------------------------ PortAudio side

    def _open_streams(self, sd: Any, fmts: list[StreamFormat]) -> list[StreamFormat]:
        """Open (not start) both streams; return their formats with PortAudio's latency.
        Runs in a worker thread: opening a device can take a while."""
        opened = []
        for kind, fmt in zip(("input", "output"), fmts, strict=True):
            cls, cb = (
                (sd.InputStream, self._input_callback)
                if kind == "input"
                else (sd.OutputStream, self._output_callback)
            )
            try:
                stream = cls(
                    device=fmt.device.index,
                    samplerate=fmt.sample_rate,
                    channels=fmt.channels,
                    dtype="float32",
                    blocksize=fmt.blocksize,
                    latency=self._latency,
                    callback=cb,
                    finished_callback=lambda kind=kind: self._on_finished(kind),
                )
            except (sd.PortAudioError, ValueError) as exc:
                raise AudioDeviceError(
                    f"cannot open {kind} device {fmt.device.describe()}: {exc}"
                ) from None
            self._streams.append(stream)
            opened.append(dataclasses.replace(fmt, latency=float(stream.latency)))
        return opened

    def _start_streams(self, sd: Any) -> None:
        try:
            for stream in self._streams:
                stream.start()
        except sd.PortAudioError as exc:
            raise AudioDeviceError(f"cannot start audio streams: {exc}") from None

    def _wake(self) -> None:
        loop = self._loop
        if loop is None or self._wake_pending:
            return
        self._wake_pending = True
        with contextlib.suppress(RuntimeError):  # the loop is closing: nobody left to wake
            loop.call_soon_threadsafe(self._event.set)

    def _note(self, kind: Kind, status: Any) -> None:
        if status:
            flags = self._flags[kind]
            for name in _FLAGS:
                if getattr(status, name, False):
                    flags[name] = flags.get(name, 0) + 1

    def _input_callback(self, indata: np.ndarray, frames: int, time: Any, status: Any) -> None:
        try:
            self._note("input", status)
            assert self.pump is not None
            self.pump.device_input(indata[:, 0])
            self._wake()
        except Exception as exc:  # PortAudio would print it and keep calling us
            self._callback_failed("input", exc)

    def _output_callback(self, outdata: np.ndarray, frames: int, time: Any, status: Any) -> None:
        try:
            self._note("output", status)
            assert self.pump is not None
            if outdata.shape[1] == 1:
                self.pump.device_output(outdata[:, 0])
            else:
                if len(self._scratch) < frames:
                    self._scratch = np.zeros(frames, dtype=np.float32)
                mono = self._scratch[:frames]
                self.pump.device_output(mono)
                outdata[:] = mono[:, None]
            self._wake()
        except Exception as exc:
            outdata.fill(0)
            self._callback_failed("output", exc)

    def _callback_failed(self, kind: Kind, exc: Exception) -> None:
        self._failure = (kind, f"callback error: {exc!r}")
        self._wake()
        sd = getattr(self, "_sd", None)
        if sd is not None:  # None only when a test drives the callbacks without PortAudio
            raise sd.CallbackAbort from None

    def _on_finished(self, kind: Kind) -> None:
        if not self._stopping and self._failure is None:
            self._failure = (
                kind,
                "the stream stopped by itself (device unplugged or sound server gone?)",
            )
        self._wake()

    def _stop_native(self) -> None:
        if self._native is not None:
            self._native.stop()

    async def _close_streams(self) -> None:
        streams, self._streams = self._streams, []
        if not streams:
            self._stop_native()
            return
        self._stopping = True
        loop = asyncio.get_running_loop()
        done: asyncio.Future[Exception | None] = loop.create_future()

        def close() -> None:
            err: Exception | None = None
            for stream in streams:
                try:
                    stream.abort()  # cancel, never drain
                    stream.close()
                except Exception as exc:
                    err = exc
            with contextlib.suppress(RuntimeError):  # the loop is gone: nobody is waiting
                loop.call_soon_threadsafe(_settle, done, err)

        # A daemon thread, not the default executor: a stream whose device vanished can hang
        # in PortAudio, and that must neither block the loop nor keep the process alive.
        threading.Thread(target=close, name="parley-audio-close", daemon=True).start()
        try:
            async with asyncio.timeout(self._close_timeout):
                err = await done
        except TimeoutError:
            err = AudioDeviceError(f"audio streams did not close within {self._close_timeout} s")
            self._error = self._error or err
            sd = getattr(self, "_sd", None)
            if sd is not None:
                abandon_streams(sd, f"a stream did not close within {self._close_timeout} s")
        self._stop_native()
        if err is not None:
            log.warning("closing audio streams: %s", err)
