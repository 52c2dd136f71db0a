"""The vLLM engine on the CPU build: parity with transformers, streaming, abort, caching.

One ``AsyncLLM`` serves the whole module (it takes ~25 s to start), on one event loop.
"""

from __future__ import annotations

import asyncio
import contextlib

import numpy as np
import pytest
import pytest_asyncio

from parley.agent.core.clock import VirtualClock
from parley.agent.core.events import AgentState
from parley.agent.core.session import DuplexSession
from parley.agent.harness.metrics import score
from parley.agent.harness.runner import run_scenario
from parley.agent.harness.scenario import load_scenario, shipped_scenarios_dir
from parley.config import AgentConfig
from parley.llm.engine import ReplyParams
from tests.scripted import ScriptedDetector
from tests.test_schedule import well_formed
from tests.test_session import SR, speechlike
from tests.vllm_support import (
    audio_turns,
    conversation,
    reply_ids,
    vllm_agent_model,
)

pytestmark = [pytest.mark.vllm, pytest.mark.asyncio(loop_scope="module")]

QUESTIONS = ["what is the weather like today", "and tomorrow", "thank you, that is all"]


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def vllm_model(tiny_checkpoint):
    async with vllm_agent_model(tiny_checkpoint) as model:
        yield model


@pytest.fixture(scope="module")
def turns(tiny_model, tmp_path_factory):
    return audio_turns(tiny_model, QUESTIONS, tmp_path_factory.mktemp("tts"))


async def test_greedy_tokens_equal_the_transformers_engine(vllm_model, tiny_model, turns):
    # Three spoken turns; the second reply is cut as after a barge-in, so the third turn's
    # context holds only its heard prefix on both engines.
    cut = {1: 40}
    expected = await conversation(tiny_model.engine, turns, cut)
    got = await conversation(vllm_model.engine, turns, cut)
    assert [len(r) for r in got] == [len(r) for r in expected]
    assert got == expected
    assert got[0][-1] == got[2][-1] == tiny_model.checkpoint.manifest.vocab.eot


async def test_sampled_replies_follow_the_schedule(vllm_model, turns):
    engine = vllm_model.engine
    sched = engine.schedule
    params = ReplyParams(temperature=1.0, min_speech_tokens=30, max_speech_tokens=90)

    async def one(seed_turn):
        ctx = engine.open_context()
        ctx.add_user_audio(turns[seed_turn % len(turns)])
        try:
            return await reply_ids(ctx, params)
        finally:
            await ctx.aclose()

    # Four conversations at once: they share the batch, each keeps its own schedule state.
    replies = await asyncio.gather(*(one(i) for i in range(4)))
    layout = engine.layout
    for ids in replies:
        classes = [layout.classify(t) for t in ids]
        assert well_formed(classes, sched.text_tokens, sched.speech_tokens, 30, 90), classes
    assert len({tuple(r) for r in replies}) > 1  # sampled, not one fixed stream


async def test_tokens_stream_while_the_request_runs(vllm_model, turns):
    engine = vllm_model.engine
    ctx = engine.open_context()
    ctx.add_user_audio(turns[0])
    running_at = []
    async with contextlib.aclosing(ctx.reply()) as stream:
        async for _ in stream:
            running_at.append(engine.running_requests)
    await ctx.aclose()
    # Every token but the last arrived while the request was still running.
    assert len(running_at) > 50 and all(n == 1 for n in running_at[:-1])


async def test_abort_stops_the_request_within_a_step(vllm_model, turns):
    engine = vllm_model.engine
    ctx = engine.open_context()
    ctx.add_user_audio(turns[0])
    got = []
    stream = ctx.reply(ReplyParams(min_speech_tokens=200, max_speech_tokens=200))
    async for delta in stream:
        got.append(delta)
        if len(got) == 10:
            await ctx.abort()
            assert engine.running_requests == 0
    await stream.aclose()
    # A delta already on its way may still arrive; nothing is decoded after the abort.
    assert 10 <= len(got) <= 11
    ctx.truncate_reply(5)
    assert ctx.last_reply_tokens == [d.token_id for d in got[:5]]
    await ctx.aclose()
    assert engine.running_requests == 0


async def test_a_follow_up_turn_reuses_the_cached_conversation(vllm_model, turns):
    ctx = vllm_model.engine.open_context()
    block = 32
    try:
        for i, emb in enumerate(turns):
            ctx.add_user_audio(emb)
            before = ctx.context_length - emb.shape[0] - 2  # what earlier turns left
            await reply_ids(ctx)
            if i:
                # Everything up to the new audio's block was primed while the reply played.
                assert ctx.stats.last_cached >= before // block * block
            await ctx.wait_primed()
    finally:
        await ctx.aclose()
    assert ctx.stats.hit_rate > 0.6


async def test_closing_a_session_mid_reply_leaves_no_request(vllm_model):
    # A long reply, so generation is still running when the session closes.
    cfg = AgentConfig(echo_cancellation=False, reply_min_s=60.0, reply_max_s=60.0)
    clock = VirtualClock()
    session = DuplexSession(vllm_model, cfg, clock=clock, detector=ScriptedDetector([(0, SR)]))
    user = np.concatenate([speechlike(SR), np.zeros(4 * SR, np.float32)])
    frame = SR // 100
    for start in range(0, len(user), frame):
        session.pull_output(frame)
        session.push_input(user[start : start + frame])
        clock.set((start + frame) / SR)
        await session.settle()
        if session.state is AgentState.SPEAKING:
            break
    assert session.state is AgentState.SPEAKING
    assert vllm_model.engine.running_requests == 1
    await session.aclose()
    assert vllm_model.engine.running_requests == 0


async def test_barge_in_scenario_on_the_vllm_engine(vllm_model):
    scenario = load_scenario(shipped_scenarios_dir() / "interrupt-mid-reply.yaml")
    scored = score(await run_scenario(vllm_model, scenario, vllm_model.config.agent))
    assert scored["barge_ins"] == 1 and scored["barge_in_unstopped"] == 0
    assert scored["barge_in_stop_ms"]["max"] <= 100
    assert scored["interruptions"] == 1 and scored["stale_events_after_interrupt"] == 0
    assert scored["response_overhead_ms"]["max"] <= 50
    assert vllm_model.engine.running_requests == 0


async def test_a_rolled_back_turn_leaves_the_vllm_conversation_as_it_was(vllm_model, turns):
    # A reply started ahead on the second question and thrown away (mid-reply, then a whole
    # one): the third question is answered as if the second had never been heard.
    engine = vllm_model.engine
    expected = await conversation(engine, [turns[0], turns[2]])
    ctx = engine.open_context()
    try:
        ctx.add_user_audio(turns[0])
        got = [await reply_ids(ctx)]
        for steps in (5, None):
            point = ctx.save_point()
            ctx.add_user_audio(turns[1])
            async with contextlib.aclosing(ctx.reply()) as stream:
                n = 0
                async for _ in stream:
                    n += 1
                    if n == steps:
                        break
            await ctx.abort()
            ctx.roll_back(point)
            assert engine.running_requests == 0
        ctx.add_user_audio(turns[2])
        got.append(await reply_ids(ctx))
    finally:
        await ctx.aclose()
    assert got == expected
