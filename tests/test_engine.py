import asyncio
import contextlib

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from transformers import DynamicCache

from parley.config import EngineConfig, LMConfig, ScheduleConfig
from parley.llm.engine import ReplyParams
from parley.llm.lm_build import layout_of, random_lm
from parley.llm.logits import ScheduleLogitsProcessor
from parley.llm.transformers_engine import TransformersSpokenLM
from parley.tokenizers.vocab import TokenClass
from tests.test_schedule import well_formed

SMALL = LMConfig(hidden=32, layers=1, heads=2, kv_heads=1, intermediate=64, text_vocab=300)
SCHED = ScheduleConfig(text_tokens=3, speech_tokens=5, min_speech_tokens=8, max_speech_tokens=20)


def make_engine(seed=0, sched=SCHED, temperature=0.0, codebook=16):
    model, tok = random_lm(SMALL, codebook, seed)
    layout = layout_of(model, tok, codebook)
    return TransformersSpokenLM(
        model, layout, sched, EngineConfig(temperature=temperature, seed=seed)
    )


@pytest.fixture(scope="module")
def engine():
    return make_engine()


def audio(n=6, seed=1):
    return torch.randn(n, SMALL.hidden, generator=torch.Generator().manual_seed(seed))


def greedy_from_scratch(engine, history):
    """A greedy reply to ``history`` (embeddings) from an empty cache, by hand."""
    cache = DynamicCache(config=engine.model.config)
    proc = ScheduleLogitsProcessor(engine.layout, SCHED, engine.vocab_rows)
    logits, tokens = engine.forward(history, cache), []
    while True:
        tokens.append(int(torch.argmax(proc.apply(logits))))
        if proc.accept(tokens[-1]) is TokenClass.EOT:
            return tokens
        logits = engine.forward(engine.embed_ids([tokens[-1]]), cache)


async def collect(ctx, params=None):
    async with contextlib.aclosing(ctx.reply(params)) as stream:
        return [d async for d in stream]


async def test_reply_is_well_formed_and_ends(engine):
    ctx = engine.open_context()
    ctx.add_user_audio(audio())
    deltas = await collect(ctx)
    kinds = [d.kind for d in deltas]
    assert kinds[-1] is TokenClass.EOT
    assert well_formed(kinds, 3, 5, 8, 20)
    assert [d.index for d in deltas] == list(range(len(deltas)))


async def test_follow_up_turn_costs_only_new_positions(engine):
    ctx = engine.open_context()
    ctx.add_user_audio(audio(6))
    first = await collect(ctx)
    assert ctx.prefill_positions == 1 + 6 + 1
    held = ctx.context_length
    assert held == 8 + len(first) - 1  # the final eot is sampled, not yet fed
    ctx.add_user_audio(audio(4, seed=2))
    await collect(ctx)
    # second prefill: the previous eot, <|user|>, 4 audio positions, <|assistant|>
    assert ctx.prefill_positions == 8 + 1 + 1 + 4 + 1


async def test_cached_follow_up_equals_full_reprefill(engine):
    ctx = engine.open_context()
    a1, a2 = audio(5, 3), audio(7, 4)
    ctx.add_user_audio(a1)
    r1 = [d.token_id for d in await collect(ctx)]
    ctx.add_user_audio(a2)
    r2 = [d.token_id for d in await collect(ctx)]

    # Recompute turn 2 from scratch: the whole history in one prefill, then greedy decode.
    lay = engine.layout
    e = engine.embed_ids
    history = torch.cat(
        [e([lay.user]), a1, e([lay.assistant]), e(r1), e([lay.user]), a2, e([lay.assistant])]
    )
    fresh = greedy_from_scratch(engine, history)
    assert fresh == r2


async def test_abort_stops_within_one_step(engine):
    ctx = engine.open_context()
    ctx.add_user_audio(audio())
    calls = 0
    real = engine.forward

    def counting(*a):
        nonlocal calls
        calls += 1
        return real(*a)

    engine.forward = counting
    try:
        got = []
        five = asyncio.Event()

        async def consume():
            async for d in ctx.reply(ReplyParams(min_speech_tokens=500, max_speech_tokens=600)):
                got.append(d)
                if len(got) == 5:
                    five.set()
                await asyncio.sleep(0)

        task = asyncio.create_task(consume())
        await five.wait()
        await ctx.abort()
        at_abort = calls
        await asyncio.wait_for(task, 5)
        assert calls - at_abort <= 1
        assert got[-1].kind is not TokenClass.EOT and len(got) < 100
    finally:
        engine.forward = real
    # The conversation goes on: the cut reply is closed in the history, a new turn works.
    ctx.add_user_audio(audio(3))
    again = await collect(ctx)
    assert again[-1].kind is TokenClass.EOT


async def test_closing_the_stream_keeps_history_consistent(engine):
    ctx = engine.open_context()
    ctx.add_user_audio(audio())
    stream = ctx.reply()
    for _ in range(4):
        await anext(stream)
    await stream.aclose()
    before = ctx.context_length
    ctx.add_user_audio(audio(2))
    await collect(ctx)
    # prefill held: the unfed 4th token, eot closing the cut reply, user, 2 audio, assistant
    assert ctx.prefill_positions == 8 + 1 + 1 + 1 + 2 + 1
    assert before == 8 + 3


async def test_reply_needs_input_and_rejects_bad_shapes(engine):
    ctx = engine.open_context()
    with pytest.raises(RuntimeError, match="add user audio"):
        await collect(ctx)
    with pytest.raises(ValueError, match=r"\(positions, 32\)"):
        ctx.add_user_audio(torch.zeros(3, 31))


@settings(max_examples=20, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    seed=st.integers(0, 2**16),
    n=st.integers(1, 6),
    m=st.integers(1, 8),
    lo=st.integers(0, 10),
    span=st.integers(1, 20),
    temperature=st.sampled_from([0.0, 1.0, 3.0]),
)
def test_random_weights_always_give_well_formed_streams(seed, n, m, lo, span, temperature):
    sched = ScheduleConfig(
        text_tokens=n, speech_tokens=m, min_speech_tokens=lo, max_speech_tokens=lo + span
    )
    eng = make_engine(seed=seed, sched=sched, temperature=temperature)
    ctx = eng.open_context()
    ctx.add_user_audio(audio(4, seed))
    kinds = [d.kind for d in asyncio.run(collect(ctx))]
    assert well_formed(kinds, n, m, lo, lo + span), kinds


def test_processor_works_under_generate(engine):
    # The same processor plugs into transformers' own generate loop.
    lay = engine.layout
    prompt = torch.cat([engine.embed_ids([lay.user]), audio(5), engine.embed_ids([lay.assistant])])
    proc = ScheduleLogitsProcessor(lay, SCHED, engine.vocab_rows)
    out = engine.model.generate(
        inputs_embeds=prompt[None],
        logits_processor=[proc],
        max_new_tokens=200,
        do_sample=False,
        eos_token_id=lay.eot,
        pad_token_id=lay.pad,
    )
    kinds = [lay.classify(int(t)) for t in out[0]]
    assert well_formed(kinds, 3, 5, 8, 20), kinds


async def test_truncated_reply_equals_a_context_that_only_heard_the_prefix(engine):
    # Context A: a full reply, then truncated to its first 9 tokens, then a new turn.
    a = engine.open_context()
    a.add_user_audio(audio(5, 11))
    full = [d.token_id for d in await collect(a)]
    a.truncate_reply(9)
    assert a.context_length == 7 + 9
    a.add_user_audio(audio(3, 12))
    after_a = [d.token_id for d in await collect(a)]

    # Context B: the same history written out by hand: prefix + eot, then the new turn.
    lay, e = engine.layout, engine.embed_ids
    history = torch.cat(
        [
            e([lay.user]),
            audio(5, 11),
            e([lay.assistant]),
            e(full[:9]),
            e([lay.eot]),
            e([lay.user]),
            audio(3, 12),
            e([lay.assistant]),
        ]
    )
    assert greedy_from_scratch(engine, history) == after_a


async def test_truncate_rejects_bad_keep_and_running_reply(engine):
    ctx = engine.open_context()
    ctx.add_user_audio(audio())
    n = len(await collect(ctx))
    with pytest.raises(ValueError, match="outside"):
        ctx.truncate_reply(n + 1)
    ctx.truncate_reply(n)  # keeping everything changes nothing
    ctx.add_user_audio(audio(2))
    stream = ctx.reply()
    await anext(stream)
    with pytest.raises(RuntimeError, match="abort"):
        ctx.truncate_reply(0)
    await stream.aclose()
