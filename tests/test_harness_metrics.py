"""Harness metrics on hand-built runs, and the reports written from them."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import soundfile as sf

from parley.agent.core.events import (
    AgentState,
    AudioPlayed,
    AudioRewound,
    FirstAudio,
    Interrupted,
    PlaybackPaused,
    PlaybackResumed,
    ReplyStarted,
    StateChanged,
    UserTurnEnded,
)
from parley.agent.harness.metrics import aggregate, check_targets, score
from parley.agent.harness.record import RunRecord, UserSegment
from parley.agent.harness.report import write_report
from parley.agent.harness.scenario import (
    Scenario,
    Step,
)

SR = 16000


# ---------------------------------------------------------------- metrics


def _scenario(name: str = "hand-built") -> Scenario:
    return Scenario(name=name, timeline=[Step(at=0, silence=1.0)])


def _record(
    output: np.ndarray | None = None,
    events: list[Any] = (),  # type: ignore[assignment]
    segments: list[UserSegment] = (),  # type: ignore[assignment]
    seconds: float = 4.0,
    name: str = "hand-built",
    endpoint_ms: float = 500.0,
) -> RunRecord:
    n = int(seconds * SR)
    out = np.zeros(n, np.float32) if output is None else output
    return RunRecord(
        scenario=_scenario(name),
        sample_rate=SR,
        input=np.zeros(n, np.float32),
        mic=np.zeros(n, np.float32),
        output=out,
        events=[e.to_dict() for e in events],
        segments=list(segments),
        endpoint_silence_ms=endpoint_ms,
    )


def _speaking(n: int, until: int, start: int = 0) -> np.ndarray:
    x = np.zeros(n, np.float32)
    x[start:until] = 0.1
    return x


@pytest.mark.parametrize("role", ["interrupt", "backchannel"])
def test_barge_in_stop_is_exact(role: str) -> None:
    out = _speaking(4 * SR, 20000)
    out[16800:17000] = 0.0  # a 12.5 ms dip between words is not a stop
    rec = _record(out, segments=[UserSegment(1, role, 16000, 24000)])
    m = score(rec)
    assert m["barge_in_stop_ms"]["values"] == [250.0]  # (20000 - 16000) / 16 kHz
    assert m["barge_in_stop_ms"]["p95"] == 250.0 and m["barge_ins"] == 1
    assert m["barge_in_unstopped"] == 0


def test_barge_in_counts_only_over_audible_output_and_flags_never_stopping() -> None:
    quiet_before = _speaking(4 * SR, 30000, start=16000 + 1)
    rec = _record(quiet_before, segments=[UserSegment(1, "interrupt", 16000, 24000)])
    assert score(rec)["barge_in_stop_ms"]["values"] == [] and score(rec)["barge_ins"] == 0
    turn = _record(_speaking(4 * SR, 20000), segments=[UserSegment(0, "turn", 16000, 24000)])
    assert score(turn)["barge_ins"] == 0  # a plain turn is not a barge-in
    never = _record(_speaking(4 * SR, 4 * SR), segments=[UserSegment(1, "interrupt", 16000, 24000)])
    m = score(never)
    assert m["barge_in_unstopped"] == 1 and m["barge_in_stop_ms"]["p95"] is None
    assert check_targets(m)["barge_in_unstopped"] is False


def test_response_latency_and_overhead() -> None:
    events = [
        FirstAudio(t=0.5, epoch=0, reply_id=0, output_sample=8000),  # before the turn ended
        FirstAudio(t=1.5, epoch=0, reply_id=1, output_sample=24000),
    ]
    segs = [UserSegment(0, "turn", 0, 16000), UserSegment(1, "interrupt", 30000, 32000)]
    m = score(_record(events=events, segments=segs, endpoint_ms=400.0))
    assert m["response_latency_ms"]["values"] == [500.0]  # the interrupt has no answer: skipped
    assert m["response_overhead_ms"]["values"] == [100.0]
    noise_only = score(_record(events=events, segments=[UserSegment(0, "noise", 0, 16000)]))
    assert noise_only["response_latency_ms"]["values"] == []


def test_overhead_is_counted_beyond_the_wait_the_turn_detection_chose() -> None:
    # Two turns, speech ending at 1.0 s and 3.0 s: the first called over after 320 ms (a
    # sure end-of-turn detector), the second after the full 500 ms; each answered 30 ms
    # after its call.
    events = [
        UserTurnEnded(t=1.32, epoch=0, input_sample=16000, audio_s=1.0, decided_sample=21120),
        FirstAudio(t=1.35, epoch=0, reply_id=0, output_sample=21600),
        UserTurnEnded(t=3.5, epoch=0, input_sample=48000, audio_s=1.0, decided_sample=56000),
        FirstAudio(t=3.53, epoch=0, reply_id=1, output_sample=56480),
    ]
    segs = [UserSegment(0, "turn", 0, 16000), UserSegment(1, "turn", 40000, 48000)]
    m = score(_record(events=events, segments=segs, endpoint_ms=500.0))
    assert m["response_latency_ms"]["values"] == [350.0, 530.0]
    assert m["turn_wait_ms"]["values"] == [320.0, 500.0]
    assert m["response_overhead_ms"]["values"] == pytest.approx([30.0, 30.0])
    # Without the call's sample (a client that cannot see it) the session's endpoint is
    # taken as the wait: the sooner answer then shows a negative overhead.
    unknown = [
        replace(e, decided_sample=None) if isinstance(e, UserTurnEnded) else e for e in events
    ]
    m = score(_record(events=unknown, segments=segs, endpoint_ms=500.0))
    assert m["response_overhead_ms"]["values"] == pytest.approx([-150.0, 30.0])


@pytest.mark.parametrize(("reply_t", "takeover"), [(1.1, 1), (2.5, 0)])
def test_pause_takeover(reply_t: float, takeover: int) -> None:
    segs = [UserSegment(0, "turn", 0, 16000), UserSegment(1, "continuation", 20800, 32000)]
    events = [ReplyStarted(t=reply_t, epoch=0, reply_id=0)]
    m = score(_record(events=events, segments=segs))
    assert (m["pause_takeovers"], m["pause_segments"]) == (takeover, 1)
    assert m["pause_takeover_rate"] == float(takeover)
    lone = score(_record(events=events, segments=[UserSegment(0, "continuation", 0, 100)]))
    assert lone["pause_segments"] == 0 and lone["pause_takeover_rate"] is None


def _interrupted(t: float, reply_id: int = 0, epoch: int = 0) -> Interrupted:
    return Interrupted(
        t=t, epoch=epoch, reply_id=reply_id, played=0, heard_text="", output_sample=0
    )


@pytest.mark.parametrize(("t", "takeover"), [(1.0, 1), (2.4, 1), (2.45, 0), (0.9, 0)])
def test_backchannel_takeover_window(t: float, takeover: int) -> None:
    segs = [UserSegment(1, "backchannel", 16000, 22400)]  # 1.0 s to 1.4 s, window to 2.4 s
    m = score(_record(events=[_interrupted(t)], segments=segs))
    assert (m["backchannel_takeovers"], m["backchannel_segments"]) == (takeover, 1)
    assert m["backchannel_takeover_rate"] == float(takeover)
    # No interrupt segment at all, so any interruption is a false one.
    assert m["false_interruptions"] == 1 and m["interruptions"] == 1


def test_false_interruptions() -> None:
    segs = [UserSegment(1, "interrupt", 16000, 24000)]  # 1.0 s to 1.5 s, window to 2.5 s
    events = [_interrupted(1.2), _interrupted(2.5, reply_id=1), _interrupted(3.0, reply_id=2)]
    m = score(_record(events=events, segments=segs))
    assert m["false_interruptions"] == 1 and m["interruptions"] == 3
    assert check_targets(m)["false_interruptions"] is False


def _played(reply_id: int, start: int, end: int, epoch: int = 0) -> AudioPlayed:
    return AudioPlayed(
        t=start / SR, epoch=epoch, reply_id=reply_id, start=start, end=end, output_sample=start
    )


def test_lost_and_repeated_samples_on_resume() -> None:
    gap = [_played(1, 0, 1600), _played(1, 1637, 3200), _played(1, 3200, 4800)]
    m = score(_record(events=gap))
    assert (m["lost_samples_on_resume"], m["repeated_samples_on_resume"]) == (37, 0)
    overlap = [_played(1, 0, 1600), _played(1, 1500, 3200)]
    m = score(_record(events=overlap))
    assert (m["lost_samples_on_resume"], m["repeated_samples_on_resume"]) == (0, 100)
    # Each reply is walked on its own: reply 2 starting at 0 repeats nothing of reply 1.
    two = [_played(1, 0, 1600), _played(2, 0, 1600), _played(1, 1600, 3200)]
    m = score(_record(events=two))
    assert (m["lost_samples_on_resume"], m["repeated_samples_on_resume"]) == (0, 0)
    assert check_targets(m)["lost_samples_on_resume"] is True


def test_stale_events() -> None:
    clean = [
        ReplyStarted(t=0.1, epoch=0, reply_id=1),
        _played(1, 0, 1600),
        _interrupted(1.0, reply_id=1),
        ReplyStarted(t=1.5, epoch=1, reply_id=2),
        _played(2, 0, 1600, epoch=1),
    ]
    assert score(_record(events=clean))["stale_events_after_interrupt"] == 0
    old_epoch = [*clean, ReplyStarted(t=2.0, epoch=0, reply_id=3)]
    assert score(_record(events=old_epoch))["stale_events_after_interrupt"] == 1
    late_audio = [*clean[:3], _played(1, 1600, 3200)]  # same epoch, but after its interrupt
    assert score(_record(events=late_audio))["stale_events_after_interrupt"] == 1
    both = [*clean, _played(1, 1600, 3200)]  # old epoch and after interrupt: counted once
    m = score(_record(events=both))
    assert m["stale_events_after_interrupt"] == 1 and m["replies"] == 2
    assert check_targets(m)["stale_events_after_interrupt"] is False


def test_aggregate_pools_lists_and_sums_counts() -> None:
    a = _record(
        _speaking(4 * SR, 17600),
        events=[_interrupted(1.2)],
        segments=[UserSegment(1, "interrupt", 16000, 24000)],
        name="a",
    )
    b_out = _speaking(4 * SR, 19200)
    b_out[22000:36000] = 0.1
    b = _record(
        b_out,
        segments=[
            UserSegment(1, "backchannel", 16000, 17000),
            UserSegment(2, "backchannel", 33600, 34000),
        ],
        name="b",
    )
    sa, sb = score(a), score(b)
    assert sa["barge_in_stop_ms"]["values"] == [100.0]
    assert sb["barge_in_stop_ms"]["values"] == [200.0, 150.0]
    pooled = aggregate([sa, sb])
    assert pooled["scenarios"] == 2
    assert sorted(pooled["barge_in_stop_ms"]["values"]) == [100.0, 150.0, 200.0]
    assert pooled["barge_in_stop_ms"]["p50"] == 150.0 and pooled["barge_in_stop_ms"]["max"] == 200.0
    assert pooled["barge_in_stop_ms"]["p95"] == pytest.approx(195.0)
    assert pooled["barge_ins"] == 3 and pooled["interruptions"] == 1
    assert (pooled["backchannel_segments"], pooled["backchannel_takeover_rate"]) == (2, 0.0)
    assert pooled["pause_takeover_rate"] is None  # no continuation segments anywhere
    verdicts = check_targets(pooled)
    assert verdicts["barge_in_stop_ms"] is False and verdicts["response_overhead_ms"] is None
    assert verdicts["backchannel_takeover_rate"] is True
    json.dumps(pooled)  # JSON-ready


def test_run_record_rejects_misaligned_audio() -> None:
    with pytest.raises(ValueError, match="as long as input"):
        RunRecord(_scenario(), SR, np.zeros(10), np.zeros(10), np.zeros(9))
    with pytest.raises(ValueError, match="onset"):
        UserSegment(0, "turn", 20, 10)


# ---------------------------------------------------------------- report


def test_write_report(tmp_path: Path) -> None:
    out = _speaking(3 * SR, 24000, start=8000)
    events = [
        StateChanged(
            t=0.4, epoch=0, old=AgentState.LISTENING, new=AgentState.THINKING, reason="turn"
        ),
        StateChanged(
            t=0.5, epoch=0, old=AgentState.THINKING, new=AgentState.SPEAKING, reason="audio"
        ),
        FirstAudio(t=0.5, epoch=0, reply_id=0, output_sample=8000),
        PlaybackPaused(
            t=1.05, epoch=0, reply_id=0, position=8800, output_sample=16800, onset_sample=16000
        ),
        PlaybackResumed(t=1.3, epoch=0, reply_id=0, position=8800, output_sample=20800),
        _interrupted(1.45),
        StateChanged(
            t=1.5, epoch=1, old=AgentState.SPEAKING, new=AgentState.LISTENING, reason="cut"
        ),
    ]
    segs = [UserSegment(0, "turn", 800, 3200), UserSegment(1, "interrupt", 16000, 22000)]
    first = _record(out, events=events, segments=segs, seconds=3.0, name="first")
    first.input[16000:22000] = 0.2
    second = _record(seconds=2.0, name="second")
    records = [first, second]
    scored = [score(r) for r in records]
    assert write_report(tmp_path / "rep", records, scored) == tmp_path / "rep"
    rep = tmp_path / "rep"
    metrics = json.loads((rep / "metrics.json").read_text())
    assert set(metrics["scenarios"]) == {"first", "second"}
    assert metrics["scenarios"]["first"]["barge_in_stop_ms"]["values"] == [500.0]
    assert metrics["aggregate"]["scenarios"] == 2
    summary = (rep / "summary.md").read_text()
    assert "## Aggregate" in summary and "## first" in summary and "## second" in summary
    assert "p95 <= 100" in summary and "**FAIL**" in summary  # 500 ms barge-in misses
    for r in records:
        folder = rep / r.scenario.name
        lengths = {sf.info(folder / f"{k}.wav").frames for k in ("input", "output", "mic")}
        assert lengths == {len(r.input)}
        png = (folder / "timeline.png").read_bytes()
        assert png.startswith(b"\x89PNG") and len(png) > 10_000
    with pytest.raises(ValueError, match="records but"):
        write_report(tmp_path / "x", records, scored[:1])


def test_rewound_samples_played_again_are_not_repeats() -> None:
    events = [
        _played(0, 0, 1600),
        AudioRewound(t=0.1, epoch=0, reply_id=0, position=1280),
        _played(0, 1280, 3200),
        _played(0, 3000, 3500),
    ]
    s = score(_record(events=events))
    assert s["repeated_samples_on_resume"] == 200 and s["lost_samples_on_resume"] == 0
