"""What the embedding API takes in: bad audio is refused before it touches the session,
and an events() iterator nobody reads stays bounded."""

from __future__ import annotations

import asyncio
from pathlib import Path

import numpy as np
import pytest

from parley.agent.core.bus import EventBus
from parley.agent.core.clock import VirtualClock
from parley.agent.core.events import Event, UserSpeechStarted
from parley.agent.service.api import MAX_PUSH_SECONDS, Agent, AudioPushError
from parley.agent.service.settings import SessionSettings
from parley.errors import AudioInputError
from parley.speech_io.audio import load_audio

SAMPLE = Path(__file__).resolve().parent.parent / "configs" / "samples" / "seven_times_eight.wav"
FRAME = 160
KEY_EVENTS = ("user_speech_started", "user_turn_ended", "reply_started", "reply_ended")


def _agent(model) -> Agent:
    # Echo cancellation stays on (the default): its state is one that NaN used to poison.
    agent_cfg = model.config.agent.model_copy(update={"reply_min_s": 1.0, "reply_max_s": 3.0})
    return Agent(model, config=model.config.model_copy(update={"agent": agent_cfg}))


async def _converse(session, clock: VirtualClock, audio: np.ndarray) -> list[str]:
    """Push a spoken question then quiet as a microphone would; the key events seen."""
    seen: list[str] = []
    session.subscribe(lambda e: seen.append(e.type) if e.type in KEY_EVENTS else None)
    user = np.concatenate([audio, np.zeros(5 * 16000, np.float32)])
    start0 = session.session.input_sample
    for start in range(0, len(user) - FRAME + 1, FRAME):
        session.push_audio(user[start : start + FRAME])
        clock.set((start0 + start + FRAME) / 16000)
        await session.settle()
        session.pull_audio(FRAME)
    return seen


@pytest.mark.parametrize("bad", [np.nan, np.inf])
async def test_non_finite_push_is_refused_and_the_session_still_hears(tiny_model, bad):
    agent = _agent(tiny_model)
    question = load_audio(SAMPLE, 16000)
    try:
        clock = VirtualClock()
        fresh = agent.open_session(SessionSettings(endpoint_silence_ms=400), clock=clock)
        expected = await _converse(fresh, clock, question)
        await fresh.aclose()
        assert expected.count("user_speech_started") >= 1 and "reply_started" in expected

        clock = VirtualClock()
        session = agent.open_session(SessionSettings(endpoint_silence_ms=400), clock=clock)
        poisoned = question[:1600].copy()
        poisoned[800] = bad
        with pytest.raises(AudioPushError, match="NaN|infinite") as info:
            session.push_audio(poisoned)
        assert isinstance(info.value, ValueError) and isinstance(info.value, AudioInputError)
        assert session.pristine and session.session.input_sample == 0  # took none of it
        assert await _converse(session, clock, question) == expected
        await session.aclose()
    finally:
        await agent.aclose()


@pytest.fixture
async def spied(tiny_model):
    """A session whose pushes are recorded instead of processed (the checks are what's
    under test, not the VAD)."""
    agent = _agent(tiny_model)
    session = agent.open_session()
    taken: list[np.ndarray] = []
    session.session.push_input = taken.append
    yield session, taken
    await agent.aclose()


async def test_int16_is_scaled_to_full_scale_floats(spied):
    session, taken = spied
    session.push_audio(np.array([32767, -32768, 16384, 0], dtype=np.int16))
    np.testing.assert_array_equal(taken[0], np.array([32767 / 32768, -1.0, 0.5, 0], np.float32))
    assert taken[0].dtype == np.float32


@pytest.mark.parametrize(
    ("samples", "rate", "match"),
    [
        (np.zeros((320, 2), np.float32), 16000, r"mono.*shape \(320, 2\)"),
        (None, 16000, "None"),
        (np.zeros(160, np.uint8), 16000, "unsupported sample type uint8"),
        (np.zeros(160, np.int64), 16000, "unsupported sample type int64"),
        (np.zeros(160, np.float32), 44100.5, "sample rate must be a positive integer"),
        (np.zeros(160, np.float32), 0, "sample rate must be a positive integer"),
    ],
)
async def test_unusable_pushes_are_refused_with_how_to_fix(spied, samples, rate, match):
    session, taken = spied
    with pytest.raises(AudioPushError, match=match) as info:
        session.push_audio(samples, sample_rate=rate)
    assert "float32 in [-1, 1] or int16" in str(info.value)
    assert taken == [] and session._resampler is None


async def test_other_rates_are_resampled_as_a_stream(spied):
    session, taken = spied
    for _ in range(10):  # 0.5 s at 44.1 kHz, in 50 ms chunks
        session.push_audio(np.full(2205, 0.1, np.float32), sample_rate=44100)
    total = sum(len(x) for x in taken)
    # The streaming filter holds back a few ms; nothing is lost beyond that.
    assert 8000 - 800 <= total <= 8000
    session.push_audio(np.zeros(160, np.float32), sample_rate=16000.0)  # integral float: fine
    assert len(taken[-1]) == 160


async def test_a_push_longer_than_the_cap_is_refused_whole(spied):
    session, taken = spied
    session.push_audio(np.zeros(int(MAX_PUSH_SECONDS * 16000), np.float32))
    assert len(taken) == 1
    with pytest.raises(AudioPushError, match=r"600\.0 s of audio in one call; at most 10 s"):
        session.push_audio(np.zeros(600 * 16000, np.float32))
    with pytest.raises(AudioPushError, match="at most"):  # the cap is in seconds, any rate
        session.push_audio(np.zeros(int(MAX_PUSH_SECONDS * 48000) + 1, np.float32), 48000)
    assert len(taken) == 1


def _event(i: int) -> Event:
    return UserSpeechStarted(t=i / 100, epoch=0, input_sample=i)


async def test_an_unread_events_iterator_keeps_only_the_newest(caplog):
    feed = EventBus(max_pending=3, name="sess_x")
    seen: list[Event] = []
    feed.subscribe(seen.append)
    it = feed.events()
    first = asyncio.ensure_future(anext(it))
    await asyncio.sleep(0)  # the iterator is now registered and waiting
    for i in range(10):
        feed.emit(_event(i))
    feed.close()
    kept = [(await first).input_sample] + [e.input_sample async for e in it]
    assert kept == [7, 8, 9]  # the oldest went
    assert feed.dropped == 7 and len(seen) == 10  # listeners still get everything
    assert sum("not being read" in r.message for r in caplog.records) == 1  # logged once


async def test_session_events_are_bounded_and_drops_counted(spied):
    session, _ = spied
    assert session.events_dropped == 0
    it = session.events()
    first = asyncio.ensure_future(anext(it))
    await asyncio.sleep(0)
    bound = session._bus.max_pending
    for i in range(bound + 50):
        session._on_event(_event(i))
    assert session.events_dropped == 50
    await session.aclose()
    kept = [(await first).input_sample] + [e.input_sample async for e in it]
    assert kept == list(range(50, bound + 50))
