"""The samples between an audio endpoint and two device streams, without PortAudio.

:class:`~parley.speech_io.devices.DeviceTransport` opens the streams; this is what moves
and counts their samples. The device side (``device_input``/``device_output``) runs on
PortAudio's callback threads and only touches the rings; the loop side (``service``,
``clear``) is the only one that calls the endpoint. Each counter is written by one side
only, so plain ints need no lock.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Protocol

import numpy as np

from parley.speech_io.resample import Resampler
from parley.speech_io.ring import SampleFifo
from parley.speech_io.soundcard import AudioDeviceError, Kind, StreamFormat, TransportStats


class AudioEndpoint(Protocol):
    """The session side of a transport. Only ever called on the event loop thread."""

    sample_rate: int

    def push_input(self, samples: np.ndarray) -> None:
        """Consecutive microphone samples, float32 mono."""

    def pull_output(self, n: int) -> np.ndarray:
        """The next ``n`` samples to play, float32 mono, exactly ``n``."""

    def rewind_output(self, n: int) -> None:
        """The last ``n`` pulled samples were never played."""

    def played_silence(self, n: int) -> None:
        """The speaker played ``n`` samples of silence that were never pulled (its buffer
        ran dry, as it does right after a clear): what is pulled next plays that much
        later than the count of pulled samples says."""


class BlockPump:
    """Microphone blocks into the endpoint in fixed frames, and the endpoint's output kept
    ``ahead_blocks`` device blocks ahead in a ring the output stream plays from; devices at
    other rates are converted with soxr, input takes channel 0 (the caller's job)."""

    def __init__(
        self,
        endpoint: AudioEndpoint,
        in_fmt: StreamFormat,
        out_fmt: StreamFormat,
        *,
        sample_rate: int,
        block_ms: int,
        ahead_blocks: int,
        input_buffer_ms: int,
        stats: TransportStats,
    ) -> None:
        self._endpoint = endpoint
        self.stats = stats
        self.sample_rate = sample_rate
        self._frame = sample_rate * block_ms // 1000
        self._in_ring = SampleFifo(
            max(in_fmt.sample_rate * input_buffer_ms // 1000, 4 * in_fmt.blocksize)
        )
        self._rs_in = Resampler(in_fmt.sample_rate, sample_rate)
        self._in_pending = np.zeros(0, dtype=np.float32)
        self._out_rate = out_fmt.sample_rate
        block = out_fmt.blocksize
        self._ahead = ahead_blocks * block
        # PortAudio fills its whole device buffer from back-to-back callbacks at start,
        # before the pump can run: the first fill covers that as well as the usual lead.
        self.prime = self._ahead + (math.ceil(out_fmt.latency * self._out_rate / block) + 1) * block
        # Top-up stops past the target by less than a frame, but a resampler may release a
        # little more than one frame's worth at once: leave it room.
        self._out_ring = SampleFifo(self.prime + 4 * block + 64)
        self._rs_out = Resampler(sample_rate, self._out_rate)
        # Endpoint samples pulled, and output ring read count, at start or the last clear.
        self._seg_pulled = self._seg_read0 = 0
        self._clear_pending = False
        # Device samples of silence played for lack of output (written by the output
        # thread only), how many of them the endpoint has been told of, and the part of an
        # endpoint sample not yet told.
        self._gap = self._gap_told = 0
        self._gap_rest = 0

    # ------------------------------------------------------------------ device threads

    def device_input(self, mono: np.ndarray) -> None:
        """A microphone block (one channel); what does not fit the ring is dropped."""
        n = self._in_ring.write(mono)
        if n < len(mono):
            self.stats.input_overruns += 1
            self.stats.input_dropped += len(mono) - n
        self.stats.input_blocks += 1

    def device_output(self, mono: np.ndarray) -> None:
        """Fill a speaker block (one channel); silence for whatever the ring lacks."""
        got = self._out_ring.read_into(mono)
        if got < len(mono):
            mono[got:] = 0.0
            self._gap += len(mono) - got
            if not self._clear_pending:  # the gap after a clear was asked for
                self.stats.output_underruns += 1
                self.stats.output_missing += len(mono) - got
        self.stats.output_blocks += 1

    # ------------------------------------------------------------------ event loop

    def service(self, fill: int | None = None) -> None:
        """One pump step: microphone first (a barge-in it triggers shapes the very next
        pull), then top the output ring up to ``fill`` device samples (default: the usual
        lead). Fixed frames both ways."""
        data = self._in_ring.read_all()
        if data.size:
            data = self._rs_in.push(data)
            pending = np.concatenate((self._in_pending, data)) if self._in_pending.size else data
            k, frame = 0, self._frame
            while pending.size - k >= frame:
                self._endpoint.push_input(pending[k : k + frame])
                k += frame
            self._in_pending = pending[k:]
        self._tell_gap()
        for _ in range(64):  # bounded: a fresh resampler may hold back its first frames
            if len(self._out_ring) >= (fill or self._ahead):
                break
            x = np.asarray(self._endpoint.pull_output(self._frame), dtype=np.float32)
            if x.shape != (self._frame,):
                raise ValueError(f"pull_output({self._frame}) returned shape {x.shape}")
            self._seg_pulled += self._frame
            x = self._rs_out.push(x)
            if self._out_ring.write(x) != len(x):
                raise RuntimeError("output ring overflow: rewind counts would be wrong")
            self._clear_pending = False

    def _tell_gap(self) -> None:
        """Silence the device played for lack of output moves the endpoint's output
        timeline on by as much: else every gap (one after each clear) would make the echo
        come later than the echo canceller has learnt, by the gaps added up."""
        gap = self._gap
        if gap == self._gap_told:
            return
        self._gap_rest += (gap - self._gap_told) * self.sample_rate
        self._gap_told = gap
        n, self._gap_rest = divmod(self._gap_rest, self._out_rate)
        if n:
            self._endpoint.played_silence(n)

    def clear(self) -> int:
        """Drop the output not yet handed to the device (barge-in), tell the endpoint with
        ``rewind_output`` and return how many endpoint samples that was."""
        self._clear_pending = True  # set first: the gap until the next top-up is not an underrun
        _, consumed = self._out_ring.clear()
        played = (consumed - self._seg_read0) * self.sample_rate // self._out_rate
        n = max(0, self._seg_pulled - played)
        # A new segment: the resampler's held-back input was just counted as unplayed.
        self._seg_read0, self._seg_pulled = consumed, 0
        self._rs_out = Resampler(self.sample_rate, self._out_rate)
        self.stats.cleared += n
        if n:
            self._endpoint.rewind_output(n)
        return n


class StallWatch:
    """Raises when a stream has delivered no block for ``timeout`` seconds."""

    def __init__(self, timeout: float, now: float) -> None:
        self.timeout = timeout
        self._progress: dict[Kind, tuple[int, float]] = {"input": (-1, now), "output": (-1, now)}

    def check(self, stats: TransportStats, now: float, describe: Callable[[Kind], str]) -> None:
        """Note the blocks counted by ``now``; raise for a stream that has stalled
        (``describe`` names its device)."""
        counts: dict[Kind, int] = {"input": stats.input_blocks, "output": stats.output_blocks}
        for kind, count in counts.items():
            seen, since = self._progress[kind]
            if count != seen:
                self._progress[kind] = (count, now)
            elif now - since > self.timeout:
                raise AudioDeviceError(
                    f"{kind} device {describe(kind)} delivered no audio for "
                    f"{now - since:.1f} s (unplugged, or held by another program?)"
                )
