"""The loaded model an agent runs on: one checkpoint and one engine, shared by sessions."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from parley.config import ParleyConfig
from parley.llm.checkpoint import Checkpoint, load_checkpoint
from parley.llm.engine import SpokenLM
from parley.llm.engines import create_engine, needs_lm_weights
from parley.llm.turn_detector import CUT_IN_DIR, TurnDetector, load_turn_detector


@dataclass
class AgentModel:
    """Everything sessions share: weights, tokenizer, engine."""

    checkpoint: Checkpoint
    engine: SpokenLM
    config: ParleyConfig
    turn_detector: TurnDetector | None = None  # the checkpoint's, if it has one
    cut_in_detector: TurnDetector | None = None  # likewise

    @classmethod
    def load(cls, path: Path, config: ParleyConfig) -> AgentModel:
        """Load ``path`` and start ``config``'s engine on it."""
        if config.engine.threads:
            torch.set_num_threads(config.engine.threads)
        checkpoint = load_checkpoint(
            path, dtype=config.engine.dtype, lm_weights=needs_lm_weights(config.engine)
        )
        engine = create_engine(checkpoint, config.engine)
        turn, cut_in = load_turn_detector(path), load_turn_detector(path, CUT_IN_DIR)
        return cls(checkpoint, engine, config, turn, cut_in)

    async def aclose(self) -> None:
        """Stop the engine (a vLLM engine's processes, a server connection)."""
        await self.engine.aclose()

    @property
    def random_weights(self) -> bool:
        return self.checkpoint.random_weights

    @property
    def samples_per_token(self) -> int:
        return self.checkpoint.manifest.model.codec.samples_per_token
