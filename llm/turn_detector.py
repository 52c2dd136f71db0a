"""The end-of-turn detector: has the user finished, judged from the streaming encoder.

A silence timer cannot tell "what is seven ..." (the user thinking) from "what is seven
times eight" (done): both stop the same way. What was said can: the frozen Whisper
encoder's last second of frames, read by a small recurrent head, gives the probability
that the words so far are a finished turn. The session asks it once a short silence has
begun (:mod:`parley.agent.core.endpoint`).

It is an optional part of a checkpoint (``turn/``): a model without one keeps the
silence timer.

The same head, trained on other examples, judges user speech over a reply: whether its
words take the turn ("wait", "stop", a new question) or only acknowledge it ("uh-huh",
"right"). That one is the checkpoint's ``cut_in/`` part (:mod:`parley.train.cut_in_data`);
without it, barge-in goes by duration alone.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from torch import Tensor, nn

from parley.errors import CheckpointError
from parley.weights import load_file_into, save_state

TURN_DIR = "turn"
CUT_IN_DIR = "cut_in"
_CONFIG = "config.json"
_WEIGHTS = "model.safetensors"


@dataclass(frozen=True)
class TurnDetectorConfig:
    d_model: int = 384  # encoder width
    hidden: int = 128
    frames: int = 50  # encoder frames read (50 Hz: the last second)
    # The model's reply to words beyond the domain the detector learnt (its refusal): where
    # a reply started ahead says it, the detector's sure yes is not trusted before the VAD
    # calls its stop ("i would like to book a table for ..." reaches 0.95-0.97 in a 300
    # ms pause). None: unknown, and no yes is trusted before the stop.
    beyond_reply: str | None = None


class TurnDetector(nn.Module):
    """Encoder frames in, the logit of "the user has finished" out."""

    def __init__(self, cfg: TurnDetectorConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.proj = nn.Sequential(nn.LayerNorm(cfg.d_model), nn.Linear(cfg.d_model, cfg.hidden))
        self.rnn = nn.GRU(cfg.hidden, cfg.hidden, batch_first=True)
        self.out = nn.Linear(cfg.hidden, 1)

    def window(self, frames: Tensor) -> Tensor:
        """The last ``cfg.frames`` of ``(T, d_model)`` frames, zeros in front when fewer."""
        n = self.cfg.frames
        x = frames[-n:].float()
        if x.shape[0] < n:
            x = torch.cat([x.new_zeros(n - x.shape[0], x.shape[1]), x])
        return x

    def forward(self, windows: Tensor) -> Tensor:
        """``(B, frames, d_model)`` windows to ``(B,)`` logits."""
        h, _ = self.rnn(torch.nn.functional.gelu(self.proj(windows)))
        return self.out(h[:, -1]).squeeze(-1)

    @torch.inference_mode()
    def probability(self, frames: Tensor) -> float:
        """P(finished) after the utterance whose encoder frames are ``frames``."""
        return float(torch.sigmoid(self(self.window(frames)[None]))[0])

    def save(self, checkpoint: Path, folder: str = TURN_DIR) -> Path:
        out = Path(checkpoint) / folder
        out.mkdir(parents=True, exist_ok=True)
        (out / _CONFIG).write_text(json.dumps(asdict(self.cfg), indent=1) + "\n")
        save_state(self, out / _WEIGHTS)
        return out


def load_turn_detector(checkpoint: Path, part: str = TURN_DIR) -> TurnDetector | None:
    """The checkpoint's detector (``part``: ``turn`` or ``cut_in``), or None when it has
    none (the silence timer, or barge-in by duration, is used)."""
    folder = Path(checkpoint) / part
    if not folder.is_dir():
        return None
    try:
        cfg = TurnDetectorConfig(**json.loads((folder / _CONFIG).read_text()))
    except (OSError, ValueError, TypeError) as exc:
        raise CheckpointError(f"{folder / _CONFIG}: not a turn detector config ({exc})") from None
    model = TurnDetector(cfg)
    load_file_into(model, folder / _WEIGHTS)
    return model.eval()
