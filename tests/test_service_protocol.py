"""The Realtime protocol pieces that need no model: parsing, session.update rules, audio
codec, the audio clock, limits and metrics."""

from __future__ import annotations

import base64
import json

import numpy as np
import pytest

from parley.agent.core.clock import VirtualClock
from parley.agent.service import protocol as P
from parley.agent.service.limits import check_bind, is_loopback
from parley.agent.service.metrics import ServiceMetrics
from parley.agent.service.pacing import MAX_BACKDATE_S, BufferFullError, InputPacer
from parley.agent.service.session_config import WireConfig, session_object
from parley.agent.service.settings import SessionSettings
from parley.config import AgentConfig
from parley.errors import ParleyError
from parley.speech_io.pcm16 import AudioFormatError, decode_pcm16, encode_pcm16
from parley.speech_io.resample import Resampler


def parse(obj) -> P.ClientEvent:
    return P.parse_client_event(json.dumps(obj))


def refused(raw) -> P.ProtocolError:
    with pytest.raises(P.ProtocolError) as info:
        P.parse_client_event(raw if isinstance(raw, str | bytes) else json.dumps(raw))
    return info.value


def test_every_supported_client_event_parses():
    audio = base64.b64encode(b"\0\0" * 10).decode()
    events = [
        {"type": "session.update", "session": {"type": "realtime", "instructions": "hi"}},
        {"type": "input_audio_buffer.append", "audio": audio, "event_id": "e1"},
        {"type": "input_audio_buffer.commit"},
        {"type": "input_audio_buffer.clear"},
        {"type": "response.create", "response": {"output_modalities": ["audio"]}},
        {"type": "response.cancel", "response_id": "resp_1"},
        {
            "type": "conversation.item.truncate",
            "item_id": "i",
            "content_index": 0,
            "audio_end_ms": 5,
        },
    ]
    parsed = [parse(e) for e in events]
    assert [p.type for p in parsed] == [e["type"] for e in events]
    assert parsed[1].event_id == "e1"
    assert parsed[6].audio_end_ms == 5


@pytest.mark.parametrize(
    ("raw", "code"),
    [
        ("{not json", "invalid_json"),
        (b'{"type": "input_audio_buffer.clear"}', "invalid_message"),
        ("[1, 2]", "invalid_event"),
        ('{"event_id": "x"}', "invalid_event"),
        ('{"type": 7}', "invalid_event"),
        ('{"type": "no.such.event"}', "unknown_event_type"),
        ('{"type": "conversation.item.create"}', "unsupported_event"),
        ('{"type": "input_audio_buffer.append"}', "invalid_value"),
        ('{"type": "input_audio_buffer.append", "audio": 5}', "invalid_value"),
        (
            '{"type": "conversation.item.truncate", "item_id": "a", "audio_end_ms": -1}',
            "invalid_value",
        ),
        (
            '{"type": "conversation.item.truncate", "item_id": "a", "audio_end_ms": "9"}',
            "invalid_value",
        ),
        (
            '{"type": "conversation.item.truncate", "item_id": "a", "audio_end_ms": 1.5}',
            "invalid_value",
        ),
        (
            '{"type": "session.update", "session": {"audio": {"input": {"format": 3}}}}',
            "invalid_value",
        ),
        ("[" * 100_000 + "]" * 100_000, "invalid_json"),
    ],
)
def test_malformed_messages_are_refused_with_a_code(raw, code):
    exc = refused(raw)
    assert exc.code == code
    event = P.error_event(exc)
    assert event["type"] == "error" and event["error"]["code"] == code and event["error"]["message"]


def test_error_names_the_client_event_id_and_param():
    exc = refused({"type": "conversation.item.truncate", "event_id": "ev9", "item_id": "a"})
    assert exc.event_id == "ev9" and exc.param == "audio_end_ms"


def update(session: dict, wire: WireConfig | None = None, settings=None):
    event = parse({"type": "session.update", "session": session})
    return (wire or WireConfig()).updated(event.session, settings or SessionSettings(), "e")


def test_session_update_maps_turn_detection_and_formats():
    wire, settings = update(
        {
            "instructions": "be brief",
            "audio": {
                "input": {
                    "format": {"type": "audio/pcm", "rate": 16000},
                    "turn_detection": {
                        "type": "server_vad",
                        "silence_duration_ms": 700,
                        "prefix_padding_ms": 300,
                        "threshold": 0.6,
                    },
                },
                "output": {"format": {"type": "audio/pcm"}, "voice": "marin"},
            },
        }
    )
    assert (wire.input_rate, wire.output_rate, wire.voice) == (16000, 24000, "marin")
    assert settings.endpoint_silence_ms == 700 and settings.preroll_ms == 300
    assert settings.vad_threshold == 0.6 and settings.instructions == "be brief"
    obj = session_object("s", wire, settings, AgentConfig())
    td = obj["audio"]["input"]["turn_detection"]
    assert td["silence_duration_ms"] == 700 and td["threshold"] == 0.6
    assert obj["audio"]["input"]["format"] == {"type": "audio/pcm", "rate": 16000}
    # An explicit null switches turn detection off; leaving it out keeps it.
    off, _ = update({"audio": {"input": {"turn_detection": None}}})
    kept, _ = update({"audio": {"input": {}}})
    assert off.turn_detection is None and kept.turn_detection == "server_vad"
    assert (
        session_object("s", off, settings, AgentConfig())["audio"]["input"]["turn_detection"]
        is None
    )
    assert settings.turn_detection == "server_vad"


def test_session_update_asks_for_semantic_turn_detection():
    wire, settings = update(
        {"audio": {"input": {"turn_detection": {"type": "semantic_vad", "eagerness": "high"}}}}
    )
    assert (settings.turn_detection, settings.eagerness) == ("semantic_vad", "high")
    agent = settings.agent_config(AgentConfig())
    assert (agent.turn_detection, agent.eagerness) == ("semantic_vad", "high")
    # Reported as the session runs it: with a detector, semantic; without one, the timer.
    td = session_object("s", wire, settings, agent, "semantic_vad")["audio"]["input"]
    assert td["turn_detection"] == {
        "type": "semantic_vad",
        "eagerness": "high",
        "create_response": True,
        "interrupt_response": True,
    }
    timer = session_object("s", wire, settings, agent, "server_vad")["audio"]["input"]
    assert timer["turn_detection"]["type"] == "server_vad"


@pytest.mark.parametrize(
    ("session", "code", "param"),
    [
        (
            {"audio": {"input": {"format": {"type": "audio/pcmu"}}}},
            "unsupported_audio_format",
            "session.audio.input.format",
        ),
        (
            {"audio": {"output": {"format": {"type": "audio/pcm", "rate": 44100}}}},
            "unsupported_audio_format",
            "session.audio.output.format.rate",
        ),
        (
            {
                "audio": {
                    "input": {
                        "turn_detection": {"type": "semantic_vad", "silence_duration_ms": 300}
                    }
                }
            },
            "invalid_value",
            "session.audio.input.turn_detection.silence_duration_ms",
        ),
        (
            {"audio": {"input": {"turn_detection": {"type": "server_vad", "eagerness": "high"}}}},
            "invalid_value",
            "session.audio.input.turn_detection.eagerness",
        ),
        (
            {
                "audio": {
                    "input": {"turn_detection": {"type": "server_vad", "create_response": False}}
                }
            },
            "unsupported_turn_detection",
            "session.audio.input.turn_detection.create_response",
        ),
        ({"output_modalities": ["text"]}, "unsupported_modalities", "session.output_modalities"),
    ],
)
def test_session_update_refuses_what_it_cannot_honour(session, code, param):
    with pytest.raises(P.ProtocolError) as info:
        update(session)
    assert (info.value.code, info.value.param) == (code, param)


def test_pcm16_round_trip_and_bad_audio():
    x = np.array([0.0, 0.5, -0.5, -1.0, 0.99997], dtype=np.float32)
    np.testing.assert_allclose(decode_pcm16(encode_pcm16(x)), x, atol=1 / 32768)
    assert decode_pcm16(encode_pcm16(np.array([2.0, -2.0])))[0] == pytest.approx(32767 / 32768)
    with pytest.raises(AudioFormatError, match="base64"):
        decode_pcm16("!!not base64!!")
    with pytest.raises(AudioFormatError, match="even number"):
        decode_pcm16(base64.b64encode(b"\0\0\0").decode())


@pytest.mark.parametrize(("src", "dst"), [(24000, 16000), (16000, 24000)])
def test_streaming_resampler_keeps_the_sample_count(src, dst):
    rng = np.random.default_rng(0)
    stream = Resampler(src, dst, "LQ")
    x = rng.standard_normal(src).astype(np.float32) * 0.1
    chunks = np.split(x, np.cumsum(rng.integers(1, 900, 60)))
    total = sum(len(stream.push(c)) for c in chunks) + len(stream.flush())
    assert total == dst


def make_pacer(clock, max_buffered=16000, hold_s=0.2):
    return InputPacer(clock, frame=160, max_buffered=max_buffered, hold_s=hold_s, max_catch_up=8000)


def ticked(pacer, clock, seconds: float, tick: float = 0.02) -> list:
    """The frames a loop that looks every ``tick`` gets over ``seconds``."""
    frames = []
    for _ in range(round(seconds / tick)):
        clock.advance(tick)
        frames += pacer.due_frames()
    return frames


def test_pacer_holds_client_audio_to_real_time_and_waits_on_jitter():
    clock = VirtualClock()
    pacer = make_pacer(clock)
    assert pacer.due_frames() == []  # nothing before the first audio
    pacer.append(np.ones(320, np.float32))
    assert len(pacer.due_frames()) == 2  # recorded by the time it came: due at once
    pacer.append(np.ones(1600, np.float32))  # 100 ms at once
    assert pacer.due_frames() == []
    clock.advance(0.05)
    assert len(pacer.due_frames()) == 5  # only what real time allows
    clock.advance(0.05)
    assert len(pacer.due_frames()) == 5
    clock.advance(0.05)
    assert pacer.due_frames() == []  # streaming, next chunk late: wait (jitter), no silence
    pacer.append(np.full(800, 0.5, np.float32))
    frames = pacer.due_frames()  # the late chunk catches up at once
    assert len(frames) == 5 and all((f == 0.5).all() for f in frames)
    frames = ticked(pacer, clock, 0.26)  # no audio for longer than the hold: silence
    assert len(frames) == 26 and not any(f.any() for f in frames)
    assert pacer.timeline == 43 * 160


def test_pacer_stall_does_not_count_as_client_silence():
    clock = VirtualClock()
    pacer = make_pacer(clock)
    pacer.append(np.ones(320, np.float32))
    assert len(pacer.due_frames()) == 2
    clock.advance(0.5)  # the loop stalled: the client's next chunk may be unread in the socket
    assert pacer.due_frames() == []
    pacer.append(np.full(8000, 0.5, np.float32))
    frames = pacer.due_frames()  # it was: its audio goes on with no silence cut in
    assert len(frames) == 50 and all((f == 0.5).all() for f in frames)
    # Silence once the server has looked for the hold and heard nothing.
    assert ticked(pacer, clock, 0.16) == []
    frames = ticked(pacer, clock, 0.1)
    assert len(frames) == 26 and not any(f.any() for f in frames)


def test_pacer_takes_a_long_first_chunk_at_real_time():
    clock = VirtualClock()
    pacer = make_pacer(clock)
    pacer.append(np.ones(16000, np.float32))  # a second in one message
    assert len(pacer.due_frames()) == round(MAX_BACKDATE_S * 16000) // 160
    clock.advance(0.1)
    assert len(pacer.due_frames()) == 10


def test_pacer_bounds_queued_audio_and_clears():
    clock = VirtualClock()
    pacer = make_pacer(clock, max_buffered=3200)
    pacer.append(np.ones(3200, np.float32))
    with pytest.raises(BufferFullError, match="real time"):
        pacer.append(np.ones(1, np.float32))
    assert pacer.clear() == 3200 and pacer.buffered == 0
    pacer.append(np.ones(3200, np.float32))


def test_pacer_skips_time_beyond_the_catch_up_bound():
    clock = VirtualClock()
    pacer = make_pacer(clock)
    pacer.append(np.zeros(16000, np.float32))
    clock.advance(5.0)  # a stalled loop
    assert len(pacer.due_frames()) == 8000 // 160
    clock.advance(0.01)
    assert len(pacer.due_frames()) == 1


def test_bind_needs_a_token_off_loopback():
    assert is_loopback("127.0.0.1") and is_loopback("::1") and is_loopback("localhost")
    assert not is_loopback("0.0.0.0") and not is_loopback("example.org")
    check_bind("127.0.0.1", None)
    check_bind("0.0.0.0", "secret")
    with pytest.raises(ParleyError, match="--token"):
        check_bind("0.0.0.0", None)


def test_metrics_render_prometheus_text():
    m = ServiceMetrics()
    m.errors['we"ird'] += 2
    m.response_latency.observe(0.04)
    m.response_latency.observe(7.0)
    text = m.render()
    assert "# TYPE parley_response_latency_seconds histogram" in text
    assert 'parley_response_latency_seconds_bucket{le="0.05"} 1' in text
    assert 'parley_response_latency_seconds_bucket{le="+Inf"} 2' in text
    assert 'parley_errors_total{code="we\\"ird"} 2' in text
    for line in text.splitlines():
        assert line.startswith("#") or len(line.split(" ")) == 2
