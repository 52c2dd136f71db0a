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
        lines: list[str] = []

        def metric(name: str, kind: str, help_: str, samples: list[tuple[str, float]]) -> None:
            lines.append(f"# HELP {name} {help_}")
            lines.append(f"# TYPE {name} {kind}")
            lines.extend(f"{name}{labels} {value:g}" for labels, value in samples)

        def labelled(key: str, values: dict[str, int]) -> list[tuple[str, float]]:
            return [(f'{{{key}="{_escape(k)}"}}', v) for k, v in sorted(values.items())]

        def histogram(name: str, help_: str, h: Histogram) -> None:
            lines.append(f"# HELP {name} {help_}")
            lines.append(f"# TYPE {name} histogram")
            running = 0
            for bound, count in zip(h.buckets, h.counts, strict=False):
                running += count
                lines.append(f'{name}_bucket{{le="{bound:g}"}} {running}')
            lines.append(f'{name}_bucket{{le="+Inf"}} {h.count}')
            lines.append(f"{name}_sum {h.sum:g}")
            lines.append(f"{name}_count {h.count}")

        metric("parley_sessions_active", "gauge", "Open sessions.", [("", self.sessions_active)])
        metric("parley_sessions_total", "counter", "Sessions opened.", [("", self.sessions_total)])
        metric(
            "parley_sessions_rejected_total",
            "counter",
            "Connections refused, by reason.",
            labelled("reason", self.sessions_rejected),
        )
        metric(
            "parley_audio_in_seconds_total",
            "counter",
            "Client audio received, in seconds.",
            [("", self.audio_in_s)],
        )
        metric(
            "parley_audio_out_seconds_total",
            "counter",
            "Reply audio sent, in seconds.",
            [("", self.audio_out_s)],
        )
        metric(
            "parley_responses_total",
            "counter",
            "Responses ended, by status.",
            labelled("status", self.responses),
        )
        metric(
            "parley_errors_total",
            "counter",
            "Error events sent, by code.",
            labelled("code", self.errors),
        )
        metric(
            "parley_throttled_total",
            "counter",
            "Times a connection was made to wait for going over a budget, by budget.",
            labelled("budget", self.throttled),
        )
        metric(
            "parley_throttled_seconds_total",
            "counter",
            "Time connections were made to wait.",
            [("", self.throttled_s)],
        )
        histogram(
            "parley_response_latency_seconds",
            "End of the user's turn to the reply's first audio.",
            self.response_latency,
        )
        histogram(
            "parley_barge_in_stop_seconds",
            "User speech onset to reply audio stopped.",
            self.barge_in_stop,
        )
        return "\n".join(lines) + "\n"


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
