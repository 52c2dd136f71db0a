"""The listening half of the spoken LM: PCM -> log-mel -> encoder blocks -> LM embeddings.

Every stage streams, so while the user speaks the encoder works block by block and, when
the utterance ends, only the last partial block remains to compute.
"""

from __future__ import annotations

import copy

import numpy as np
import torch

from parley.config import FeatureConfig
from parley.llm.adapter import Adapter, StreamingAdapter
from parley.llm.encoder import BlockCausalEncoder, StreamingEncoder
from parley.streaming import Streaming
from parley.tokenizers.features import StreamingLogMel

# Encoder frames kept for peek (50 per second): more than the end-of-turn detector reads.
RECENT_FRAMES = 200


class UtteranceTooShortError(ValueError):
    """An utterance ended before the encoder had a whole block of it: nothing to answer."""


class StreamingFrontEnd(Streaming):
    """Streams 16 kHz mono PCM into LM input embeddings for one utterance at a time."""

    def __init__(self, features: FeatureConfig, encoder: BlockCausalEncoder, adapter: Adapter):
        self.mel = StreamingLogMel(features)
        self.encoder = StreamingEncoder(encoder)
        self.adapter = StreamingAdapter(adapter)
        self._embeddings: list[torch.Tensor] = []
        self._recent = torch.zeros(0, encoder.d_model)  # the latest encoder frames

    def reset(self) -> None:
        """Drop the current utterance."""
        self.mel.reset()
        self.encoder.reset()
        self.adapter.reset()
        self._embeddings.clear()
        self._recent = self._recent[:0]

    @property
    def positions(self) -> int:
        """LM positions produced so far for this utterance."""
        return sum(e.shape[0] for e in self._embeddings)

    def push(self, pcm: np.ndarray) -> None:
        """Feed samples; completed encoder blocks are computed now."""
        mel = self.mel.push(pcm)
        if mel.shape[1]:
            with torch.inference_mode():
                frames, heard = self.encoder.push_both(torch.from_numpy(mel))
                self._keep_recent(frames)
                self._collect(self.adapter.push(heard))

    def peek(self, pcm: np.ndarray, keep: int = RECENT_FRAMES) -> torch.Tensor:
        """The last ``keep`` encoder frames of the utterance as if it ended after ``pcm``
        (which is *not* added to it): what the end-of-turn detector reads (``keep`` up to
        ``RECENT_FRAMES``). The stream is untouched; only copies of the mel and encoder
        states run on."""
        mel, encoder = _fork(self.mel), _fork(self.encoder)
        with torch.inference_mode():
            m = mel.push(pcm) if pcm.size else np.zeros((self.mel.cfg.n_mels, 0), np.float32)
            m = np.concatenate([m, mel.flush()], axis=1)
            tail = [encoder.push(torch.from_numpy(m))] if m.shape[1] else []
            frames = torch.cat([self._recent, *tail, encoder.flush()])
        return frames[-keep:]

    def _keep_recent(self, frames: torch.Tensor) -> None:
        if frames.shape[0]:
            self._recent = torch.cat([self._recent, frames])[-RECENT_FRAMES:]

    def finish(self, pcm: np.ndarray | None = None) -> torch.Tensor:
        """End the utterance after ``pcm`` if given; its LM embeddings ``(positions,
        hidden)``, and reset."""
        out = self._ended(self.mel, self.encoder, self.adapter, pcm)
        self.reset()
        return out

    def peek_utterance(self, pcm: np.ndarray | None = None) -> torch.Tensor:
        """What :meth:`finish` would return now, after ``pcm`` if given (it is not added):
        the stream untouched, as it may go on (a reply started ahead of the turn's end hears
        this, and is thrown away if it does)."""
        return self._ended(_fork(self.mel), _fork(self.encoder), _fork(self.adapter), pcm)

    def _ended(
        self,
        mel: StreamingLogMel,
        encoder: StreamingEncoder,
        adapter: StreamingAdapter,
        pcm: np.ndarray | None = None,
    ) -> torch.Tensor:
        """The utterance's embeddings once ``pcm`` is pushed through ``mel``, ``encoder``
        and ``adapter`` (this stream's stages or forks of them) and they are flushed."""
        tail: list[torch.Tensor] = []
        with torch.inference_mode():
            if pcm is not None and pcm.size:
                m = mel.push(pcm)
                if m.shape[1]:
                    tail.append(adapter.push(encoder.push_both(torch.from_numpy(m))[1]))
            m = mel.flush()
            if m.shape[1]:
                tail.append(adapter.push(encoder.push_both(torch.from_numpy(m))[1]))
            tail += [adapter.push(encoder.flush_both()[1]), adapter.flush()]
        parts = [e for e in [*self._embeddings, *tail] if e.shape[0]]
        if not parts:
            raise UtteranceTooShortError("the utterance is too short to encode")
        return torch.cat(parts)

    def _collect(self, emb: torch.Tensor) -> None:
        if emb.shape[0]:
            self._embeddings.append(emb)


def _fork(stream):
    """A copy of a streaming stage that shares its weights and owns a copy of its state."""
    twin = copy.copy(stream)
    twin.state = copy.deepcopy(stream.state)
    return twin
