"""Invariants of the duplex session under interruptions at random points (virtual time)."""

import asyncio
import math

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from parley.agent.core.clock import VirtualClock
from parley.agent.core.events import AgentState
from parley.agent.core.model import AgentModel
from parley.agent.core.session import DuplexSession
from parley.agent.core.state import Signal, transition
from parley.agent.harness.drive import drive
from parley.config import AgentConfig, ModelConfig, load_config
from parley.llm.builder import build_checkpoint
from parley.llm.schedule import heard_prefix
from parley.speech_io.sources import ArraySink, ArraySource
from tests.scripted import ScriptedDetector

SR = 16000
FRAME = 320  # 20 ms ticks keep a thousand conversations quick

MICRO = ModelConfig.model_validate(
    {
        "encoder": {
            "d_model": 32,
            "layers": 1,
            "heads": 2,
            "ffn_dim": 64,
            "block_frames": 25,
            "context_blocks": 4,
        },
        "adapter": {"stack": 4, "hidden": 32},
        "lm": {
            "hidden": 32,
            "layers": 1,
            "heads": 2,
            "kv_heads": 1,
            "intermediate": 64,
            "text_vocab": 300,
        },
        "schedule": {
            "text_tokens": 3,
            "speech_tokens": 6,
            "min_speech_tokens": 5,
            "max_speech_tokens": 25,
        },
        "codec": {"codebook_size": 32, "dim": 16, "layers": 1, "tokenizer_dim": 8},
    }
)


@pytest.fixture(scope="module")
def micro(tmp_path_factory):
    path = build_checkpoint(tmp_path_factory.mktemp("micro") / "ck", MICRO, seed=0)
    return AgentModel.load(path, load_config("tiny"))


def legal(old, new):
    return any(
        transition(old, sig, audio_started=a) is new for sig in Signal for a in (False, True)
    )


async def converse(model, first_turn, mode, at, duration, gap=0.0):
    # Replies start ahead 100 ms into a silence; a pause of `gap` seconds (0: none) splits
    # the first turn, so a reply started ahead in it is thrown away when the user goes on
    # (or, past the 300 ms endpoint, answers the first half, and the second half cuts in).
    cfg = AgentConfig(
        echo_cancellation=False,
        frame_ms=20,
        max_ahead_ms=200,
        endpoint_silence_ms=300,
        preemptive_reply_ms=100,
    )
    a, b = int(0.1 * SR), int((0.1 + first_turn) * SR)
    spans = [(a, b)]
    if gap:
        spans.append((b + int(gap * SR), b + int((gap + 0.3) * SR)))
    clock = VirtualClock()
    detector = ScriptedDetector(list(spans))
    session = DuplexSession(model, cfg, clock=clock, detector=detector)
    events = []
    session.subscribe(events.append)
    user = np.zeros(int(8 * SR), dtype=np.float32)
    for lo, hi in spans:
        user[lo:hi] = 0.1 * np.sin(np.arange(hi - lo) * 0.07)

    if mode == "step":  # an explicit interrupt while decode step `at` is being computed
        engine = model.engine
        real, calls = engine.forward, [0]
        loop = asyncio.get_running_loop()

        def hooked(emb, cache):
            if calls[0] == at:
                loop.call_soon_threadsafe(lambda: session._spawn(session.interrupt()))
            calls[0] += 1
            return real(emb, cache)

        engine.forward = hooked
    else:  # user speech starting `at` seconds after the first reply audio

        def place(e):
            if e.type == "first_audio" and len(detector.spans) == len(spans):
                a = e.output_sample + int(at * SR)
                detector.spans.append((a, a + int(duration * SR)))

        session.subscribe(place)
    try:
        sink = ArraySink()
        await drive(session, clock, ArraySource(user), sink, int(6 * SR), frame=FRAME)
        out = sink.samples
    finally:
        if mode == "step":
            engine.forward = real
    await session.settle()
    return session, events, out


def check(session, events, out, model):
    # the state machine only moved along legal edges and came back to listening
    changes = [e for e in events if e.type == "state_changed"]
    assert all(legal(e.old, e.new) for e in changes)
    assert session.state is AgentState.LISTENING
    assert session.running_tasks == 0
    # epochs never go back in what got out
    epochs = [e.epoch for e in events]
    assert epochs == sorted(epochs)
    for cut in [e for e in events if e.type == "interrupted"]:
        after = events[events.index(cut) + 1 :]
        assert all(e.epoch > cut.epoch for e in after)
        assert not [
            e
            for e in after
            if getattr(e, "reply_id", None) == cut.reply_id and e.type != "reply_ended"
        ]
        # what was heard is exactly what was played
        played = sum(
            e.end - e.start
            for e in events
            if e.type == "audio_played" and e.reply_id == cut.reply_id
        )
        assert played == cut.played
        # silence from the cut until a next reply plays
        nxt = [e.output_sample for e in after if e.type == "first_audio"]
        stop = nxt[0] if nxt else len(out)
        assert not np.any(out[cut.output_sample : stop])
    # nothing of a reply started ahead and thrown away got out, and what was used counts
    started = {e.reply_id for e in events if e.type == "reply_started"}
    assert {e.reply_id for e in events if hasattr(e, "reply_id")} <= started
    assert session.preemption.used <= len(started)
    user = [h for h in session.history if h.role == "user"]
    assert len(user) == sum(e.type == "user_turn_ended" for e in events) == len(started)
    # the conversation remembers only what was heard
    assistant = [h for h in session.history if h.role == "assistant"]
    ends = [e for e in events if e.type == "reply_ended"]
    assert [h.text for h in assistant] == [e.text for e in ends]
    if ends and ends[-1].status == "interrupted":
        cut = [e for e in events if e.type == "interrupted"][-1]
        assert ends[-1].text == cut.heard_text
        kept = session.context.last_reply_tokens
        classes = [model.checkpoint.manifest.vocab.classify(t) for t in kept]
        spt = model.samples_per_token
        assert len(kept) == heard_prefix(classes, math.ceil(cut.played / spt))
        assert sum(c == 1 for c in classes) == math.ceil(cut.played / spt)
    # no sample lost or repeated on resume
    for rid in {e.reply_id for e in events if e.type == "audio_played"}:
        spans = [(e.start, e.end) for e in events if e.type == "audio_played" and e.reply_id == rid]
        assert all(b[0] == a[1] for a, b in zip(spans, spans[1:], strict=False))


@settings(
    max_examples=int(__import__("os").environ.get("PARLEY_PROP_EXAMPLES", 1000)),
    deadline=None,
    derandomize=True,
    suppress_health_check=list(HealthCheck),
)
@given(
    first_turn=st.floats(0.15, 0.8),
    mode=st.sampled_from(["step", "speech"]),
    at=st.integers(0, 45),
    offset=st.floats(0.0, 1.4),
    duration=st.floats(0.05, 1.2),
    gap=st.sampled_from([0.0, 0.0, 0.15, 0.25, 0.4]),
)
def test_random_interruptions_keep_the_invariants(
    micro, first_turn, mode, at, offset, duration, gap
):
    async def case():
        when = at if mode == "step" else offset
        session, events, out = await converse(micro, first_turn, mode, when, duration, gap)
        try:
            check(session, events, out, micro)
        finally:
            await session.aclose()
        assert session.running_tasks == 0

    asyncio.run(case())
