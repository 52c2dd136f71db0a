"""Score a run: barge-in, latency, takeovers, resume exactness and epoch fencing.

:func:`score` turns one :class:`~parley.agent.harness.record.RunRecord` into a JSON-ready
dict; :func:`aggregate` pools several; :func:`check_targets` compares either with the
numbers the design aims at. Distributions are ``{"values", "p50", "p95", "max"}`` with
linearly interpolated percentiles (None when empty); rates are None when nothing could be
taken over.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np

from parley.agent.harness.record import RunRecord, UserSegment

__all__ = [
    "COUNT_KEYS",
    "DIST_KEYS",
    "REALTIME_TARGETS",
    "TARGETS",
    "aggregate",
    "check_targets",
    "score",
    "targets_for",
    "turn_wait_ms",
]

SILENT = 1e-4  # |x| at or below this is silence
AUDIBLE_BEFORE_MS = 50.0  # the agent counts as playing if audible this long before onset
STOPPED_FOR_MS = 100.0  # output must stay silent this long to count as stopped
TAKEOVER_GRACE_S = 1.0  # an interruption this long after a segment still belongs to it

DIST_KEYS = (
    "barge_in_stop_ms",
    "response_latency_ms",
    "response_overhead_ms",
    "turn_wait_ms",
    "response_compute_ms",
    "response_compute_after_turn_ms",
)
COUNT_KEYS = (
    "barge_ins",
    "barge_in_unstopped",
    "pause_takeovers",
    "pause_segments",
    "backchannel_takeovers",
    "backchannel_segments",
    "false_interruptions",
    "lost_samples_on_resume",
    "repeated_samples_on_resume",
    "stale_events_after_interrupt",
    "interruptions",
    "replies",
)

# metric -> (what is compared, bound); "p95<=" compares a distribution's p95.
TARGETS: dict[str, tuple[str, float]] = {
    "barge_in_stop_ms": ("p95<=", 100.0),
    "barge_in_unstopped": ("==", 0),
    "backchannel_takeover_rate": ("==", 0),
    "pause_takeover_rate": ("==", 0),
    "false_interruptions": ("==", 0),
    "lost_samples_on_resume": ("==", 0),
    "repeated_samples_on_resume": ("==", 0),
    "stale_events_after_interrupt": ("==", 0),
    "response_overhead_ms": ("p95<=", 50.0),
}
# Through real devices their buffers add to the stop time; the design allows 150 ms there.
REALTIME_TARGETS = {**TARGETS, "barge_in_stop_ms": ("p95<=", 150.0)}


def targets_for(realtime: bool) -> dict[str, tuple[str, float]]:
    """The targets a run is held to: virtual time, or through real devices."""
    return REALTIME_TARGETS if realtime else TARGETS


def score(record: RunRecord) -> dict[str, Any]:
    """Every metric of one run, as a JSON-ready dict."""
    sr = record.sample_rate
    events = record.events
    segments = sorted(record.segments, key=lambda s: (s.onset_sample, s.step))
    stops, unstopped = _barge_in(record.output, segments, sr)
    latency, compute, after_turn, waits = _latency(segments, events, sr)
    # In virtual time the clock stands still while the model computes, so latency holds
    # none of it; through real devices it holds what ran after the turn ended, and the
    # pipeline's share is what is left once the turn detection's own wait is out too.
    hidden = after_turn if record.realtime else [0.0] * len(latency)
    waited = [record.endpoint_silence_ms if w is None else w for w in waits]
    pause_n, pause_hits = _pause_takeovers(segments, events, sr)
    bc_n, bc_hits = _backchannel_takeovers(segments, events, sr)
    lost, repeated = _resume_exactness(events)
    out: dict[str, Any] = {
        "scenario": record.scenario.name,
        "barge_in_stop_ms": _dist(stops),
        "barge_ins": len(stops) + unstopped,
        "barge_in_unstopped": unstopped,
        "response_latency_ms": _dist(latency),
        "response_overhead_ms": _dist(
            [v - w - c for v, w, c in zip(latency, waited, hidden, strict=True)]
        ),
        "turn_wait_ms": _dist(waited),
        "response_compute_ms": _dist(compute),
        "response_compute_after_turn_ms": _dist(after_turn),
        "pause_takeover_rate": _rate(pause_hits, pause_n),
        "pause_takeovers": pause_hits,
        "pause_segments": pause_n,
        "backchannel_takeover_rate": _rate(bc_hits, bc_n),
        "backchannel_takeovers": bc_hits,
        "backchannel_segments": bc_n,
        "false_interruptions": _false_interruptions(segments, events, sr),
        "lost_samples_on_resume": lost,
        "repeated_samples_on_resume": repeated,
        "stale_events_after_interrupt": _stale(events),
        "interruptions": sum(e["type"] == "interrupted" for e in events),
        "replies": sum(e["type"] == "reply_started" for e in events),
        "endpoint_silence_ms": record.endpoint_silence_ms,
        "model_compute_s": record.model_compute_s,
        "realtime": record.realtime,
        "rig_latency_ms": record.rig_latency_ms,
    }
    return out


def aggregate(scored: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Pool per-scenario scores: lists concatenated, percentiles redone, counts summed."""
    out: dict[str, Any] = {"scenarios": len(scored)}
    for key in DIST_KEYS:
        out[key] = _dist([v for s in scored for v in s[key]["values"]])
    for key in COUNT_KEYS:
        out[key] = sum(int(s[key]) for s in scored)
    out["pause_takeover_rate"] = _rate(out["pause_takeovers"], out["pause_segments"])
    out["backchannel_takeover_rate"] = _rate(
        out["backchannel_takeovers"], out["backchannel_segments"]
    )
    out["model_compute_s"] = float(sum(s["model_compute_s"] for s in scored))
    out["realtime"] = bool(scored) and all(s["realtime"] for s in scored)
    out["rig_latency_ms"] = max((s.get("rig_latency_ms", 0.0) for s in scored), default=0.0)
    return out


def check_targets(scored: dict[str, Any]) -> dict[str, bool | None]:
    """For each target: True met, False missed, None nothing measured."""
    result: dict[str, bool | None] = {}
    for key, (op, bound) in targets_for(bool(scored.get("realtime"))).items():
        value = scored[key]["p95"] if op == "p95<=" else scored[key]
        if value is None:
            result[key] = None
        else:
            result[key] = value <= bound if op == "p95<=" else value == bound
    return result


def _dist(values: Iterable[float]) -> dict[str, Any]:
    vals = [float(v) for v in values]
    if not vals:
        return {"values": [], "p50": None, "p95": None, "max": None}
    arr = np.asarray(vals)
    return {
        "values": vals,
        "p50": float(np.percentile(arr, 50)),
        "p95": float(np.percentile(arr, 95)),
        "max": float(arr.max()),
    }


def _rate(hits: int, total: int) -> float | None:
    return hits / total if total else None


def _barge_in(output: np.ndarray, segments: list[UserSegment], sr: int) -> tuple[list[float], int]:
    """Stop times (ms) of barge-ins over audible output, and how many never stopped."""
    loud = np.abs(np.asarray(output, dtype=np.float64)) > SILENT
    n = len(loud)
    before = round(AUDIBLE_BEFORE_MS * sr / 1000)
    hold = round(STOPPED_FOR_MS * sr / 1000)
    stops: list[float] = []
    unstopped = 0
    for seg in segments:
        if seg.role not in ("interrupt", "backchannel"):
            continue
        onset = seg.onset_sample
        if onset > n or not loud[max(0, onset - before) : onset].any():
            continue  # the agent was not playing: nothing to barge in on
        # Loud positions after onset bracketed by virtual ones at -1 and n; the first gap
        # of at least `hold` silent samples starts right after a loud one.
        idx = np.flatnonzero(loud[onset:]) + onset
        prev = np.concatenate(([onset - 1], idx))
        nxt = np.concatenate((idx, [n]))
        gaps = np.flatnonzero(nxt - prev - 1 >= hold)
        if gaps.size == 0:
            unstopped += 1
            continue
        stops.append((int(prev[gaps[0]]) + 1 - onset) * 1000.0 / sr)
    return stops, unstopped


def turn_wait_ms(event: dict[str, Any], sr: int) -> float | None:
    """The silence (ms) the turn detection waited before a ``user_turn_ended`` event's
    turn was called over; None where the event does not say."""
    decided = event.get("decided_sample")
    return None if decided is None else (decided - event["input_sample"]) * 1000.0 / sr


def _latency(
    segments: list[UserSegment], events: list[dict[str, Any]], sr: int
) -> tuple[list[float], list[float], list[float], list[float | None]]:
    """Response latencies (ms, turn end to first audio), each reply's compute to it, the
    share of that compute left after the turn ended (a reply started ahead did the rest in
    the user's silence), and the silence the turn detection waited before it called the
    turn over (None where the events do not say)."""
    firsts = []
    wait: float | None = None
    for e in events:
        # Events come in the order they happened: a reply's first audio follows the end of
        # the turn it answers.
        if e["type"] == "user_turn_ended":
            wait = turn_wait_ms(e, sr)
        elif e["type"] == "first_audio":
            ms, ahead = float(e.get("compute_ms", 0.0)), float(e.get("ahead_ms", 0.0))
            firsts.append((int(e["output_sample"]), ms, ahead, wait))
    firsts.sort(key=lambda f: f[0])
    out, compute, after_turn, waits = [], [], [], []
    for i, seg in enumerate(segments):
        if seg.role not in ("turn", "interrupt", "continuation"):
            continue
        if i + 1 < len(segments) and segments[i + 1].role == "continuation":
            continue  # the user's turn goes on after this pause; it ends with the continuation
        after = [f for f in firsts if f[0] >= seg.offset_sample]
        if after:
            first, ms, ahead, waited = after[0]
            out.append((first - seg.offset_sample) * 1000.0 / sr)
            compute.append(ms)
            after_turn.append(max(0.0, ms - ahead))
            waits.append(waited)
    return out, compute, after_turn, waits


def _pause_takeovers(
    segments: list[UserSegment], events: list[dict[str, Any]], sr: int
) -> tuple[int, int]:
    """(continuation segments with a pause before them, replies started in that pause)."""
    starts = [float(e["t"]) for e in events if e["type"] == "reply_started"]
    total = hits = 0
    for i, seg in enumerate(segments):
        if seg.role != "continuation" or i == 0:
            continue
        total += 1
        lo, hi = segments[i - 1].offset_sample / sr, seg.onset_sample / sr
        hits += any(lo <= t <= hi for t in starts)
    return total, hits


def _interrupt_times(events: list[dict[str, Any]]) -> list[float]:
    return [float(e["t"]) for e in events if e["type"] == "interrupted"]


def _within(t: float, seg: UserSegment, sr: int) -> bool:
    return seg.onset_sample / sr <= t <= seg.offset_sample / sr + TAKEOVER_GRACE_S


def _backchannel_takeovers(
    segments: list[UserSegment], events: list[dict[str, Any]], sr: int
) -> tuple[int, int]:
    times = _interrupt_times(events)
    backchannels = [s for s in segments if s.role == "backchannel"]
    hits = sum(any(_within(t, s, sr) for t in times) for s in backchannels)
    return len(backchannels), hits


def _false_interruptions(segments: list[UserSegment], events: list[dict[str, Any]], sr: int) -> int:
    interrupts = [s for s in segments if s.role == "interrupt"]
    return sum(not any(_within(t, s, sr) for s in interrupts) for t in _interrupt_times(events))


def _resume_exactness(events: list[dict[str, Any]]) -> tuple[int, int]:
    """Reply samples skipped (lost) and played twice (repeated) between played chunks.

    An ``audio_rewound`` event says the samples from its position on never reached the
    speaker (a device dropped them on a pause), so playing them again is no repeat.
    """
    last_end: dict[int, int] = {}
    lost = repeated = 0
    for e in events:
        if e["type"] == "audio_rewound":
            last_end[int(e["reply_id"])] = int(e["position"])
            continue
        if e["type"] != "audio_played":
            continue
        reply, start, end = int(e["reply_id"]), int(e["start"]), int(e["end"])
        if reply in last_end:
            prev = last_end[reply]
            lost += max(0, start - prev)
            repeated += max(0, prev - start)
        last_end[reply] = end
    return lost, repeated


def _stale(events: list[dict[str, Any]]) -> int:
    """Events from a superseded epoch, plus a reply's audio played after it was interrupted.

    An event that is both is counted once.
    """
    top: int | None = None
    interrupted: set[int] = set()
    count = 0
    for e in events:
        epoch = int(e["epoch"])
        old_epoch = top is not None and epoch < top
        late_audio = e["type"] == "audio_played" and int(e["reply_id"]) in interrupted
        count += old_epoch or late_audio
        if e["type"] == "interrupted":
            interrupted.add(int(e["reply_id"]))
        top = epoch if top is None else max(top, epoch)
    return count
