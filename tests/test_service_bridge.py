"""The Realtime protocol over a bridge in virtual time: every supported event, barge-in,
backchannels, manual turns, cancel and truncate semantics."""

from __future__ import annotations

import math

import pytest

from parley.agent.core.text import text_of
from parley.agent.service.limits import ServiceLimits
from parley.llm.schedule import heard_prefix
from tests.service_support import (
    SR,
    TICK,
    WIRE_SR,
    BridgeRig,
    b64,
    delta_samples,
    short_reply_agent,
    speechlike,
)

DELTAS = ("response.output_audio.delta", "response.output_audio_transcript.delta")


@pytest.fixture
def agent(tiny_model):
    return short_reply_agent(tiny_model)


def audio_ms(rig: BridgeRig, response_id: str) -> float:
    deltas = [e for e in rig.of("response.output_audio.delta") if e["response_id"] == response_id]
    return sum(delta_samples(e) for e in deltas) * 1000 / WIRE_SR


async def test_server_vad_turn(agent):
    rig = BridgeRig(agent, spans=[(0.2, 1.2)])
    await rig.stream(speechlike(1.4))
    await rig.idle(3.5)
    assert rig.types() == [
        "session.created",
        "input_audio_buffer.speech_started",
        "input_audio_buffer.speech_stopped",
        "input_audio_buffer.committed",
        "response.created",
        "response.output_audio.done",
        "response.output_audio_transcript.done",
        "response.done",
    ]
    created = rig.of("session.created")[0]["session"]
    assert created["audio"]["input"]["format"] == {"type": "audio/pcm", "rate": 24000}
    assert created["audio"]["input"]["turn_detection"]["silence_duration_ms"] == 500
    started, stopped = (
        rig.of("input_audio_buffer.speech_started")[0],
        rig.of("input_audio_buffer.speech_stopped")[0],
    )
    assert (started["audio_start_ms"], stopped["audio_end_ms"]) == (200, 1200)
    assert (
        started["item_id"]
        == stopped["item_id"]
        == rig.of("input_audio_buffer.committed")[0]["item_id"]
    )
    done = rig.of("response.done")[0]["response"]
    assert (
        done["status"] == "completed"
        and done["id"] == rig.of("response.created")[0]["response"]["id"]
    )
    # The item's audio is exactly the reply's samples, at 24 kHz, a tick at a time.
    ended = rig.session.session.history[-1]
    deltas = rig.of("response.output_audio.delta")
    assert all(e["response_id"] == done["id"] for e in deltas)
    assert max(delta_samples(e) for e in deltas) <= 0.02 * WIRE_SR + 8  # + the filter's tail
    reply_samples = sum(delta_samples(e) for e in deltas)
    assert 2.0 * WIRE_SR <= reply_samples <= 2.6 * WIRE_SR
    transcript = "".join(e["delta"] for e in rig.of("response.output_audio_transcript.delta"))
    assert transcript == ended.text == done["output"][0]["content"][0]["transcript"]
    assert rig.bridge.metrics.response_latency.count == 1
    assert rig.bridge.metrics.audio_out_s == pytest.approx(reply_samples / WIRE_SR)
    await rig.session.aclose()


async def test_barge_in_stops_audio_and_truncates_to_what_was_sent(agent):
    rig = BridgeRig(agent, spans=[(0.2, 1.2), (2.6, 3.6)])
    await rig.stream(speechlike(1.4))
    await rig.idle(4.0)
    first = rig.of("response.created")[0]["response"]["id"]
    # After the user's onset over the reply, not one sample of it goes out.
    onset = next(
        i
        for i, e in enumerate(rig.sent)
        if e["type"] == "input_audio_buffer.speech_started" and e["audio_start_ms"] == 2600
    )
    later = [e for e in rig.sent[onset:] if e.get("response_id") == first and e["type"] in DELTAS]
    assert later == []
    done = next(e for e in rig.of("response.done") if e["response"]["id"] == first)["response"]
    assert done["status"] == "cancelled"
    assert done["status_details"]["reason"] == "turn_detected"
    cut = rig.of("conversation.item.truncated")[0]
    sent_ms = audio_ms(rig, first)
    assert cut["item_id"] == done["output"][0]["id"]
    assert abs(cut["audio_end_ms"] - sent_ms) <= 1
    # ~0.9 s of reply played before the onset at 2.6 s (the turn ended at 1.7 s).
    assert 700 <= sent_ms <= 1000
    # The model's context keeps what was heard, no more.
    assistant = [h for h in rig.session.session.history if h.role == "assistant"][0]
    assert assistant.status == "interrupted"
    assert done["output"][0]["content"][0]["transcript"] == assistant.text
    assert 0 < rig.bridge.metrics.barge_in_stop.sum <= 0.1
    # The interrupting utterance is a turn of its own and gets its answer.
    assert len(rig.of("response.created")) == 2
    await rig.session.aclose()


async def test_no_reply_audio_leaves_after_the_tick_it_paused_in(agent):
    # The user's onset at 2.6 s pauses the reply at once (possible speech); the detector
    # confirms it 30 ms later. Everything the client hears of the reply leaves by the end
    # of the tick of the pause: a sample sent later plays after the client went quiet.
    rig = BridgeRig(agent, spans=[(0.2, 1.2), (2.6, 3.6)], tentative=[(2.6, 2.64)])
    events = []
    rig.session.subscribe(events.append)
    await rig.stream(speechlike(1.4))
    sent_at_pause = None
    for _ in range(round(3.0 / TICK)):
        await rig.tick()
        if sent_at_pause is None and any(e.type == "playback_paused" for e in events):
            sent_at_pause = len(rig.sent)
    assert sent_at_pause is not None
    pause = next(e for e in events if e.type == "playback_paused")
    assert pause.onset_sample == int(2.6 * SR)
    first = rig.of("response.created")[0]["response"]["id"]
    later = [
        e
        for e in rig.sent[sent_at_pause:]
        if e["type"] == "response.output_audio.delta" and e["response_id"] == first
    ]
    assert later == []
    # Each sample that played went out once, the filter's tail with the last of them.
    played = sum(
        e.end - e.start
        for e in events
        if e.type == "audio_played" and e.output_sample < pause.output_sample
    )
    assert audio_ms(rig, first) == pytest.approx(played * 1000 / SR, abs=1)
    await rig.session.aclose()


async def test_backchannel_pauses_and_resumes_without_loss(agent):
    rig = BridgeRig(agent, spans=[(0.2, 1.2), (2.4, 2.7)])
    events = []
    rig.session.subscribe(events.append)
    await rig.stream(speechlike(1.4))
    await rig.idle(4.5)
    # The client hears of the first turn's speech only: a stock client cuts its playback
    # on speech_started, and the backchannel must not cut the reply.
    assert rig.types().count("input_audio_buffer.speech_started") == 1
    assert rig.types().count("input_audio_buffer.speech_stopped") == 1
    assert any(e.type == "playback_paused" for e in events)
    done = rig.of("response.done")[0]["response"]
    assert done["status"] == "completed"
    assert rig.of("conversation.item.truncated") == []
    reply = [h for h in rig.session.session.history if h.role == "assistant"][0]
    assert reply.status == "completed"
    # Every reply sample went out exactly once, the pause included.
    played = sum(e.end - e.start for e in events if e.type == "audio_played")
    assert audio_ms(rig, done["id"]) == pytest.approx(played * 1000 / SR, abs=1)
    assert played >= 2.0 * SR
    assert len(rig.of("response.created")) == 1  # a backchannel is not a turn
    await rig.session.aclose()


async def test_manual_turns_commit_then_response_create(agent):
    rig = BridgeRig(agent, spans=[(0.1, 0.9)])
    await rig.send(
        type="session.update",
        session={"type": "realtime", "audio": {"input": {"turn_detection": None}}},
    )
    updated = rig.of("session.updated")[0]["session"]
    assert updated["audio"]["input"]["turn_detection"] is None
    await rig.send(type="input_audio_buffer.commit")
    await rig.send(type="response.create")
    assert rig.errors() == ["input_audio_buffer_commit_empty", "no_user_audio"]
    for chunk in range(5):
        await rig.send(type="input_audio_buffer.append", audio=b64(speechlike(0.2, seed=chunk)))
    await rig.send(type="input_audio_buffer.commit", event_id="c1")
    committed = rig.of("input_audio_buffer.committed")
    assert len(committed) == 1
    await rig.send(type="response.create")
    assert rig.types()[-1] == "response.created"  # at once: the clip went in at once
    await rig.send(type="response.create")
    assert rig.errors()[-1] == "conversation_already_has_active_response"
    await rig.idle(3.0)
    assert rig.of("response.done")[0]["response"]["status"] == "completed"
    # Turn detection is the client's: no VAD events go out.
    assert rig.of("input_audio_buffer.speech_started") == []
    await rig.session.aclose()


async def test_manual_clip_with_a_pause_is_answered_at_once(agent):
    # The clip pauses 450 ms (a reply is started ahead 320 ms in, then thrown away when the
    # words go on) and ends with 100 ms of speech: it goes in at once, and the turn's end
    # still waits for the roll back, so the response starts at once all the same.
    rig = BridgeRig(agent, spans=[(0.1, 0.5), (0.95, 1.05)])
    await rig.send(type="session.update", session={"audio": {"input": {"turn_detection": None}}})
    await rig.send(type="input_audio_buffer.append", audio=b64(speechlike(1.1)))
    await rig.send(type="input_audio_buffer.commit")
    await rig.send(type="response.create")
    assert rig.errors() == [] and rig.types()[-1] == "response.created"
    assert rig.session.session.preemption.dropped == 1
    await rig.session.aclose()


async def test_manual_turn_without_speech_is_an_error(agent):
    rig = BridgeRig(agent, spans=[])
    await rig.send(type="session.update", session={"audio": {"input": {"turn_detection": None}}})
    await rig.send(type="input_audio_buffer.append", audio=b64(speechlike(0.5) * 0))
    await rig.send(type="input_audio_buffer.commit")
    await rig.send(type="response.create")
    assert rig.errors() == ["no_speech_detected"]
    assert rig.of("response.created") == []
    await rig.session.aclose()


async def test_response_cancel(agent):
    rig = BridgeRig(agent, spans=[(0.2, 1.2)])
    await rig.stream(speechlike(1.4))
    await rig.idle(0.9)
    resp = rig.of("response.created")[0]["response"]["id"]
    await rig.send(type="response.cancel", response_id="resp_other")
    assert rig.errors() == ["response_not_found"]
    await rig.send(type="response.cancel")
    done = rig.of("response.done")[0]["response"]
    assert (done["id"], done["status"]) == (resp, "cancelled")
    assert done["status_details"]["reason"] == "client_cancelled"
    sent = audio_ms(rig, resp)
    assert abs(rig.of("conversation.item.truncated")[0]["audio_end_ms"] - sent) <= 1
    await rig.idle(0.5)
    assert audio_ms(rig, resp) == sent  # nothing more of it
    await rig.send(type="response.cancel")
    assert rig.errors()[-1] == "response_cancel_not_active"
    await rig.session.aclose()


async def test_truncate_a_played_reply_to_what_the_client_heard(agent, tiny_model):
    rig = BridgeRig(agent, spans=[(0.2, 1.2), (6.0, 7.0)])
    await rig.stream(speechlike(1.4))
    await rig.idle(3.5)
    done = rig.of("response.done")[0]["response"]
    item = done["output"][0]["id"]
    context = rig.session.session.context
    tokens = context.last_reply_tokens
    classes = [tiny_model.checkpoint.manifest.vocab.classify(t) for t in tokens]
    await rig.send(type="conversation.item.truncate", item_id="item_nope", audio_end_ms=10)
    await rig.send(type="conversation.item.truncate", item_id=item, audio_end_ms=99_000)
    assert rig.errors() == ["item_not_found", "invalid_value"]
    assert context.last_reply_tokens == tokens  # a refused truncate changes nothing
    await rig.send(
        type="conversation.item.truncate", item_id=item, content_index=0, audio_end_ms=500
    )
    cut = rig.of("conversation.item.truncated")[-1]
    assert (cut["item_id"], cut["audio_end_ms"]) == (item, 500)
    keep = heard_prefix(classes, math.ceil(500 * SR // 1000 / tiny_model.samples_per_token))
    assert 0 < keep < len(tokens)
    assert context.last_reply_tokens == tokens[:keep]
    heard = text_of(tiny_model.checkpoint.tokenizer, tokens[:keep], classes[:keep])
    assert rig.session.session.history[-1].text == heard
    # Once the user has taken another turn, that reply is sealed in the context.
    await rig.stream(speechlike(2.0))
    await rig.idle(1.0)
    assert len(rig.of("response.created")) == 2
    await rig.send(type="conversation.item.truncate", item_id=item, audio_end_ms=100)
    assert rig.errors()[-1] == "item_not_truncatable"
    await rig.session.aclose()


async def test_truncate_a_reply_in_flight_cuts_it(agent):
    rig = BridgeRig(agent, spans=[(0.2, 1.2)])
    await rig.stream(speechlike(1.4))
    await rig.idle(1.0)
    created = rig.of("response.created")[0]["response"]["id"]
    item = rig.of("response.output_audio.delta")[0]["item_id"]
    await rig.send(type="conversation.item.truncate", item_id=item, audio_end_ms=200)
    done = rig.of("response.done")[0]["response"]
    assert (done["id"], done["status"]) == (created, "cancelled")
    assert done["status_details"]["reason"] == "client_cancelled"
    assert rig.of("conversation.item.truncated")[-1]["audio_end_ms"] == 200
    assert rig.session.reply_running is False
    await rig.session.aclose()


async def test_session_update_before_and_after_audio(agent):
    rig = BridgeRig(agent, spans=[(0.2, 1.2)])
    td = {"type": "server_vad", "silence_duration_ms": 800, "prefix_padding_ms": 100}
    await rig.send(
        type="session.update",
        session={
            "audio": {
                "input": {"turn_detection": td, "format": {"type": "audio/pcm", "rate": 16000}}
            }
        },
    )
    assert rig.session.session.config.endpoint_silence_ms == 800
    assert rig.session.session.config.preroll_ms == 100
    assert rig.of("session.updated")[0]["session"]["audio"]["input"]["format"]["rate"] == 16000
    await rig.send(type="input_audio_buffer.append", audio=b64(speechlike(0.1, rate=SR)))
    # 16 kHz in: no resampling, no delay; recorded by the time it came, so heard at once
    assert rig.bridge.pacer.timeline == 0.1 * SR and rig.bridge.pacer.buffered == 0
    await rig.tick()
    td["silence_duration_ms"] = 300
    await rig.send(type="session.update", session={"audio": {"input": {"turn_detection": td}}})
    assert rig.errors() == []  # after the first audio it applies live
    assert rig.session.session.config.endpoint_silence_ms == 300
    await rig.send(type="session.update", session={"instructions": "be brief"})
    assert rig.of("session.updated")[-1]["session"]["instructions"] == "be brief"
    await rig.session.aclose()


async def test_bad_audio_and_the_buffer_bound(agent):
    rig = BridgeRig(agent, limits=ServiceLimits(max_buffered_audio_s=1.0))
    await rig.send(type="input_audio_buffer.append", audio="@@@")
    await rig.send(type="input_audio_buffer.append", audio="AAAA")  # 3 bytes: odd
    await rig.send(type="input_audio_buffer.append", audio=b64(speechlike(1.5)))
    assert rig.errors() == ["invalid_audio", "invalid_audio", "input_audio_buffer_full"]
    await rig.send(type="input_audio_buffer.append", audio=b64(speechlike(0.5)))
    assert rig.bridge.pacer.buffered > 0
    await rig.send(type="input_audio_buffer.clear")
    assert rig.types()[-1] == "input_audio_buffer.cleared" and rig.bridge.pacer.buffered == 0
    await rig.send(type="input_audio_buffer.commit")
    assert rig.errors()[-1] == "commit_not_supported"
    await rig.send(type="response.create")
    assert rig.errors()[-1] == "response_create_not_supported"
    await rig.session.aclose()


async def test_truncate_while_a_reply_is_held_in_the_users_pause(agent, tiny_model):
    # 320 ms after the user's second turn (5.0-5.5 s) a reply is started ahead, on the
    # context the truncate then changes: it is thrown away, the truncate cuts the first
    # reply, and the turn's end (6.0 s) gets a fresh reply to the context as cut.
    rig = BridgeRig(agent, spans=[(0.2, 1.2), (5.0, 5.5)])
    await rig.stream(speechlike(1.4))
    await rig.idle(3.5)
    item = rig.of("response.done")[0]["response"]["output"][0]["id"]
    context = rig.session.session.context
    tokens = context.last_reply_tokens
    await rig.stream(speechlike(0.7))
    await rig.idle(0.3)  # 5.9 s
    assert rig.session.session.preemption.held is not None
    await rig.send(type="conversation.item.truncate", item_id=item, audio_end_ms=500)
    assert rig.errors() == []
    assert rig.session.session.preemption.held is None
    classes = [tiny_model.checkpoint.manifest.vocab.classify(t) for t in tokens]
    keep = heard_prefix(classes, math.ceil(500 * SR // 1000 / tiny_model.samples_per_token))
    assert context.last_reply_tokens == tokens[:keep]
    assert len(rig.of("response.created")) == 1
    await rig.idle(0.5)
    assert len(rig.of("response.created")) == 2 and rig.errors() == []
    assert rig.session.session.preemption.dropped == 1
    await rig.session.aclose()
