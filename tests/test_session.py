import contextlib

import numpy as np
import pytest

from parley.agent.core.clock import VirtualClock
from parley.agent.core.events import AgentState
from parley.agent.core.session import DuplexSession
from parley.agent.harness.drive import drive
from parley.config import AgentConfig
from parley.speech_io.sources import ArraySink, ArraySource
from tests.scripted import ScriptedDetector

SR = 16000
L, T, S, P, X = AgentState


def speechlike(n, seed=0):
    rng = np.random.default_rng(seed)
    t = np.arange(n) / SR
    return (0.2 * np.sin(2 * np.pi * 180 * t) + 0.05 * rng.standard_normal(n)).astype(np.float32)


async def play(session, clock, user, n):
    sink = ArraySink()
    await drive(session, clock, ArraySource(user), sink, n)
    return sink.samples


async def run(model, spans, seconds, cfg=None, stop_delay=3200, **kw):
    cfg = cfg or AgentConfig(echo_cancellation=False, **kw)
    clock = VirtualClock()
    vad = ScriptedDetector([(int(a * SR), int(b * SR)) for a, b in spans], stop_delay=stop_delay)
    session = DuplexSession(model, cfg, clock=clock, detector=vad)
    events = []
    session.subscribe(events.append)
    n = int(seconds * SR)
    user = np.zeros(n, dtype=np.float32)
    for a, b in spans:
        user[int(a * SR) : int(b * SR)] = speechlike(int(b * SR) - int(a * SR))
    out = await play(session, clock, user, n)
    await session.aclose()
    return session, events, out


def states(events):
    return [(e.old, e.new) for e in events if e.type == "state_changed"]


async def test_plain_turn(tiny_model):
    session, events, out = await run(tiny_model, [(0.2, 1.4)], 12.0)
    assert states(events) == [(L, T), (T, S), (S, L)]
    types = [
        e.type for e in events if e.type not in ("audio_played", "text_delta", "state_changed")
    ]
    assert types == [
        "user_speech_started",
        "user_speech_ended",
        "user_turn_ended",
        "reply_started",
        "first_audio",
        "reply_ended",
    ]
    turn_end = next(e for e in events if e.type == "user_turn_ended")
    first = next(e for e in events if e.type == "first_audio")
    # The turn ends endpoint_silence after the speech ended; audio starts within a frame.
    assert turn_end.t == pytest.approx(1.4 + 0.5, abs=0.011)
    assert first.output_sample / SR - turn_end.t <= 0.011
    ended = next(e for e in events if e.type == "reply_ended")
    assert ended.status == "completed" and ended.played > 3 * SR
    # everything generated was played exactly once, in order
    spans = [(e.start, e.end) for e in events if e.type == "audio_played"]
    assert all(b[0] == a[1] for a, b in zip(spans, spans[1:], strict=False))
    assert session.running_tasks == 0
    assert [h.role for h in session.history] == ["user", "assistant"]


def first(events, kind):
    return next(e for e in events if e.type == kind)


async def test_interruption_pauses_at_once_then_cuts_and_answers(tiny_model):
    # Reply audio starts ~1.91 s; the user cuts in at 3.0 s and talks for 1.2 s.
    session, events, out = await run(tiny_model, [(0.2, 1.4), (3.0, 4.2)], 14.0)
    assert states(events) == [(L, T), (T, S), (S, P), (P, X), (X, L), (L, T), (T, S), (S, L)]
    paused = first(events, "playback_paused")
    # silent from the tick where the VAD confirmed (30 ms) on, not a sample later
    onset = int(3.0 * SR)
    assert np.all(out[onset + 480 : int(4.0 * SR)] == 0)
    assert np.any(out[onset - 160 : onset] != 0)
    cut = first(events, "interrupted")
    assert cut.played == paused.position
    assert cut.t == pytest.approx(3.0 + 0.6, abs=0.011)  # min_interruption after onset
    # the epoch was bumped, and nothing of the old reply came out after it
    after = events[events.index(cut) + 1 :]
    assert all(e.epoch == 1 for e in after)
    assert not [e for e in after if e.type == "audio_played" and e.reply_id == cut.reply_id]
    ended = [e for e in events if e.type == "reply_ended"]
    assert [e.status for e in ended] == ["interrupted", "completed"]
    assert ended[0].text == cut.heard_text
    assert [h.status for h in session.history if h.role == "assistant"] == [
        "interrupted",
        "completed",
    ]
    # The cut reply's history holds only the heard part: fewer tokens than were generated.
    assert session.running_tasks == 0


async def test_backchannel_resumes_from_the_exact_sample(tiny_model):
    session, events, out = await run(tiny_model, [(0.2, 1.4), (3.0, 3.4)], 12.0)
    assert states(events) == [(L, T), (T, S), (S, P), (P, S), (S, L)]
    paused, resumed = first(events, "playback_paused"), first(events, "playback_resumed")
    assert paused.position == resumed.position
    spans = [(e.start, e.end) for e in events if e.type == "audio_played"]
    assert all(b[0] == a[1] for a, b in zip(spans, spans[1:], strict=False))  # no gap, no repeat
    assert not [e for e in events if e.type == "interrupted"]
    assert first(events, "reply_ended").status == "completed"


async def test_unconfirmed_onset_pauses_then_resumes_exactly(tiny_model):
    # 40 ms that might be speech (a VAD's tentative stage) and never is: the output pauses
    # at once, holds for TENTATIVE_HOLD_MS, then goes on from the exact sample.
    clock = VirtualClock()
    detector = ScriptedDetector([(int(0.2 * SR), int(1.4 * SR))], tentative_spans=[(48000, 48640)])
    session = DuplexSession(
        tiny_model, AgentConfig(echo_cancellation=False), clock=clock, detector=detector
    )
    events = []
    session.subscribe(events.append)
    user = np.zeros(12 * SR, dtype=np.float32)
    user[int(0.2 * SR) : int(1.4 * SR)] = speechlike(int(1.2 * SR))
    out = await play(session, clock, user, len(user))
    await session.aclose()
    assert states(events) == [(L, T), (T, S), (S, P), (P, S), (S, L)]
    paused, resumed = first(events, "playback_paused"), first(events, "playback_resumed")
    assert paused.output_sample <= 48000 + 160  # within a frame of the possible onset
    assert resumed.output_sample - paused.output_sample == pytest.approx(0.1 * SR, abs=160)
    assert paused.position == resumed.position
    assert np.all(out[paused.output_sample : resumed.output_sample] == 0)
    spans = [(e.start, e.end) for e in events if e.type == "audio_played"]
    assert all(b[0] == a[1] for a, b in zip(spans, spans[1:], strict=False))
    assert not [e for e in events if e.type in ("interrupted", "user_speech_started")][1:]
    assert first(events, "reply_ended").status == "completed"


async def test_pause_inside_user_turn_does_not_take_over(tiny_model):
    # 300 ms pause (< 500 ms endpoint) between two parts of one turn
    session, events, out = await run(tiny_model, [(0.2, 1.0), (1.3, 2.0)], 4.0)
    starts = [e for e in events if e.type == "reply_started"]
    assert len(starts) == 1 and starts[0].t > 2.0 + 0.5 - 0.011
    assert len([e for e in events if e.type == "user_turn_ended"]) == 1


async def test_interrupt_during_the_first_audio_chunk(tiny_model):
    # The reply's audio starts at 1.5 s; the user cuts in at once.
    session, events, out = await run(tiny_model, [(0.2, 1.0), (1.5, 2.6)], 8.0)
    assert states(events)[:5] == [(L, T), (T, S), (S, P), (P, X), (X, L)]
    cut = first(events, "interrupted")
    assert 0 < cut.played <= 640  # less than one speech token's audio reached the speaker
    # The history keeps the first cycle's text: its first speech token began to play.
    cut_reply = [e for e in events if e.type == "text_delta" and e.reply_id == cut.reply_id]
    assert cut.heard_text == "".join(e.text for e in cut_reply)[: len(cut.heard_text)]
    assert np.all(out[int(1.53 * SR) : int(2.6 * SR)] == 0)


async def test_explicit_interrupt_and_close(tiny_model):
    clock = VirtualClock()
    session = DuplexSession(
        tiny_model,
        AgentConfig(echo_cancellation=False),
        clock=clock,
        detector=ScriptedDetector([(3200, 16000)]),
    )
    events = []
    session.subscribe(events.append)
    user = speechlike(3 * SR)
    await play(session, clock, user, int(2.2 * SR))
    assert session.state is S
    await session.interrupt()
    assert session.state is L and session.epoch == 1
    assert first(events, "reply_ended").status == "interrupted"
    assert np.all(session.pull_output(1600) == 0)
    await session.aclose()
    assert session.running_tasks == 0


@contextlib.contextmanager
def engine_failing_at(engine, call: int):
    """The engine's ``call``-th forward raises; the others run as usual."""
    real, calls = engine.forward, [0]

    def flaky(emb, cache):
        calls[0] += 1
        if calls[0] == call:
            raise RuntimeError("device lost")
        return real(emb, cache)

    engine.forward = flaky
    try:
        yield
    finally:
        engine.forward = real


async def test_a_failing_engine_ends_the_reply_and_the_conversation_goes_on(tiny_model):
    with engine_failing_at(tiny_model.engine, 5):
        # A reply that fails while it plays (test_preemptive has one that fails held).
        session, events, out = await run(
            tiny_model, [(0.2, 1.0), (4.0, 5.0)], 14.0, preemptive_reply_ms=None
        )
    ended = [e for e in events if e.type == "reply_ended"]
    assert [e.status for e in ended] == ["failed", "completed"]
    assert states(events)[:2] == [(L, T), (T, L)]  # ended, not interrupted: nothing was cut
    assert session.state is L and session.running_tasks == 0


async def test_settings_change_live(tiny_model):
    # Endpoint silence shortened mid-session: the second turn ends sooner than the first.
    clock = VirtualClock()
    spans = [(0.2, 1.0), (9.0, 9.8)]
    session = DuplexSession(
        tiny_model,
        AgentConfig(echo_cancellation=False),
        clock=clock,
        detector=ScriptedDetector([(int(a * SR), int(b * SR)) for a, b in spans]),
    )
    events = []
    session.subscribe(events.append)
    user = np.zeros(14 * SR, dtype=np.float32)
    for a, b in spans:
        user[int(a * SR) : int(b * SR)] = speechlike(int((b - a) * SR))
    await play(session, clock, user, 8 * SR)
    session.reconfigure(
        session.config.model_copy(update={"endpoint_silence_ms": 200, "echo_cancellation": True})
    )
    assert session.input.echo is not None
    with pytest.raises(ValueError, match="frame_ms"):
        session.reconfigure(session.config.model_copy(update={"frame_ms": 20}))
    sink = ArraySink()
    for start in range(8 * SR, len(user), 160):
        session.push_input(user[start : start + 160])
        clock.set((start + 160) / SR)
        await session.settle()
        sink.write(session.pull_output(160))
    await session.aclose()
    ends = [e.t for e in events if e.type == "user_turn_ended"]
    assert ends[0] == pytest.approx(1.0 + 0.5, abs=0.011)
    assert ends[1] == pytest.approx(9.8 + 0.2, abs=0.011)
