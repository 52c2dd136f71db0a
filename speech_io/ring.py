"""A ring of the most recent samples of a stream, addressed by absolute sample index."""

from __future__ import annotations

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
