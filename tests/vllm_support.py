"""What the vLLM test modules share: the skip rule, engine settings, audio turns."""

from __future__ import annotations

import contextlib
import importlib.util
import os

import numpy as np
import pytest
import torch

from parley.config import EngineConfig
from parley.llm.frontend import StreamingFrontEnd

HAVE_VLLM = importlib.util.find_spec("vllm") is not None


def require_vllm() -> None:
    """Skip where vLLM is not installed, except in CI, where it is required."""
    if HAVE_VLLM:
        return
    if os.environ.get("CI"):
        pytest.fail("vLLM is required in CI (.ci/run installs it from ../shared/wheels)")
    pytest.skip(
        "vLLM is not installed (pip install --find-links ../shared/wheels vllm==0.33.0+cpu)"
    )


# Float32 and eager so the vLLM engine's greedy tokens can be compared with transformers';
# a small KV cache so the test engine fits beside everything else.
TEST_ENGINE = dict(dtype="float32", eager=True, kv_cache_mb=256, block_size=32, max_model_len=4096)


def vllm_config(**overrides) -> EngineConfig:
    return EngineConfig(name="vllm", **{**TEST_ENGINE, **overrides})


@contextlib.asynccontextmanager
async def vllm_agent_model(path):
    """The checkpoint at ``path`` served by an in-process vLLM engine (test settings)."""
    from parley.agent.core.model import AgentModel
    from parley.config import load_config
    from parley.llm.checkpoint import load_checkpoint
    from parley.llm.engines import create_engine

    require_vllm()
    config = load_config("tiny").model_copy(update={"engine": vllm_config()})
    checkpoint = load_checkpoint(path, lm_weights=False)
    model = AgentModel(checkpoint, create_engine(checkpoint, config.engine), config)
    try:
        yield model
    finally:
        await model.aclose()


def audio_turns(model, texts: list[str], cache_dir) -> list[torch.Tensor]:
    """User turns as LM embeddings: speech by espeak-ng, encoded by the model's front end."""
    from parley.agent.harness.render import say

    ckpt = model.checkpoint
    front = StreamingFrontEnd(ckpt.manifest.model.features, ckpt.encoder, ckpt.adapter)
    turns = []
    for text in texts:
        front.push(np.asarray(say(text, "en-us", cache_dir), np.float32))
        turns.append(front.finish())
    return turns


async def reply_ids(ctx, params=None) -> list[int]:
    async with contextlib.aclosing(ctx.reply(params)) as stream:
        return [d.token_id async for d in stream]


async def conversation(engine, turns, truncate_at: dict[int, int] | None = None) -> list[list[int]]:
    """Greedy replies to ``turns``; reply ``i`` is cut to ``truncate_at[i]`` tokens."""
    ctx = engine.open_context()
    replies = []
    try:
        for i, emb in enumerate(turns):
            ctx.add_user_audio(emb)
            ids = await reply_ids(ctx)
            if truncate_at and i in truncate_at:
                ctx.truncate_reply(truncate_at[i])
                ids = ids[: truncate_at[i]]
            replies.append(ids)
    finally:
        await ctx.aclose()
    return replies
