"""A reply's producer on its own: text out, speech voiced in chunks, held back while far
enough ahead of playback, and done at the end of turn."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator

import numpy as np
import torch

from parley.agent.core.reply import Reply, produce
from parley.agent.core.text import IncrementalDetokenizer
from parley.llm.engine import ReplyParams, TokenDelta
from parley.tokenizers.vocab import TokenClass, VocabLayout

SPT = 4  # samples per speech token of the stand-in vocoder
LAYOUT = VocabLayout(
    speech_offset=10, codebook_size=8, user=18, assistant=19, text_end=20, eot=21, pad=22,
    vocab_size=23,
)  # fmt: skip


class Context:
    """Streams a fixed reply: two text tokens, then speech codes 0..n-1, then the end."""

    def __init__(self, n_speech: int) -> None:
        self.n_speech = n_speech
        self.sent = 0

    async def reply(self, params: ReplyParams | None = None) -> AsyncGenerator[TokenDelta, None]:
        items = [(1, TokenClass.TEXT), (2, TokenClass.TEXT), (20, TokenClass.TEXT_END)]
        items += [(LAYOUT.speech_offset + c % 8, TokenClass.SPEECH) for c in range(self.n_speech)]
        for i, (tok, kind) in enumerate([*items, (21, TokenClass.EOT)]):
            self.sent += 1
            yield TokenDelta(tok, kind, i)


class Vocoder:
    """Each code becomes SPT samples of value code + 1; flush adds nothing."""

    def reset(self) -> None:
        pass

    def push(self, codes: torch.Tensor) -> np.ndarray:
        return np.repeat(codes.numpy().astype(np.float32) + 1, SPT)

    def flush(self) -> np.ndarray:
        return np.zeros(0, dtype=np.float32)


class Words:
    def decode(self, ids, skip_special_tokens=True):
        return "".join({1: "hi", 2: " there"}.get(i, "") for i in ids)


def run(reply: Reply, context: Context, max_ahead: int, texts: list[str]):
    return produce(
        reply, context, Vocoder(), LAYOUT, ReplyParams(), 2, max_ahead,
        lambda r, piece: texts.append(piece), lambda r: None,
    )  # fmt: skip


async def test_the_producer_voices_its_speech_and_waits_for_room() -> None:
    reply = Reply(id=1, epoch=0, detokenizer=IncrementalDetokenizer(Words()))
    texts: list[str] = []
    context = Context(n_speech=10)
    task = reply.task = asyncio.create_task(run(reply, context, max_ahead=8, texts=texts))
    await asyncio.wait_for(reply.settle(), 1)  # held back: 2 chunks of 2 codes = 16 > 8
    assert reply.settled and not task.done()
    assert "".join(texts) == "hi there" and not reply.generation_done
    assert len(reply.audio) == 16 and context.sent < 14
    assert reply.audio[:SPT].tolist() == [1.0] * SPT  # code 0, in order
    # Playback takes what is there and makes room, as Playout does.
    while not task.done():
        reply.position = len(reply.audio)
        reply.make_room()
        assert not reply.settled  # busy until it has used the room
        await reply.settle()
    await task
    assert reply.generation_done and reply.idle.is_set()
    assert len(reply.audio) == 10 * SPT and context.sent == 14
    assert reply.classes.count(TokenClass.SPEECH) == 10 and reply.first_audio_compute_s is not None


async def test_stop_ends_a_producer_that_waits_for_room() -> None:
    reply = Reply(id=1, epoch=0, detokenizer=IncrementalDetokenizer(Words()))
    context = Context(n_speech=50)
    reply.task = asyncio.create_task(run(reply, context, max_ahead=0, texts=[]))
    await reply.settle()
    await reply.stop()
    assert reply.task.cancelled() and not reply.generation_done and context.sent < 10
    await reply.stop()  # a second stop has nothing left to do
