"""Prometheus text-format metrics, kept in process (a handful of counters and histograms).

Written out by hand rather than with ``prometheus_client``: the format is a few lines, and
the server then needs no global registry shared across tests.
"""

from __future__ import annotations

import bisect
import math
from collections import defaultdict

LATENCY_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.15, 0.2, 0.3, 0.5, 0.75, 1.0, 2.0, 5.0)


class Histogram:
    def __init__(self, buckets: tuple[float, ...] = LATENCY_BUCKETS) -> None:
        self.buckets = buckets
        self.counts = [0] * (len(buckets) + 1)
        self.sum = 0.0
        self.count = 0

    def observe(self, value: float) -> None:
        if not math.isfinite(value):
            return
        self.counts[bisect.bisect_left(self.buckets, value)] += 1
        self.sum += value
        self.count += 1


class ServiceMetrics:
    """What the server counts; :meth:`render` writes the Prometheus exposition format."""

    def __init__(self) -> None:
        self.sessions_active = 0
        self.sessions_total = 0
        self.sessions_rejected: dict[str, int] = defaultdict(int)  # by reason
        self.audio_in_s = 0.0
        self.audio_out_s = 0.0
        self.responses: dict[str, int] = defaultdict(int)  # by status
        self.errors: dict[str, int] = defaultdict(int)  # by error code
        self.throttled: dict[str, int] = defaultdict(int)  # waits imposed, by budget
        self.throttled_s = 0.0
        self.response_latency = Histogram()
        self.barge_in_stop = Histogram()

    def render(self) -> str:
        """Every metric in Prometheus's text format."""
        lines: list[str] = []
        for name, kind, help_, samples in self._counters():
            lines += [f"# HELP {name} {help_}", f"# TYPE {name} {kind}"]
            lines += [f"{name}{labels} {value:g}" for labels, value in samples]
        for name, help_, h in self._histograms():
            lines += [f"# HELP {name} {help_}", f"# TYPE {name} histogram"]
            lines += _histogram_lines(name, h)
        return "\n".join(lines) + "\n"

    def _counters(self) -> list[tuple[str, str, str, list[tuple[str, float]]]]:
        """The counters and gauges: name, type, help and samples (label set, value)."""
        return [
            ("parley_sessions_active", "gauge", "Open sessions.", _one(self.sessions_active)),
            ("parley_sessions_total", "counter", "Sessions opened.", _one(self.sessions_total)),
            (
                "parley_sessions_rejected_total",
                "counter",
                "Connections refused, by reason.",
                _labelled("reason", self.sessions_rejected),
            ),
            (
                "parley_audio_in_seconds_total",
                "counter",
                "Client audio received, in seconds.",
                _one(self.audio_in_s),
            ),
            (
                "parley_audio_out_seconds_total",
                "counter",
                "Reply audio sent, in seconds.",
                _one(self.audio_out_s),
            ),
            (
                "parley_responses_total",
                "counter",
                "Responses ended, by status.",
                _labelled("status", self.responses),
            ),
            (
                "parley_errors_total",
                "counter",
                "Error events sent, by code.",
                _labelled("code", self.errors),
            ),
            (
                "parley_throttled_total",
                "counter",
                "Times a connection was made to wait for going over a budget, by budget.",
                _labelled("budget", self.throttled),
            ),
            (
                "parley_throttled_seconds_total",
                "counter",
                "Time connections were made to wait.",
                _one(self.throttled_s),
            ),
        ]

    def _histograms(self) -> list[tuple[str, str, Histogram]]:
        """The histograms: name, help and the histogram."""
        return [
            (
                "parley_response_latency_seconds",
                "End of the user's turn to the reply's first audio.",
                self.response_latency,
            ),
            (
                "parley_barge_in_stop_seconds",
                "User speech onset to reply audio stopped.",
                self.barge_in_stop,
            ),
        ]


def _one(value: float) -> list[tuple[str, float]]:
    return [("", value)]


def _labelled(key: str, values: dict[str, int]) -> list[tuple[str, float]]:
    return [(f'{{{key}="{_escape(k)}"}}', v) for k, v in sorted(values.items())]


def _histogram_lines(name: str, h: Histogram) -> list[str]:
    """Cumulative buckets, then the sum and the count."""
    lines, running = [], 0
    for bound, count in zip(h.buckets, h.counts, strict=False):
        running += count
        lines.append(f'{name}_bucket{{le="{bound:g}"}} {running}')
    lines.append(f'{name}_bucket{{le="+Inf"}} {h.count}')
    return [*lines, f"{name}_sum {h.sum:g}", f"{name}_count {h.count}"]


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
