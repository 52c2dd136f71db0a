"""One spoken turn end to end: user PCM in, reply text and PCM out, each stage timed.

The user's audio is pumped in fixed frames through the streaming front end; the reply's
speech tokens go to the streaming vocoder in small chunks as they are generated, so audio
comes out while the LM is still writing.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from parley.agent.core.reply import Reply, produce
from parley.agent.core.text import IncrementalDetokenizer
from parley.config import AgentConfig
from parley.llm.checkpoint import Checkpoint
from parley.llm.engine import LMContext, ReplyParams, SpokenLM, TokenDelta
from parley.llm.frontend import StreamingFrontEnd
from parley.tokenizers.vocab import TokenClass
from parley.tokenizers.vocoder import StreamingVocoder

Clock = Callable[[], float]


@dataclass(frozen=True)
class StageEvent:
    """A named moment of a turn, in clock seconds."""

    name: str
    t: float


@dataclass
class TurnResult:
    """What one turn produced and when."""

    audio: np.ndarray
    sample_rate: int
    text: str
    token_ids: list[int]
    events: list[StageEvent] = field(default_factory=list)

    def at(self, name: str) -> float | None:
        return next((e.t for e in self.events if e.name == name), None)

    def latencies_ms(self) -> dict[str, float]:
        """Each stage's time after the user's audio ended, in milliseconds."""
        end = self.at("audio_in_end")
        if end is None:
            return {}
        return {e.name: round((e.t - end) * 1000.0, 3) for e in self.events if e.t >= end}


class SpeakPipeline:
    """Features -> encoder -> adapter -> LM -> vocoder, for one conversation."""

    def __init__(
        self,
        checkpoint: Checkpoint,
        engine: SpokenLM,
        agent: AgentConfig | None = None,
        clock: Clock = time.perf_counter,
    ) -> None:
        self.checkpoint = checkpoint
        self.agent = agent or AgentConfig()
        self.clock = clock
        cfg = checkpoint.manifest.model
        self.sample_rate = cfg.features.sample_rate
        self.frontend = StreamingFrontEnd(cfg.features, checkpoint.encoder, checkpoint.adapter)
        self.vocoder = StreamingVocoder(checkpoint.vocoder)
        self.context: LMContext = engine.open_context()
        self.layout = checkpoint.manifest.vocab

    def frames(self, audio: np.ndarray) -> list[np.ndarray]:
        """``audio`` cut into the agent's frame size (the last frame may be shorter)."""
        step = self.sample_rate * self.agent.frame_ms // 1000
        return [audio[i : i + step] for i in range(0, len(audio), step)]

    async def run_turn(
        self,
        audio: np.ndarray,
        params: ReplyParams | None = None,
        on_text: Callable[[str], None] | None = None,
    ) -> TurnResult:
        """Stream ``audio`` (16 kHz mono float32) in, generate and voice the reply."""
        events: list[StageEvent] = []

        def mark(name: str) -> None:
            if not any(e.name == name for e in events):
                events.append(StageEvent(name, self.clock()))

        mark("audio_in_start")
        for frame in self.frames(audio):
            self.frontend.push(frame)
        mark("audio_in_end")
        self.context.add_user_audio(self.frontend.finish())
        mark("encoder_done")

        reply = Reply(id=1, epoch=0, detokenizer=IncrementalDetokenizer(self.checkpoint.tokenizer))
        first = {TokenClass.TEXT: "first_text_token", TokenClass.SPEECH: "first_speech_token"}

        def on_token(_: Reply, delta: TokenDelta) -> None:
            if delta.kind in first:
                mark(first[delta.kind])

        def on_audio(r: Reply) -> None:
            if len(r.audio):
                mark("first_audio_out")

        # Nothing plays here, so the producer never has to wait for room.
        await produce(
            reply,
            self.context,
            self.vocoder,
            self.layout,
            params,
            self.agent.vocoder_chunk_tokens,
            sys.maxsize,
            lambda _, piece: on_text(piece) if on_text else None,
            on_audio,
            on_token,
        )
        mark("reply_end")
        return TurnResult(
            reply.audio,
            self.checkpoint.manifest.model.codec.sample_rate,
            reply.detokenizer.text,
            reply.tokens,
            events,
        )
