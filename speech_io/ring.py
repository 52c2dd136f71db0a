"""A ring of the most recent samples of a stream, addressed by absolute sample index."""

from __future__ import annotations

import threading

import numpy as np


class SampleRing:
    """Keeps the last ``capacity`` samples of a stream that starts at sample 0."""

    def __init__(self, capacity: int) -> None:
        self._buf = np.zeros(capacity, dtype=np.float32)
        self.end = 0  # absolute index one past the newest sample

    @property
    def capacity(self) -> int:
        return len(self._buf)

    @property
    def start(self) -> int:
        """Oldest absolute index still held."""
        return max(0, self.end - len(self._buf))

    def append(self, samples: np.ndarray) -> None:
        samples = np.asarray(samples, dtype=np.float32)[-len(self._buf) :]
        cap, n = len(self._buf), len(samples)
        first = self.end % cap
        head = min(n, cap - first)
        self._buf[first : first + head] = samples[:head]
        self._buf[: n - head] = samples[head:]
        self.end += n

    def drop_newest(self, n: int) -> None:
        """Forget the newest ``n`` samples (they were taken back)."""
        self.end = max(self.start, self.end - n)

    def read(self, begin: int, stop: int) -> np.ndarray:
        """Samples ``[begin, stop)``; indices not held (too old or not yet written) read as 0."""
        out = np.zeros(max(0, stop - begin), dtype=np.float32)
        lo, hi = max(begin, self.start), min(stop, self.end)
        if hi > lo:
            cap = len(self._buf)
            idx = np.arange(lo, hi) % cap
            out[lo - begin : hi - begin] = self._buf[idx]
        return out


class SampleFifo:
    """Fixed-capacity float32 FIFO between one PortAudio callback thread and the event loop.

    The lock guards a copy of a few blocks at most; a Python callback holds the GIL longer
    than that anyway, so it adds no wait the callback does not already have.
    """

    def __init__(self, capacity: int) -> None:
        self._buf = np.zeros(capacity, dtype=np.float32)
        self._head = 0  # index of the oldest sample
        self._len = 0
        self._lock = threading.Lock()
        self.read_total = 0  # samples ever taken out by reads (not by clear)

    def __len__(self) -> int:
        return self._len

    @property
    def capacity(self) -> int:
        return len(self._buf)

    def write(self, x: np.ndarray) -> int:
        """Append what fits; return how many samples were taken (the rest is dropped)."""
        with self._lock:
            cap = len(self._buf)
            n = min(len(x), cap - self._len)
            tail = (self._head + self._len) % cap
            first = min(n, cap - tail)
            self._buf[tail : tail + first] = x[:first]
            self._buf[: n - first] = x[first:n]
            self._len += n
            return n

    def read_into(self, out: np.ndarray) -> int:
        """Fill the front of ``out`` with the oldest samples; return how many."""
        with self._lock:
            cap = len(self._buf)
            n = min(len(out), self._len)
            first = min(n, cap - self._head)
            out[:first] = self._buf[self._head : self._head + first]
            out[first:n] = self._buf[: n - first]
            self._head = (self._head + n) % cap
            self._len -= n
            self.read_total += n
            return n

    def read_all(self) -> np.ndarray:
        out = np.empty(self._len, dtype=np.float32)
        return out[: self.read_into(out)]

    def clear(self) -> tuple[int, int]:
        """Drop everything held; return (samples dropped, ``read_total``), read atomically."""
        with self._lock:
            n, self._len = self._len, 0
            return n, self.read_total
