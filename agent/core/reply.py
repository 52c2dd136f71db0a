"""One assistant reply in flight: its tokens, its audio, and the task producing them.

The producer streams token deltas from the LM, voices speech tokens through the streaming
vocoder in small chunks, and stops generating once ``max_ahead`` samples wait unplayed, so
memory stays bounded and an interruption throws away little work.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import torch

from parley.agent.core.text import IncrementalDetokenizer
from parley.config import AgentConfig
from parley.llm.engine import LMContext, ReplyParams, TokenDelta
from parley.tokenizers.vocab import TokenClass, VocabLayout
from parley.tokenizers.vocoder import StreamingVocoder


@dataclass(eq=False)  # a handle: one reply is itself, never equal to another
class Reply:
    """A reply's state, shared by its producer task and the session's playback."""

    id: int
    epoch: int
    detokenizer: IncrementalDetokenizer
    tokens: list[int] = field(default_factory=list)
    classes: list[TokenClass] = field(default_factory=list)
    audio: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.float32))
    position: int = 0  # samples played
    audio_started: bool = False
    generation_done: bool = False
    compute_s: float = 0.0  # LM and vocoder time spent on this reply
    first_audio_compute_s: float | None = None  # compute from the reply's start to first audio
    ahead_s: float = 0.0  # started this long before the user's turn ended (preemptive)
    space: asyncio.Event = field(default_factory=asyncio.Event)  # playback made room
    idle: asyncio.Event = field(default_factory=asyncio.Event)  # producer waits or is done
    task: asyncio.Task[None] | None = None
    status: str | None = None  # once over: completed, interrupted, failed (or closed)
    over: asyncio.Event = field(default_factory=asyncio.Event)

    @property
    def buffered(self) -> int:
        """Samples generated and not yet played."""
        return len(self.audio) - self.position

    @property
    def finished_playing(self) -> bool:
        return self.generation_done and self.position >= len(self.audio)

    def make_room(self) -> None:
        """Playback took audio: wake the producer if it waits for room, and count it busy
        from now on (so :meth:`settle` waits for it to use the room)."""
        if not self.space.is_set():
            self.idle.clear()
            self.space.set()

    @property
    def settled(self) -> bool:
        """The producer waits for room, or is done (or never started)."""
        return self.task is None or self.task.done() or self.idle.is_set()

    async def settle(self) -> None:
        """Until :attr:`settled`."""
        if self.settled:
            return
        assert self.task is not None
        waiter = asyncio.ensure_future(self.idle.wait())
        try:
            await asyncio.wait([self.task, waiter], return_when=asyncio.FIRST_COMPLETED)
        finally:
            waiter.cancel()

    async def wait_for_playout(self) -> str:
        """Wait until the reply is over, played to the end or not; returns how it ended
        (its ``status``). A reply thrown away before it answered a turn never ends."""
        await self.over.wait()
        assert self.status is not None
        return self.status

    async def stop(self) -> None:
        """Cancel the producer, if it still runs, and wait until it has stopped."""
        if self.task is not None and not self.task.done():
            self.task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self.task


def reply_params_for(config: AgentConfig, token_rate_hz: float) -> ReplyParams:
    """The agent's reply length bounds (seconds) as speech-token bounds for the engine."""
    lo, hi = config.reply_min_s, config.reply_max_s
    return ReplyParams(
        min_speech_tokens=None if lo is None else math.ceil(lo * token_rate_hz),
        max_speech_tokens=None if hi is None else max(1, round(hi * token_rate_hz)),
    )


async def produce(
    reply: Reply,
    context: LMContext,
    vocoder: StreamingVocoder,
    layout: VocabLayout,
    params: ReplyParams | None,
    chunk_tokens: int,
    max_ahead: int,
    on_text: Callable[[Reply, str], None],
    on_audio: Callable[[Reply], None],
    on_token: Callable[[Reply, TokenDelta], None] | None = None,
) -> None:
    """Generate and voice ``reply`` until its end of turn, pausing while too far ahead.

    ``on_text`` gets each complete piece of text, ``on_audio`` each time audio was added
    (and once more when generation is done), ``on_token`` every token as it comes."""
    codes: list[int] = []
    vocoder.reset()
    busy_since = time.perf_counter()

    def voice(pcm: np.ndarray) -> None:
        if pcm.size:
            reply.audio = np.concatenate([reply.audio, pcm])
            if reply.first_audio_compute_s is None:
                reply.first_audio_compute_s = reply.compute_s + time.perf_counter() - busy_since
            on_audio(reply)

    try:
        async with contextlib.aclosing(context.reply(params)) as stream:
            async for delta in stream:
                reply.tokens.append(delta.token_id)
                reply.classes.append(delta.kind)
                if on_token is not None:
                    on_token(reply, delta)
                if delta.kind is TokenClass.TEXT:
                    piece = reply.detokenizer.add(delta.token_id)
                    if piece:
                        on_text(reply, piece)
                elif delta.kind is TokenClass.SPEECH:
                    codes.append(layout.speech_code(delta.token_id))
                    if len(codes) >= chunk_tokens:
                        voice(vocoder.push(torch.tensor(codes)))
                        codes.clear()
                        if reply.buffered > max_ahead:
                            reply.compute_s += time.perf_counter() - busy_since
                            await _wait_for_room(reply, max_ahead)
                            busy_since = time.perf_counter()
        if codes:
            voice(vocoder.push(torch.tensor(codes)))
        voice(vocoder.flush())
        reply.generation_done = True
        on_audio(reply)
    finally:
        reply.compute_s += time.perf_counter() - busy_since
        reply.idle.set()


async def _wait_for_room(reply: Reply, max_ahead: int) -> None:
    # Playback sets ``space`` (and clears ``idle``) when it has consumed enough.
    while reply.buffered > max_ahead:
        reply.space.clear()
        reply.idle.set()
        await reply.space.wait()
