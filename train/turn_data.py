"""Examples for the end-of-turn detector: questions the user finished, and the same
questions stopped mid-phrase, each followed by a short silence.

The hard case is a pause inside a sentence ("what is the number before ... forty"): the
speech stops as it would at the end, and only the words say the turn goes on. So every
question of the corpus is spoken twice in the same voice, whole (finished) and cut after
a random word (not finished), each spoken as a unit, as a user who stops to think does.
A cut that leaves a complete question behind (only "please" or "for me" cut off) is not
used. The silence after the speech is one the session waits before it asks (150-400 ms),
over a faint noise floor, sometimes under louder noise.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

import numpy as np
import torch

from parley.config import FeatureConfig
from parley.llm.encoder import BlockCausalEncoder
from parley.train.domain import FILLERS, MAX_RESULT, number_words
from parley.train.lm_data import encode_utterance
from parley.train.phrasings import TAILS
from parley.train.voices import Voice

SILENCES_S = (0.15, 0.25, 0.4)
SAMPLE_RATE = 16000
# Cut-offs that leave a finished question: what only trails it.
_TRAILING = {w for t in TAILS for w in t.split()} | {w for f in FILLERS for w in f.split()}
_NUMBER_WORDS = {w for n in range(MAX_RESULT + 1) for w in number_words(n).split()}


@dataclass
class TurnExample:
    frames: torch.Tensor  # the detector's window of encoder frames, float16
    finished: bool
    voice: str
    silence_s: float
    text: str


def cut_mid_phrase(question: str, rng: random.Random) -> str | None:
    """``question`` stopped after a random word, never where only trailing words ("please",
    "um") are cut off; None for a one-word question."""
    words = question.split()
    bare = [w.strip(",.?!") for w in words]
    cuts = [
        k
        for k in range(1, len(words))
        if not set(bare[k:]) <= _TRAILING
        # Inside "seventy | one" a cut leaves another finished question ("after seventy").
        and not (bare[k - 1] in _NUMBER_WORDS and bare[k] in _NUMBER_WORDS)
    ]
    if not cuts:
        return None
    return " ".join(words[: rng.choice(cuts)]).rstrip(",")


def pad_for_decision(
    speech: np.ndarray, silence_s: float, rng: np.random.Generator, noisy: bool
) -> np.ndarray:
    """Speech as the session holds it when it asks: a little lead, ``silence_s`` after,
    a faint floor throughout, and on ``noisy`` examples white or brown noise at 10-30 dB."""
    lead = int(rng.uniform(0.05, 0.3) * SAMPLE_RATE)
    trail = int(silence_s * SAMPLE_RATE)
    out = np.concatenate([np.zeros(lead), speech, np.zeros(trail)]).astype(np.float32)
    out += 10 ** (rng.uniform(-75, -55) / 20) * rng.standard_normal(out.size).astype(np.float32)
    if noisy:
        noise = rng.standard_normal(out.size).astype(np.float32)
        if rng.random() < 0.5:  # brown: integrated, the rumble a room has
            noise = np.cumsum(noise)
            noise -= np.convolve(noise, np.ones(400) / 400, mode="same")
        level = np.sqrt(np.mean(speech**2) + 1e-12) / 10 ** (rng.uniform(10, 30) / 20)
        out += (level / (np.sqrt(np.mean(noise**2)) + 1e-12) * noise).astype(np.float32)
    return out


def make_examples(
    questions: Sequence[tuple[str, Voice]],
    features: FeatureConfig,
    encoder: BlockCausalEncoder,
    window: Callable[[torch.Tensor], torch.Tensor],
    seed: int,
    progress: Callable[[Iterable], Iterable] = lambda it: it,
) -> list[TurnExample]:
    """Each (question, voice) whole and cut, at every silence of ``SILENCES_S``."""
    rng = random.Random(f"turns:{seed}")
    out: list[TurnExample] = []
    for i, (question, voice) in enumerate(progress(questions)):
        cut = cut_mid_phrase(question, rng)
        params = voice.sample_params(rng)
        for text, finished in ((question, True), (cut, False)):
            if text is None:
                continue
            speech = voice.synthesize(text, params)
            for j, silence in enumerate(SILENCES_S):
                noise_rng = np.random.default_rng([seed, i, int(finished), j])
                audio = pad_for_decision(speech, silence, noise_rng, noisy=rng.random() < 0.3)
                frames = window(encode_utterance(audio, features, encoder))
                out.append(TurnExample(frames.half(), finished, voice.name, silence, text))
    return out
