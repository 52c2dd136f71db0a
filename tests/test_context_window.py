"""Conversations past the LM's positions: the oldest turns go, whole, in both engines."""

from __future__ import annotations

import contextlib

import pytest
import torch

from parley.config import EngineConfig
from parley.llm.context_window import Fit, fit_turns, keep_tail
from parley.llm.prompt_context import Chunk, PromptEngine
from parley.llm.schedule import max_reply_tokens
from tests.test_engine import SCHED, audio, collect, greedy_from_scratch, make_engine


def test_fit_drops_the_fewest_oldest_turns():
    assert fit_turns([10, 20, 30], pending=5, reserve=10, limit=100) == Fit(0)
    assert fit_turns([10, 20, 30], pending=5, reserve=10, limit=60) == Fit(2)
    assert fit_turns([10, 20, 30], pending=5, reserve=10, limit=45) == Fit(2)
    assert fit_turns([10, 20, 30], pending=5, reserve=10, limit=44) == Fit(3)
    # A new turn that alone is too long keeps its end, after every old turn is gone.
    assert fit_turns([10], pending=50, reserve=10, limit=40) == Fit(1, 30)
    with pytest.raises(ValueError, match="only 20"):
        fit_turns([], pending=1, reserve=19, limit=20)


def test_fit_keeps_at_most_history_turns_and_logs_only_drops_for_room():
    # The model saw at most one earlier turn in training: older ones go even with room left.
    assert fit_turns([10, 20, 30], pending=5, reserve=10, limit=100, history=1) == Fit(2, None, 2)
    assert fit_turns([10, 20, 30], pending=5, reserve=10, limit=100, history=5) == Fit(0)
    assert fit_turns([30], pending=5, reserve=10, limit=40, history=1) == Fit(1, None, 0)
    assert fit_turns([], pending=5, reserve=10, limit=40, history=1) == Fit(0)
    assert fit_turns([10, 20], pending=5, reserve=10, limit=100, history=0) == Fit(2, None, 2)
    assert Fit(2, None, 2).for_room == 0 and Fit(3, None, 2).for_room == 1


def test_keep_tail_keeps_the_marker_and_the_end():
    turn = torch.arange(10.0)[:, None]
    assert keep_tail(turn, 4)[:, 0].tolist() == [0.0, 7.0, 8.0, 9.0]
    assert keep_tail(turn, 20) is turn


def _expected_kept(lengths: list[int], pending: list[int], reserve: int, limit: int) -> int:
    """The index of the first turn kept at the last reply, replaying the policy."""
    first = 0
    for i, p in enumerate(pending):
        first += fit_turns(lengths[first:i], p, reserve, limit).drop
    return first


async def _converse(engine, seeds: range):
    """One conversation: a user turn from each seed and the reply; (audio, reply ids) each,
    and the context, which never holds more than the engine's limit."""
    ctx = engine.open_context()
    turns = []
    for s in seeds:
        a = audio(12, seed=s)
        ctx.add_user_audio(a)
        turns.append((a, [d.token_id for d in await collect(ctx)]))
        assert ctx.context_length <= engine.context_limit
    return turns, ctx


async def test_transformers_context_keeps_the_newest_turns_and_replies_as_if_fresh():
    engine = make_engine()
    engine.context_limit = 110
    reserve = max_reply_tokens(SCHED)
    turns, _ = await _converse(engine, range(20, 27))
    lengths = [1 + 12 + 1 + len(r) for _, r in turns]
    first = _expected_kept(lengths, [14] * len(turns), reserve, engine.context_limit)
    assert first > 0  # the test must actually overflow
    lay, e = engine.layout, engine.embed_ids
    history = [torch.cat([e([lay.user]), a, e([lay.assistant]), e(r)]) for a, r in turns[first:-1]]
    last_audio, last_reply = turns[-1]
    history.append(torch.cat([e([lay.user]), last_audio, e([lay.assistant])]))
    assert greedy_from_scratch(engine, torch.cat(history)) == last_reply


async def test_transformers_context_truncation_still_fits_after_a_drop():
    engine = make_engine()
    engine.context_limit = 100
    ctx = engine.open_context()
    for i in range(5):
        ctx.add_user_audio(audio(12, seed=40 + i))
        reply = await collect(ctx)
        ctx.truncate_reply(len(reply) // 2)
        held = sum(t.shape[0] for parts in ctx._turns for t in parts)
        assert held == ctx.context_length <= engine.context_limit


async def test_one_user_turn_longer_than_the_lm_keeps_its_end():
    engine = make_engine()
    engine.context_limit = 60
    ctx = engine.open_context()
    ctx.add_user_audio(audio(80, seed=3))
    await collect(ctx)
    assert ctx.context_length <= 60


class ScriptedPromptEngine(PromptEngine):
    """Replies with a fixed token list; keeps every prompt it was sent."""

    def __init__(self, limit: int) -> None:
        source = make_engine()
        weights = source.model.get_input_embeddings().weight.detach()
        super().__init__(weights, source.layout, SCHED, EngineConfig())
        self.context_limit = limit
        self.prompts: list[tuple[torch.Tensor, int]] = []
        codes = [source.layout.speech_offset + i for i in range(5)]
        self.reply_ids = [1, 2, 3, *codes, source.layout.eot]

    async def stream(self, request_id, prompt, sampling):
        if "reply" in request_id:
            self.prompts.append((prompt, sampling.max_tokens))
            yield Chunk(self.reply_ids, cached_positions=0)

    async def abort_request(self, request_id):
        return None


async def _ask_each(engine: ScriptedPromptEngine, seeds: range) -> list[torch.Tensor]:
    """One conversation: a user turn from each seed, each replied to in full."""
    ctx = engine.open_context()
    audios = [audio(15, seed=s) for s in seeds]
    for a in audios:
        ctx.add_user_audio(a)
        async with contextlib.aclosing(ctx.reply()) as stream:
            assert [d.token_id async for d in stream] == engine.reply_ids
        await ctx.stop_priming()
    return audios


async def test_prompt_context_sends_only_what_fits():
    engine = ScriptedPromptEngine(limit=120)
    audios = await _ask_each(engine, seeds=range(60, 66))
    for prompt, max_tokens in engine.prompts:
        assert prompt.shape[0] + max_tokens <= 120
    lay, e = engine.layout, engine.embed_ids
    turn = [torch.cat([e([lay.user]), a, e([lay.assistant])]) for a in audios]
    reply = e(engine.reply_ids)
    lengths = [t.shape[0] + reply.shape[0] for t in turn]
    reserve = engine.prompts[0][1]
    first = _expected_kept(lengths, [t.shape[0] for t in turn], reserve, 120)
    assert first > 0
    expected = torch.cat([x for t in turn[first:-1] for x in (t, reply)] + [turn[-1]])
    torch.testing.assert_close(engine.prompts[-1][0], expected)


async def test_transformers_context_sees_only_the_last_history_turns():
    sched = SCHED.model_copy(update={"history_turns": 1})
    engine = make_engine(sched=sched)
    turns, ctx = await _converse(engine, range(80, 83))
    lay, e = engine.layout, engine.embed_ids
    (a1, r1), (a2, r2) = turns[1], turns[2]
    seen = torch.cat([e([lay.user]), a1, e([lay.assistant]), e(r1), e([lay.user]), a2,
                      e([lay.assistant])])  # fmt: skip
    assert greedy_from_scratch(engine, seen) == r2
    assert len(ctx._turns) == 2


async def test_prompt_context_sends_only_the_last_history_turns():
    engine = ScriptedPromptEngine(limit=10_000)
    engine.schedule = SCHED.model_copy(update={"history_turns": 1})
    audios = await _ask_each(engine, seeds=range(90, 93))
    lay, e = engine.layout, engine.embed_ids
    turn = [torch.cat([e([lay.user]), a, e([lay.assistant])]) for a in audios]
    reply = e(engine.reply_ids)
    torch.testing.assert_close(engine.prompts[-1][0], torch.cat([turn[1], reply, turn[2]]))
