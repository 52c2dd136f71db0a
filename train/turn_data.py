"""Examples for the end-of-turn detector: questions the user finished, and the same
questions stopped mid-phrase, each followed by a short silence.

The hard case is a pause inside a sentence ("what is the number before ... forty"): the
speech stops as it would at the end, and only the words say the turn goes on. So every
question of the corpus is spoken twice in the same voice, whole (finished) and cut after
a random word (not finished), each spoken as a unit, as a user who stops to think does.
A cut that leaves a complete question behind (only "please" or "for me" cut off) is not
used. The silence after the speech is one the session waits before it asks (150-400 ms),
over a faint noise floor, sometimes under louder noise, and now and then over the agent's
own voice as an echo canceller leaves it (a user answering over a reply).

The corpus's questions are the model's domain only. So that a request of another kind is
not "finished" at its first pause ("i need a taxi to ... the station"), sentences beyond
the domain are spoken whole and cut too, and commands ("stop please", "hold on"), which
are finished however short, only whole.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Collection, Iterable, Sequence
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
BEYOND_DOMAIN = (
    "i need a taxi to the train station", "can you remind me to call my sister tomorrow",
    "play some quiet music in the kitchen", "what will the weather be like this weekend",
    "i would love a cup of coffee with milk", "please send a message to my manager",
    "how long does it take to drive to the airport", "turn off the lights in the bedroom",
    "could you read me the news headlines", "i want to order a large pizza with mushrooms",
    "set an alarm for seven in the morning", "tell me a joke about cats",
    "where is the nearest pharmacy from here", "i forgot my password for the email account",
    "can we move the meeting to thursday afternoon", "my flight leaves from gate twelve",
    "how do i get to the museum by bus", "the printer on the second floor is broken again",
    "we are going to the beach next saturday", "please add eggs and bread to my shopping list",
    "i am looking for a good book about history", "is the swimming pool open on sundays",
    "can you help me write a letter to the bank", "my son has a football match after school",
    "what time does the supermarket close tonight", "i would like to cancel my subscription",
    "remind me about the dentist appointment next week", "the train to london is delayed",
    "could you translate this sentence into french", "how many people live in that city",
)  # fmt: skip
HELDOUT_BEYOND = (
    "i need to renew my passport before the summer", "can you find a hotel near the harbour",
    "please call a plumber about the kitchen sink", "what films are showing at the cinema",
    "we should buy a present for my grandmother",
)  # fmt: skip
COMMANDS = (
    "stop", "stop please", "wait", "hold on", "never mind", "thank you", "okay stop",
    "no", "wait a second", "hang on", "that is enough", "cancel that", "be quiet", "forget it",
    "sorry", "excuse me", "one moment please", "stop talking",
)  # fmt: skip
"""Finished however short: spoken whole only."""
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
    kind: str = "domain"  # or "beyond" (a request of another kind) or "command"


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


ECHO_TEXTS = (
    "seven times eight is fifty six",
    "the month after march is april",
    "sorry i can only help with sums numbers days and months",
    "the number after forty one is forty two",
)
"""Said by the agent under the user's speech in the examples: the echo a canceller leaves."""


def agent_echo() -> np.ndarray:
    """The agent's voice saying ``ECHO_TEXTS``, one after another."""
    from parley.train.voices import agent_voice

    return np.concatenate([agent_voice().synthesize(t) for t in ECHO_TEXTS])


def with_echo(audio: np.ndarray, echo: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """``audio`` with a stretch of the agent's voice under it, 20-40 dB down: what an echo
    canceller leaves of the reply the user speaks over."""
    if echo.size < audio.size:
        echo = np.tile(echo, audio.size // max(echo.size, 1) + 1)
    start = int(rng.integers(0, echo.size - audio.size + 1))
    part = echo[start : start + audio.size]
    level = np.sqrt(np.mean(audio**2) + 1e-12) / 10 ** (rng.uniform(20, 40) / 20)
    return (audio + level / (np.sqrt(np.mean(part**2)) + 1e-12) * part).astype(np.float32)


def make_examples(
    questions: Sequence[tuple[str, Voice]],
    features: FeatureConfig,
    encoder: BlockCausalEncoder,
    window: Callable[[torch.Tensor], torch.Tensor],
    seed: int,
    progress: Callable[[Iterable], Iterable] = lambda it: it,
    echo: np.ndarray | None = None,
    beyond: Collection[str] = (),
) -> list[TurnExample]:
    """Each (question, voice) whole and cut (commands whole only), at every silence of
    ``SILENCES_S``; a fifth of them over ``echo``, the agent's voice, where given. Those in
    ``beyond`` are marked as requests beyond the domain."""
    rng = random.Random(f"turns:{seed}")
    out: list[TurnExample] = []
    for i, (question, voice) in enumerate(progress(questions)):
        command = question in COMMANDS
        kind = "command" if command else "beyond" if question in beyond else "domain"
        cut = None if command else cut_mid_phrase(question, rng)
        params = voice.sample_params(rng)
        for text, finished in ((question, True), (cut, False)):
            if text is None:
                continue
            speech = voice.synthesize(text, params)
            for j, silence in enumerate(SILENCES_S):
                noise_rng = np.random.default_rng([seed, i, int(finished), j])
                audio = pad_for_decision(speech, silence, noise_rng, noisy=rng.random() < 0.3)
                if echo is not None and rng.random() < 0.2:
                    audio = with_echo(audio, echo, noise_rng)
                frames = window(encode_utterance(audio, features, encoder))
                out.append(TurnExample(frames.half(), finished, voice.name, silence, text, kind))
    return out
