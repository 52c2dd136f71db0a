"""A turn rolled back leaves nothing behind: the conversation replies afterwards exactly as
one that never heard it (both engines' contexts)."""

from __future__ import annotations

import contextlib

import pytest
import torch

from tests.test_context_window import ScriptedPromptEngine
from tests.test_engine import audio, collect, make_engine


async def _speculate(ctx, seed: int, steps: int | None) -> None:
    """Add a user turn and reply to it, in full (``steps`` None) or for a few tokens."""
    ctx.add_user_audio(audio(4, seed))
    if steps is None:
        await collect(ctx)
        return
    async with contextlib.aclosing(ctx.reply()) as stream:
        for _ in range(steps):
            await anext(stream)
    await ctx.abort()


async def _speculate_and_roll_back(ctx, steps: int | None) -> None:
    length, point = ctx.context_length, ctx.save_point()
    await _speculate(ctx, 13, steps)
    ctx.roll_back(point)
    assert ctx.context_length == length


@pytest.mark.parametrize("steps", [None, 0, 3])
@pytest.mark.parametrize("cut_before", [False, True])
async def test_transformers_roll_back_equals_never_having_heard_it(steps, cut_before):
    engine = make_engine()

    async def conversation(speculate: bool) -> tuple[list[int], int]:
        ctx = engine.open_context()
        ctx.add_user_audio(audio(5, 11))
        first = await collect(ctx)
        if cut_before:
            ctx.truncate_reply(len(first) // 2)
        if speculate:
            await _speculate_and_roll_back(ctx, steps)
        ctx.add_user_audio(audio(3, 12))
        return [d.token_id for d in await collect(ctx)], ctx.context_length

    assert await conversation(True) == await conversation(False)


async def test_transformers_roll_back_across_a_rebuilt_cache():
    # The speculative turn overflows the LM, so the oldest turns go and the cache is rebuilt;
    # rolled back, the old turns are all there again and fed anew with the next turn.
    engine = make_engine()
    engine.context_limit = 110

    async def conversation(speculate: bool) -> list[int]:
        ctx = engine.open_context()
        for s in (20, 21):
            ctx.add_user_audio(audio(12, s))
            await collect(ctx)
        if speculate:
            point = ctx.save_point()
            ctx.add_user_audio(audio(40, 22))
            await collect(ctx)
            ctx.roll_back(point)
        ctx.add_user_audio(audio(3, 23))
        return [d.token_id for d in await collect(ctx)]

    assert await conversation(True) == await conversation(False)


async def test_sampled_replies_draw_the_same_after_a_roll_back():
    engine = make_engine(temperature=1.0)

    async def conversation(speculate: bool) -> list[int]:
        ctx = engine.open_context()
        if speculate:
            point = ctx.save_point()
            await _speculate(ctx, 13, None)
            ctx.roll_back(point)
        ctx.add_user_audio(audio(5, 11))
        return [d.token_id for d in await collect(ctx)]

    assert await conversation(True) == await conversation(False)


@pytest.mark.parametrize("steps", [None, 2])
async def test_prompt_context_roll_back_sends_the_same_prompt(steps):
    engine = ScriptedPromptEngine(limit=10_000)

    async def conversation(speculate: bool) -> torch.Tensor:
        ctx = engine.open_context()
        ctx.add_user_audio(audio(5, 11))
        await collect(ctx)
        ctx.truncate_reply(4)
        if speculate:
            await _speculate_and_roll_back(ctx, steps)
        ctx.add_user_audio(audio(3, 12))
        await collect(ctx)
        await ctx.stop_priming()
        return engine.prompts[-1][0]

    torch.testing.assert_close(await conversation(True), await conversation(False))


async def test_roll_back_refuses_a_running_reply_and_a_foreign_point():
    engine = make_engine()
    a, b = engine.open_context(), engine.open_context()
    point = a.save_point()
    with pytest.raises(ValueError, match="not a save point"):
        b.roll_back(point)
    a.add_user_audio(audio())
    stream = a.reply()
    await anext(stream)
    with pytest.raises(RuntimeError, match="abort"):
        a.roll_back(point)
    await stream.aclose()
    a.roll_back(point)
    assert a.context_length == 0
