"""The vllm-server engine against a real ``vllm serve`` on loopback with the tiny checkpoint."""

from __future__ import annotations

import socket
import subprocess
import time

import httpx
import pytest
import pytest_asyncio
import torch

from parley.config import EngineConfig
from parley.llm.checkpoint import load_checkpoint
from parley.llm.engine import ReplyParams
from parley.llm.engines import create_engine
from parley.llm.vllm_server import serve_command
from tests.vllm_support import TEST_ENGINE, audio_turns, conversation, require_vllm

pytestmark = [pytest.mark.vllm, pytest.mark.asyncio(loop_scope="module")]

START_TIMEOUT_S = 240


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def server(tiny_checkpoint, tmp_path_factory):
    require_vllm()
    port = _free_port()
    engine = EngineConfig(name="vllm", **TEST_ENGINE)
    log = (tmp_path_factory.mktemp("vllm-serve") / "serve.log").open("w+")
    proc = subprocess.Popen(
        serve_command(tiny_checkpoint / "lm", engine, "127.0.0.1", port),
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + START_TIMEOUT_S
    try:
        while True:
            if proc.poll() is not None:
                log.seek(0)
                pytest.fail(f"vllm serve exited with {proc.returncode}:\n{log.read()[-4000:]}")
            try:
                if httpx.get(f"{url}/health", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass  # not listening yet
            if time.monotonic() > deadline:
                pytest.fail(f"vllm serve not ready after {START_TIMEOUT_S} s")
            time.sleep(1)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
        log.close()


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def remote(server, tiny_checkpoint):
    checkpoint = load_checkpoint(tiny_checkpoint, lm_weights=False)
    engine = create_engine(checkpoint, EngineConfig(name="vllm-server", url=f"{server}/v1"))
    yield engine
    await engine.aclose()


async def test_turns_through_the_server_equal_the_transformers_engine(
    remote, tiny_model, tmp_path_factory
):
    turns = audio_turns(tiny_model, ["hello there", "and then what"], tmp_path_factory.mktemp("t"))
    cut = {0: 30}
    expected = await conversation(tiny_model.engine, turns, cut)
    assert await conversation(remote, turns, cut) == expected


async def test_abort_closes_the_request_on_the_server(remote, tiny_model, tmp_path_factory):
    (turn,) = audio_turns(tiny_model, ["tell me a story"], tmp_path_factory.mktemp("t"))
    ctx = remote.open_context()
    ctx.add_user_audio(turn)
    got = 0
    stream = ctx.reply(ReplyParams(min_speech_tokens=400, max_speech_tokens=400))
    async for _ in stream:
        got += 1
        if got == 5:
            await ctx.abort()
    await stream.aclose()
    assert 5 <= got < 50 and remote.running_requests == 0
    await ctx.aclose()
    # The server finished nothing it was still generating: a fresh request goes through.
    ctx = remote.open_context()
    ctx.add_user_audio(turn)
    async for _ in ctx.reply(ReplyParams(max_speech_tokens=20)):
        pass
    await ctx.aclose()


async def test_a_malformed_schedule_is_a_400_and_the_server_lives(server, remote, tiny_model):
    from parley.llm.vllm_logits import ARG_KEY
    from parley.llm.vllm_server import encode_embeddings

    async with httpx.AsyncClient(timeout=30) as client:
        model = (await client.get(f"{server}/v1/models")).json()["data"][0]["id"]
        body = {
            "model": model,
            "prompt_embeds": encode_embeddings(torch.zeros(4, remote.hidden_size)),
            "max_tokens": 1,
            "vllm_xargs": {ARG_KEY: "not json"},
        }
        refused = await client.post(f"{server}/v1/completions", json=body)
        assert refused.status_code == 400 and ARG_KEY in refused.text
        # Any client of `vllm serve` can send that; every conversation still runs after it.
        assert (await client.get(f"{server}/health")).status_code == 200
    ctx = remote.open_context()
    ctx.add_user_audio(torch.zeros(4, remote.hidden_size))
    assert [d async for d in ctx.reply()]
    await ctx.aclose()
