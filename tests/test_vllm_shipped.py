"""Both engines serve the trained default model: vLLM's greedy tokens equal transformers'."""

from __future__ import annotations

import pytest
import pytest_asyncio

from parley.agent.core.model import AgentModel
from parley.agent.runtime import shipped_checkpoint
from parley.config import load_config
from tests.vllm_support import (
    audio_turns,
    conversation,
    vllm_agent_model,
)

pytestmark = [pytest.mark.vllm, pytest.mark.asyncio(loop_scope="module")]

QUESTIONS = ["what is seven times eight", "and plus five", "what day comes after monday"]


@pytest.fixture(scope="module")
def shipped():
    path = shipped_checkpoint()
    assert path is not None, "configs/model/ must hold the trained default model"
    return path


@pytest.fixture(scope="module")
def transformers_model(shipped):
    return AgentModel.load(shipped, load_config("tiny"))


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def vllm_model(shipped):
    async with vllm_agent_model(shipped) as model:
        yield model


async def test_greedy_conversation_is_the_same_on_both_engines(
    vllm_model, transformers_model, tmp_path_factory
):
    turns = audio_turns(transformers_model, QUESTIONS, tmp_path_factory.mktemp("tts"))
    expected = await conversation(transformers_model.engine, turns)
    got = await conversation(vllm_model.engine, turns)
    assert got == expected
    eot = transformers_model.checkpoint.manifest.vocab.eot
    assert all(reply[-1] == eot for reply in got)
    # The trained model answers the first question in its own text.
    tokenizer = transformers_model.checkpoint.tokenizer
    layout = transformers_model.checkpoint.manifest.vocab
    text = tokenizer.decode(
        [t for t in got[0] if t < layout.speech_offset], skip_special_tokens=True
    )
    assert "fifty six" in text
