"""The vocoder's training data: utterances as unit ids, and random crops of them.

A crop is decoded with some past tokens before it and the lookahead after it, exactly as a
stream would see them; only the crop's own samples are scored. A share of crops begins at an
utterance's start, where every reply's stream begins. An utterance shorter than a crop is
one crop from its start, its target padded with the silence that follows a flushed stream
("you are welcome" is 0.9 s: left out, the vocoder never learnt the agent's shortest
replies). A share of crops can be drawn by per-utterance ``focus`` weights instead of by
length: the agent's own replies, few of them heard rarely, are what it must say best.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from parley.tokenizers.unit_tokenizer import UnitTokenizer
from parley.tokenizers.vocoder import TokenVocoder
from parley.train.codec_data import Utterance
from parley.train.codec_loss import synthesize_batch


@dataclass
class TokenizedUtterance:
    text: str
    audio: Tensor  # float32, len(ids) * samples_per_token samples
    ids: Tensor  # int64


def tokenize(utterances: Sequence[Utterance], tok: UnitTokenizer) -> list[TokenizedUtterance]:
    """Ids of each utterance from its cached frames (what ``tok.encode`` gives on its audio)."""
    out = []
    for u in utterances:
        assert u.frames is not None
        ids = tok.assign(tok.pool(u.frames))
        audio = torch.from_numpy(u.audio[: ids.numel() * tok.samples_per_token])
        out.append(TokenizedUtterance(u.text, audio, ids))
    return out


class CropSampler:
    """Random crops (seeded generator, state saved with the training state)."""

    def __init__(
        self,
        data: Sequence[TokenizedUtterance],
        crop: int,
        past: int,
        future: int,
        seed: int,
        start_share: float = 0.0,
        focus: Sequence[float] | None = None,
        focus_share: float = 0.0,
    ) -> None:
        keep = [i for i, u in enumerate(data) if u.ids.numel() > 0]
        self.data = [data[i] for i in keep]
        if not self.data:
            raise ValueError("no utterance has a unit to crop")
        self.crop, self.past, self.future = crop, past, future
        self.start_share = start_share
        # By length: each crop position of the training audio equally often.
        weights = torch.tensor(
            [max(u.ids.numel() - crop + 1, 1) for u in self.data], dtype=torch.float
        )
        self.weights = weights / weights.sum()
        self.focus: torch.Tensor | None = None
        self.focus_share = 0.0
        if focus is not None and focus_share > 0:
            if len(focus) != len(data):
                raise ValueError(f"focus has {len(focus)} weights for {len(data)} utterances")
            f = torch.tensor([float(focus[i]) for i in keep], dtype=torch.float)
            if not bool((f >= 0).all()) or float(f.sum()) <= 0:
                raise ValueError("focus weights must be >= 0 with at least one > 0")
            self.focus, self.focus_share = f / f.sum(), focus_share
        self.gen = torch.Generator().manual_seed(seed)

    def sample(self, n: int) -> Crops:
        """``n`` random crops."""
        picks = torch.multinomial(self.weights, n, replacement=True, generator=self.gen)
        if self.focus is not None:
            focused = torch.rand(n, generator=self.gen) < self.focus_share
            alt = torch.multinomial(self.focus, n, replacement=True, generator=self.gen)
            picks = torch.where(focused, alt, picks)
        where = []
        at_start = torch.rand(n, generator=self.gen) < self.start_share
        for i, first in zip(picks.tolist(), at_start.tolist(), strict=True):
            last = self.data[i].ids.numel() - self.crop  # the last start of a whole crop
            s = (
                0
                if first or last <= 0
                else int(torch.randint(0, last + 1, (1,), generator=self.gen))
            )
            where.append((i, s))
        return self.crops(where)

    def crops(self, where: Sequence[tuple[int, int]]) -> Crops:
        """The crops of ``data[i]`` starting at token ``s``, for each ``(i, s)``: windows of
        ``past + crop + future`` token slots, zero ids where the utterance has none."""
        width = self.past + self.crop + self.future
        ids = torch.zeros(len(where), width, dtype=torch.long)
        start = torch.zeros(len(where), dtype=torch.long)
        end = torch.zeros(len(where), dtype=torch.long)
        targets = []
        for row, (i, s) in enumerate(where):
            u = self.data[i]
            spt = u.audio.numel() // u.ids.numel()
            lo, hi = max(0, s - self.past), min(u.ids.numel(), s + self.crop + self.future)
            offset = lo - (s - self.past)
            ids[row, offset : offset + hi - lo] = u.ids[lo:hi]
            start[row], end[row] = offset, offset + hi - lo
            target = u.audio[s * spt : (s + self.crop) * spt]
            # Past a short utterance's end a flushed stream is silent.
            targets.append(F.pad(target, (0, self.crop * spt - target.numel())))
        return Crops(ids, start, end, torch.stack(targets), self.past)


@dataclass
class Crops:
    """A batch of decoding windows and the audio their scored middle must match."""

    ids: Tensor  # (B, past + crop + future)
    start: Tensor  # (B,) first real token slot
    end: Tensor  # (B,) one past the last real token slot
    target: Tensor  # (B, crop * samples_per_token)
    past: int  # token slots before the scored part

    def decode(self, vocoder: TokenVocoder, bf16: bool = False) -> Tensor:
        """The vocoder's audio for the scored part of each window, (B, crop * spt)."""
        spt = vocoder.cfg.samples_per_token
        audio = synthesize_batch(vocoder, self.ids, self.start, self.end, bf16)
        lo = self.past * spt
        return audio[:, lo : lo + self.target.shape[1]]
