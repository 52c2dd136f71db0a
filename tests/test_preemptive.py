"""Replies started ahead of the turn's end (virtual time): held while the user is silent,
used when the turn ends, thrown away without a trace when the user goes on."""

import numpy as np
import pytest

from parley.agent.core.clock import VirtualClock
from parley.agent.core.session import DuplexSession
from parley.agent.harness.drive import drive
from parley.config import AgentConfig
from parley.llm.engine import ReplyParams
from parley.speech_io.sources import ArraySink, ArraySource
from tests.scripted import ScriptedDetector
from tests.test_session import SR, engine_failing_at, speechlike

# Short replies keep each conversation quick; the scripted VAD calls a stop 200 ms into the
# silence, so a reply started 250 ms in hears exactly what one started at the turn's end does.
PARAMS = ReplyParams(min_speech_tokens=10, max_speech_tokens=20)


async def converse(model, spans, seconds, preemptive_ms, **kw):
    cfg = AgentConfig(echo_cancellation=False, preemptive_reply_ms=preemptive_ms, **kw)
    clock = VirtualClock()
    detector = ScriptedDetector([(int(a * SR), int(b * SR)) for a, b in spans])
    session = DuplexSession(model, cfg, clock=clock, detector=detector, reply_params=PARAMS)
    events = []
    session.subscribe(events.append)
    n = int(seconds * SR)
    user = np.zeros(n, dtype=np.float32)
    for i, (a, b) in enumerate(spans):
        user[int(a * SR) : int(b * SR)] = speechlike(int(b * SR) - int(a * SR), seed=i)
    await drive(session, clock, ArraySource(user), ArraySink(), n)
    await session.settle()
    return session, events


def said(events):
    """What a client sees, without timing: event kinds and texts in order."""
    keep = ("user_turn_ended", "reply_started", "text_delta", "reply_ended")
    return [(e.type, getattr(e, "text", None)) for e in events if e.type in keep]


async def test_a_reply_started_ahead_plays_at_the_turns_end(tiny_model):
    off, off_events = await converse(tiny_model, [(0.2, 1.2)], 5.0, None)
    on, on_events = await converse(tiny_model, [(0.2, 1.2)], 5.0, 250)
    assert (on.preemption.used, on.preemption.dropped) == (1, 0)
    # Nothing of it got out before the turn ended, and then the same as without it.
    assert said(on_events) == said(off_events)
    assert on.context.last_reply_tokens == off.context.last_reply_tokens
    assert on.context.context_length == off.context.context_length
    first = next(e for e in on_events if e.type == "first_audio")
    turn_end = next(e for e in on_events if e.type == "user_turn_ended")
    # Started 250 ms into the silence, the turn ending at 500 ms: 250 ms ahead.
    assert first.ahead_ms == pytest.approx(250, abs=10)
    assert first.output_sample / SR - turn_end.t <= 0.011
    assert next(e for e in off_events if e.type == "first_audio").ahead_ms == 0
    for s in (on, off):
        await s.aclose()


async def test_the_user_going_on_throws_the_held_reply_away(tiny_model):
    # A 400 ms pause: long enough to start a reply ahead (250 ms), too short to end the turn.
    spans = [(0.2, 1.0), (1.4, 2.0)]
    off, off_events = await converse(tiny_model, spans, 6.0, None)
    on, on_events = await converse(tiny_model, spans, 6.0, 250)
    assert (on.preemption.used, on.preemption.dropped) == (1, 1)
    assert said(on_events) == said(off_events)
    assert len([e for e in on_events if e.type == "reply_started"]) == 1
    # The conversation holds one user turn and one reply, the same as never having tried.
    assert [h.role for h in on.history] == ["user", "assistant"]
    assert on.context.last_reply_tokens == off.context.last_reply_tokens
    assert on.context.context_length == off.context.context_length
    assert on.running_tasks == 0
    for s in (on, off):
        await s.aclose()


async def test_a_held_reply_that_finished_is_rolled_back_whole(tiny_model):
    # A long pause: the held reply is generated to its end before the user goes on.
    spans = [(0.2, 1.0), (1.45, 2.0)]
    on, on_events = await converse(
        tiny_model, spans, 6.0, 200, endpoint_silence_ms=600, max_ahead_ms=60_000
    )
    assert on.preemption.used == 1
    off, off_events = await converse(
        tiny_model, spans, 6.0, None, endpoint_silence_ms=600, max_ahead_ms=60_000
    )
    assert on.preemption.dropped == 1
    assert said(on_events) == said(off_events)
    assert on.context.last_reply_tokens == off.context.last_reply_tokens
    assert on.context.context_length == off.context.context_length
    for s in (on, off):
        await s.aclose()


async def test_second_turn_after_a_dropped_reply_answers_as_without_it(tiny_model):
    spans = [(0.2, 1.0), (1.4, 2.0), (6.0, 6.8)]
    off, off_events = await converse(tiny_model, spans, 10.0, None)
    on, on_events = await converse(tiny_model, spans, 10.0, 250)
    assert on.preemption.dropped == 1 and on.preemption.used == 2
    assert said(on_events) == said(off_events)
    assert on.context.last_reply_tokens == off.context.last_reply_tokens
    for s in (on, off):
        await s.aclose()


async def test_a_failing_held_reply_is_dropped_and_the_turn_still_answered(tiny_model):
    with engine_failing_at(tiny_model.engine, 1):
        on, events = await converse(tiny_model, [(0.2, 1.2)], 5.0, 250)
    assert (on.preemption.used, on.preemption.dropped) == (0, 1)
    ends = [e for e in events if e.type == "reply_ended"]
    assert [e.status for e in ends] == ["completed"]
    await on.aclose()


async def test_closing_mid_hold_leaves_nothing_running(tiny_model):
    cfg = AgentConfig(echo_cancellation=False, preemptive_reply_ms=50)
    clock = VirtualClock()
    session = DuplexSession(
        tiny_model,
        cfg,
        clock=clock,
        detector=ScriptedDetector([(int(0.2 * SR), int(1.0 * SR))]),
        reply_params=PARAMS,
    )
    user = np.zeros(int(1.35 * SR), dtype=np.float32)
    user[int(0.2 * SR) : SR] = speechlike(int(0.8 * SR))
    await drive(session, clock, ArraySource(user), ArraySink(), len(user))
    assert session.preemption.held is not None  # 150 ms into the silence: held, not used
    await session.aclose()
    assert session.running_tasks == 0


def test_a_reply_is_due_once_per_silence_after_the_wait():
    from parley.agent.core.endpoint import Endpointer
    from parley.agent.core.preemptive import Preemption

    turn = Endpointer(endpoint=8000, preroll=0)
    # when to start is all this asks of it: no collaborators needed
    pre = Preemption(None, None, None, None, None, None)  # type: ignore[arg-type]
    pre.after = 5120  # 320 ms
    turn.speech_started(0, 0)
    assert pre.due(turn, 4000) is None  # the user speaks
    turn.closing(10_000)
    assert pre.due(turn, 15_119) is None
    assert pre.due(turn, 15_120) == 10_000
    assert pre.due(turn, 16_000) is None  # one try per silence, whatever came of it
    turn.speech_started(17_000, 0)  # the user goes on: a new silence, a new try
    turn.speech_stopped(20_000)
    assert pre.due(turn, 25_120) == 20_000
    pre.after = None
    turn.speech_started(26_000, 0)
    turn.speech_stopped(27_000)
    assert pre.due(turn, 40_000) is None
