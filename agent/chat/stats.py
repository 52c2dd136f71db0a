"""Latency figures the chat app shows: per turn, and running p50/p95 over the session."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np


@dataclass
class LatencyStats:
    """A growing list of latencies in milliseconds with its running percentiles."""

    values: list[float] = field(default_factory=list)

    def add(self, ms: float) -> None:
        self.values.append(float(ms))

    @property
    def count(self) -> int:
        return len(self.values)

    def percentile(self, q: float) -> float | None:
        """The ``q``-th percentile (linear interpolation), None before the first value."""
        return float(np.percentile(self.values, q)) if self.values else None

    @property
    def p50(self) -> float | None:
        return self.percentile(50)

    @property
    def p95(self) -> float | None:
        return self.percentile(95)

    def summary(self) -> str:
        """``p50 412 / p95 530 ms (n=3)``, or ``-`` with no values yet."""
        if not self.values:
            return "-"
        return f"p50 {self.p50:.0f} / p95 {self.p95:.0f} ms (n={self.count})"


def level_db(samples: np.ndarray) -> float:
    """RMS level in dBFS, floored at -100 for silence."""
    if samples.size == 0:
        return -100.0
    rms = float(np.sqrt(np.mean(np.square(samples, dtype=np.float64))))
    return max(-100.0, 20.0 * math.log10(rms + 1e-12))
