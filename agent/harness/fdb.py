"""Full-Duplex-Bench v1's turn-taking figures, computed on a run's two channels.

Full-Duplex-Bench (Lin et al., 2025) judges an agent from its own channel, by the words a
recognizer finds in it with their times: the agent *took the turn* when what it said spans
a second or more, or holds more than three words (a short "mm-hm" does not count). Its
latency is from the end of the user's speech to the agent's first word, 0 when the agent
started first. Each of its tasks is one place in the conversation, found here on a
scenario's timeline:

- **pause handling**: a turn spoken in parts (``continuation`` steps). The benchmark's
  input ends with the user's last word, so only the agent's words that start before it
  count; taking the turn there means speaking into the user's pause. Lower is better.
- **smooth turn-taking**: a turn that is complete (no continuation follows, and no
  interruption is scripted into its reply). The agent's words from its end to the user's
  next step; taking the turn is right. Higher is better.
- **user interruption**: an ``interrupt`` step over a reply. The benchmark transcribes
  the agent's channel from the end of the interruption on; taking the turn means
  answering the interruption. Higher is better.

The benchmark's backchannel task has the agent listen to a monologue; ours is the user's
"uh-huh" over a reply, scored from events (``backchannel_takeover_rate`` in
:mod:`~parley.agent.harness.metrics`), since the reply going on is right there and words
alone cannot tell it from a new one.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from parley.agent.harness.record import UserSegment

TURN_SPAN_S = 1.0
TURN_WORDS = 3
TASKS = ("pause_handling", "smooth_turn_taking", "user_interruption")


@dataclass(frozen=True)
class Word:
    """One recognized word of the agent's channel; times in seconds from run start."""

    text: str
    start: float
    end: float


def snap_to_sound(
    words: Sequence[Word], output: np.ndarray, sr: int, silent: float = 1e-4, reach_s: float = 0.5
) -> list[Word]:
    """Word starts moved to where the agent's channel actually turns audible.

    A recognizer's word times are loose (faster-whisper's first word often starts a few
    hundred ms before the sound does), and here they decide both which window a word
    falls in and the latency. The agent's channel is silent between its words, so the
    first audible sample at or after ``reach_s`` before a word's start (and after the
    word before) is where it begins. A word whose span holds no sound at all was said
    somewhere else (the recognizer stretches a cut reply's last words over the silence
    after it), and no time of it can be trusted: it is left out, so it counts for no
    task."""
    loud = np.abs(np.asarray(output, dtype=np.float64)) > silent
    out: list[Word] = []
    floor = 0
    for w in words:
        lo = max(floor, int((w.start - reach_s) * sr))
        hi = max(lo, int(w.end * sr))
        hits = np.flatnonzero(loud[lo:hi])
        if not hits.size:
            continue
        start = (lo + int(hits[0])) / sr
        out.append(Word(w.text, min(start, w.end), w.end))
        floor = max(floor, int(w.end * sr))
    return out


def takes_turn(words: Sequence[Word]) -> bool:
    """The benchmark's rule: a second or more of speech, or more than three words."""
    if not words:
        return False
    span = words[-1].end - words[0].start
    return span >= TURN_SPAN_S or len(words) > TURN_WORDS


def _words_in(words: Sequence[Word], lo: float, hi: float) -> list[Word]:
    return [w for w in words if lo <= w.start < hi]


def task_windows(
    segments: Sequence[UserSegment], sr: int, run_end_s: float
) -> list[tuple[str, float, float, float]]:
    """``(task, user_end_s, lo_s, hi_s)`` for each place in the run a task looks at: the
    agent's words starting in ``[lo, hi)`` are judged, latency counted from ``user_end``."""
    segs = sorted(segments, key=lambda s: s.onset_sample)
    out: list[tuple[str, float, float, float]] = []
    for i, seg in enumerate(segs):
        if seg.role == "backchannel":
            continue  # scored from events (see above); a reply goes on through it
        # The user's next step that may end the agent's words: a backchannel does not.
        later = [s for s in segs[i + 1 :] if s.role != "backchannel"]
        nxt = later[0] if later else None
        next_onset = nxt.onset_sample / sr if nxt is not None else run_end_s
        end = seg.offset_sample / sr
        if seg.role == "interrupt":
            out.append(("user_interruption", end, end, next_onset))
        elif seg.role in ("turn", "continuation"):
            if nxt is not None and nxt.role == "continuation":
                continue  # the turn goes on; judged at its last part
            if nxt is None or nxt.role != "interrupt":
                # A reply cut short on purpose is the interruption task's, not this one's.
                out.append(("smooth_turn_taking", end, end, next_onset))
            if seg.role == "continuation":
                first = i
                while first > 0 and segs[first].role == "continuation":
                    first -= 1
                out.append(("pause_handling", end, segs[first].onset_sample / sr, end))
    return out


def score_fdb(
    segments: Sequence[UserSegment], words: Sequence[Word], sr: int, run_end_s: float
) -> dict[str, Any]:
    """Per task: how many places, how many taken, and the latencies (s) where taken."""
    out: dict[str, Any] = {t: {"n": 0, "taken": 0, "latency_s": []} for t in TASKS}
    for task, user_end, lo, hi in task_windows(segments, sr, run_end_s):
        said = _words_in(words, lo, hi)
        row = out[task]
        row["n"] += 1
        if takes_turn(said):
            row["taken"] += 1
            row["latency_s"].append(max(0.0, said[0].start - user_end))
    return out


def pool_fdb(scored: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Runs pooled: counts summed, latencies joined, take-over rates (None where no place)."""
    pooled: dict[str, Any] = {}
    for task in TASKS:
        n = sum(s[task]["n"] for s in scored)
        taken = sum(s[task]["taken"] for s in scored)
        latency = [v for s in scored for v in s[task]["latency_s"]]
        pooled[task] = {
            "n": n,
            "taken": taken,
            "tor": taken / n if n else None,
            "latency_s": latency,
            "latency_mean_s": sum(latency) / len(latency) if latency else None,
        }
    return pooled


def fdb_markdown(pooled: dict[str, Any], backchannel_tor: float | None) -> str:
    """The benchmark's v1 table, one row: this run's figures."""

    def rate(task: str) -> str:
        tor = pooled[task]["tor"]
        return "-" if tor is None else f"{tor:.3f} (n={pooled[task]['n']})"

    def latency(task: str) -> str:
        values = pooled[task]["latency_s"]
        if not values:
            return "-"
        p50, p95 = np.percentile(values, [50, 95])
        return f"{pooled[task]['latency_mean_s']:.3f} s (p50 {p50:.3f}, p95 {p95:.3f})"

    bc = "-" if backchannel_tor is None else f"{backchannel_tor:.3f}"
    return "\n".join(
        [
            "# Full-Duplex-Bench v1 figures",
            "",
            "Take-over rates (TOR) and mean latency by the benchmark's rules, on the words",
            "faster-whisper tiny.en hears on the agent's channel (starts snapped to the sound);",
            "backchannel TOR from events (see agent/harness/fdb.py).",
            "",
            "| pause TOR (lower is better) | smooth turn-taking TOR / latency | "
            "interruption TOR / latency | backchannel TOR |",
            "| --- | --- | --- | --- |",
            f"| {rate('pause_handling')} | {rate('smooth_turn_taking')} / "
            f"{latency('smooth_turn_taking')} | {rate('user_interruption')} / "
            f"{latency('user_interruption')} | {bc} |",
            "",
        ]
    )
