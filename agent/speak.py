"""One spoken turn end to end: user PCM in, reply text and PCM out, each stage timed.

The user's audio is pumped in fixed frames through the streaming front end; the reply's
speech tokens go to the streaming vocoder in small chunks as they are generated, so audio
comes out while the LM is still writing.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import torch

from parley.agent.text import IncrementalDetokenizer
from parley.config import AgentConfig
from parley.llm.checkpoint import Checkpoint
from parley.llm.engine import LMContext, ReplyParams, SpokenLM
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

        text = IncrementalDetokenizer(self.checkpoint.tokenizer)
        token_ids: list[int] = []
        pieces: list[np.ndarray] = []
        codes: list[int] = []
        chunk = self.agent.vocoder_chunk_tokens

        def voice(out: np.ndarray) -> None:
            if out.size:
                mark("first_audio_out")
                pieces.append(out)

        self.vocoder.reset()
        async with contextlib.aclosing(self.context.reply(params)) as stream:
            async for delta in stream:
                token_ids.append(delta.token_id)
                if delta.kind is TokenClass.TEXT:
                    mark("first_text_token")
                    piece = text.add(delta.token_id)
                    if piece and on_text:
                        on_text(piece)
                elif delta.kind is TokenClass.SPEECH:
                    mark("first_speech_token")
                    codes.append(self.layout.speech_code(delta.token_id))
                    if len(codes) >= chunk:
                        voice(self.vocoder.push(torch.tensor(codes)))
                        codes.clear()
        if codes:
            voice(self.vocoder.push(torch.tensor(codes)))
        voice(self.vocoder.flush())
        mark("reply_end")
        audio_out = np.concatenate(pieces) if pieces else np.zeros(0, dtype=np.float32)
        return TurnResult(
            audio_out,
            self.checkpoint.manifest.model.codec.sample_rate,
            text.text,
            token_ids,
            events,
        )
