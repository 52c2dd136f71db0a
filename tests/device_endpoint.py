"""Shared by the device tests: a recording endpoint and small signal helpers."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from parley.speech_io.devices import (
    DeviceInfo,
    DeviceTransport,
    StreamFormat,
)

SR = 16000
BLOCK = 160


def _tone(n: int, freq: float = 440.0, rate: int = SR, amp: float = 0.5) -> np.ndarray:
    return (amp * np.sin(2 * np.pi * freq * np.arange(n) / rate)).astype(np.float32)


class _Endpoint:
    """Plays ``signal`` (then silence), records the microphone; loop-time stamps both."""

    sample_rate = SR

    def __init__(self, signal: np.ndarray, clock: Callable[[], float] | None = None) -> None:
        self.signal, self.pos, self.silent = signal, 0, False
        self.pulled = self.rewound = self.gaps = 0
        self.received: list[np.ndarray] = []
        self.clock = clock or (lambda: 0.0)
        self.pull_log: list[tuple[int, float]] = []  # (signal position, time)
        self.push_log: list[float] = []

    def push_input(self, samples: np.ndarray) -> None:
        self.received.append(np.array(samples, copy=True))
        self.push_log.append(self.clock())

    def pull_output(self, n: int) -> np.ndarray:
        out = np.zeros(n, dtype=np.float32)
        if not self.silent:
            chunk = self.signal[self.pos : self.pos + n]
            out[: len(chunk)] = chunk
            self.pull_log.append((self.pos, self.clock()))
            self.pos += n
        self.pulled += n
        return out

    def rewind_output(self, n: int) -> None:
        self.pos -= n
        self.rewound += n

    def played_silence(self, n: int) -> None:
        self.gaps += n

    def mic(self) -> np.ndarray:
        return np.concatenate(self.received) if self.received else np.zeros(0, np.float32)


def _dev(index: int, name: str, ins: int, outs: int, **kw: Any) -> DeviceInfo:
    return DeviceInfo(index, name, "ALSA", ins, outs, 48000.0, **kw)


def _core(ep: _Endpoint, rate: int = SR, channels: int = 1, **kw: Any) -> DeviceTransport:
    """A transport with rings set up for ``rate``/``channels`` streams, no PortAudio."""
    t = DeviceTransport(ep, **kw)
    block = rate // 100
    t.prepare(
        StreamFormat(_dev(0, "mic", 2, 0), rate, channels, block),
        StreamFormat(_dev(1, "spk", 0, 2), rate, channels, block),
    )
    return t


def _play(t: DeviceTransport, frames: int, channels: int = 1) -> np.ndarray:
    out = np.full((frames, channels), np.nan, dtype=np.float32)
    t._output_callback(out, frames, None, 0)
    return out
