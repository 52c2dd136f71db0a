"""Audio sources and sinks that are not devices: arrays and files, and a virtual room.

A source hands out exactly ``n`` samples per read (silence once it has run out); a sink
takes what the agent played. The virtual room is both: its microphone hears the user's
scripted channel plus, through an optional echo path, what its speaker just played.
Real devices live in :mod:`parley.speech_io.devices`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Protocol

import numpy as np

from parley.speech_io.audio import SAMPLE_RATE, write_wav


class AudioSource(Protocol):
    """Where microphone samples come from."""

    def read(self, n: int) -> np.ndarray:
        """The next ``n`` samples (float32 mono), zero-padded past the end."""
        ...


class AudioSink(Protocol):
    """Where played samples go."""

    def write(self, samples: np.ndarray) -> None: ...


class ArraySource:
    """Samples from an array, then silence."""

    def __init__(self, samples: np.ndarray) -> None:
        self.samples = np.asarray(samples, dtype=np.float32)
        self.position = 0

    def __len__(self) -> int:
        return len(self.samples)

    def read(self, n: int) -> np.ndarray:
        out = np.zeros(n, dtype=np.float32)
        chunk = self.samples[self.position : self.position + n]
        out[: len(chunk)] = chunk
        self.position += n
        return out


class ArraySink:
    """Collects everything played."""

    def __init__(self) -> None:
        self._chunks: list[np.ndarray] = []

    def write(self, samples: np.ndarray) -> None:
        self._chunks.append(np.asarray(samples, dtype=np.float32).copy())

    @property
    def samples(self) -> np.ndarray:
        return np.concatenate(self._chunks) if self._chunks else np.zeros(0, dtype=np.float32)


class FileSink(ArraySink):
    """Collects what is played and writes it as a 16-bit WAV on :meth:`close`."""

    def __init__(self, path: str | Path) -> None:
        super().__init__()
        self.path = Path(path)

    def close(self, length: int | None = None) -> Path:
        samples = self.samples if length is None else self.samples[:length]
        return write_wav(self.path, samples, SAMPLE_RATE)


class EchoPathLike(Protocol):
    def process(self, played: np.ndarray) -> np.ndarray: ...


class VirtualRoom:
    """A microphone and a speaker in one simulated room, for virtual-time runs.

    ``user`` is what the user says (it may still be written to while the run goes on);
    each read returns it plus the echo of the samples written to the speaker over the
    same span, which the driver writes before it reads.
    """

    def __init__(self, user: np.ndarray, echo: EchoPathLike | None = None) -> None:
        self.user = user
        self.echo = echo
        self.mic = np.zeros(len(user), dtype=np.float32)
        self.played = np.zeros(len(user), dtype=np.float32)
        self._read = 0
        self._written = 0

    def write(self, samples: np.ndarray) -> None:
        end = min(len(self.played), self._written + len(samples))
        self.played[self._written : end] = samples[: end - self._written]
        self._written += len(samples)

    def read(self, n: int) -> np.ndarray:
        start = self._read
        if self._written < start + n and start + n <= len(self.user):
            raise RuntimeError("the speaker must be written before the microphone reads that span")
        heard = np.zeros(n, dtype=np.float32)
        chunk = self.user[start : start + n]
        heard[: len(chunk)] = chunk
        if self.echo is not None:
            played = np.zeros(n, dtype=np.float32)
            span = self.played[start : start + n]
            played[: len(span)] = span
            heard += self.echo.process(played)
        self.mic[start : start + len(chunk)] = heard[: len(chunk)]
        self._read += n
        return heard
