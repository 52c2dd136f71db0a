"""Streaming resampling: one filter state per stream, so chunk boundaries leave no clicks
and the sample count over a whole stream is exact.

Every place audio changes rate while it flows (a sound card at 48 kHz, a wire client at
24 kHz) keeps one of these per direction.
"""

from __future__ import annotations

import numpy as np
import soxr


class Resampler:
    """A streaming resampler from ``src`` to ``dst`` Hz (a pass-through when equal).

    ``quality`` is soxr's: "QQ" adds no buffering delay (for audio a listener hears
    right away), "LQ"/"MQ"/"HQ" low-pass properly and hold back a little input.
    """

    def __init__(self, src: int, dst: int, quality: str = "HQ") -> None:
        self.src, self.dst = src, dst
        self._stream = (
            None
            if src == dst
            else soxr.ResampleStream(src, dst, 1, dtype="float32", quality=quality)
        )

    def push(self, samples: np.ndarray) -> np.ndarray:
        samples = np.asarray(samples, dtype=np.float32)
        if self._stream is None:
            return samples
        return self._stream.resample_chunk(samples)

    def flush(self) -> np.ndarray:
        """What the filter still holds; the stream is over after this."""
        if self._stream is None:
            return np.zeros(0, dtype=np.float32)
        return self._stream.resample_chunk(np.zeros(0, dtype=np.float32), last=True)
