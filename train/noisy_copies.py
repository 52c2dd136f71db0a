"""Training dialogues heard again under loud noise: more of the condition the model fails in.

The corpus puts noise under half its utterances at 5-30 dB SNR, a third of it babble, so a
question under babble at 10 dB or less is about one utterance in thirty of what the LM
learns from, while it is a whole held-out condition (and a kitchen, a car, an office). A
noisy copy is a training dialogue whose questions are mixed anew with white, brown or
babble noise at 5-15 dB: the same words and answer, other encoder frames. The noise is
drawn from the corpus's training talkers only (``babble/train``), and its draw is written
into the frame-cache key, so the cache is reproducible and grows as the share does.
"""

from __future__ import annotations

import hashlib
import random
from collections.abc import Sequence
from functools import cache
from pathlib import Path

import numpy as np
import soundfile as sf

from parley.speech_io.audio import load_audio
from parley.train.augment import NOISE_KINDS, add_noise
from parley.train.lm_data import Dialogue, Turn

__all__ = ["SNR_RANGE", "noisy_audio", "noisy_copies", "is_noisy"]

SNR_RANGE = (5.0, 15.0)
_TAG = "#noise="


def noisy_copies(dialogues: Sequence[Dialogue], share: float, seed: int) -> list[Dialogue]:
    """``share`` as many dialogues as ``dialogues``, drawn (seeded, with replacement), each
    under one fresh noise (its kind and SNR drawn per dialogue, the same for its turns)."""
    wanted = round(share * len(dialogues))
    if not dialogues or wanted == 0:
        return []
    rng = random.Random(f"noisy:{seed}")
    out = []
    for i in range(wanted):
        d = rng.choice(dialogues)
        kind, snr = rng.choice(NOISE_KINDS), round(rng.uniform(*SNR_RANGE), 1)
        turns = [Turn(f"{t.audio}{_TAG}{kind}:{snr:g}:{i}", t.answer, t.text_only) for t in d.turns]
        out.append(Dialogue(f"{d.id}-noisy{i}", d.split, turns, d.meta))
    return out


def is_noisy(key: str) -> bool:
    """Whether a frame-cache key names a noisy copy's utterance."""
    return _TAG in key


def noisy_audio(corpus: Path, key: str) -> np.ndarray:
    """The utterance a noisy copy's ``key`` names: the corpus's recording under its noise."""
    name, spec = key.split(_TAG)
    kind, snr, _ = spec.split(":")  # the last part only keeps copies' draws apart
    audio = load_audio(Path(corpus) / name)
    rng = np.random.default_rng(int.from_bytes(hashlib.sha1(key.encode()).digest()[:8], "little"))
    return add_noise(audio, kind, float(snr), rng, _talkers(str(corpus)))


@cache
def _talkers(corpus: str) -> tuple[np.ndarray, ...]:
    files = sorted(Path(corpus, "babble", "train").glob("*.wav"))
    if not files:
        raise FileNotFoundError(f"{corpus}/babble/train: no talkers to make babble from")
    return tuple(sf.read(f, dtype="float32")[0] for f in files)
