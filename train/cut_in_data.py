"""Examples for the cut-in detector: user speech over a reply that takes the turn ("wait",
"stop", a new question, the rest of a question the reply started too soon into: "...
times eight") or only acknowledges it ("uh-huh", "right", "i see").

Duration alone gets both wrong: "stop" is over in 400 ms, sooner than a reply should give
way to a cough, and "yeah yeah right" outlasts it. So each phrase is spoken in a corpus
voice and judged where the session judges it: 250, 400 and 600 ms after the onset while
the user still speaks, and just after the speech ends (with the silence the VAD needs to
call it). Under it, some of the time, the agent's own voice at the level an echo
canceller leaves, and the noise the end-of-turn examples have.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

import numpy as np
import torch

from parley.config import FeatureConfig
from parley.llm.encoder import BlockCausalEncoder
from parley.train.lm_data import encode_utterance, trim_silence
from parley.train.turn_data import SAMPLE_RATE, cut_mid_phrase, pad_for_decision, with_echo
from parley.train.voices import Voice

# Words a listener says to keep the speaker going, and words that stop the speaker. A
# phrase joins one to three of them ("yeah right", "uh huh okay sure", "no wait stop"), so
# the head learns the words rather than a list of phrases. The held-out words are never in
# training: the held-out figures say how far it goes past its vocabulary.
BACKCHANNEL_WORDS = (
    "uh huh", "mm hmm", "mhm", "hmm", "mm", "yeah", "yes", "yep", "right", "okay", "i see",
    "sure", "got it", "gotcha", "oh", "ah", "wow", "nice", "cool", "alright", "true", "good",
    "fine", "oh yes", "exactly", "great", "of course", "absolutely", "totally", "indeed",
    "definitely", "perfect", "awesome", "oh really", "i know", "makes sense", "fair enough",
    "okay then", "oh nice", "uh huh yes",
)  # fmt: skip
TAKEOVER_WORDS = (
    "wait", "stop", "no", "hold on", "hang on", "sorry", "actually", "excuse me", "hey",
    "listen", "but", "pardon", "what", "never mind", "that is wrong", "let me ask",
    "one second", "wait a second", "one moment", "just a moment", "stop talking", "quiet",
    "cancel", "stop it", "wrong", "no no no", "hold it", "listen to me",
    "can you repeat", "what did you say", "i have a question", "shut up", "not that",
)  # fmt: skip
HELDOUT_BACKCHANNEL_WORDS = ("brilliant", "for sure", "wonderful", "very good", "neat")
HELDOUT_TAKEOVER_WORDS = ("halt", "not now", "cut it out", "silence", "whoa whoa")
PHRASES_PER_KIND = 40
DECISIONS_S = (0.25, 0.4, 0.6)
"""Seconds after the onset at which the session asks while the user still speaks."""
AFTER_END_S = 0.15  # the silence before the VAD calls the end of a short phrase


@dataclass
class CutInExample:
    frames: torch.Tensor  # the head's window of encoder frames, float16
    takes_turn: bool
    voice: str
    at: str  # "250ms", "400ms", "600ms" after the onset, or "end"
    text: str
    kind: str  # "backchannel", "command", "question" or "continuation"


def phrases(
    words: str, questions: Sequence[str], rng: random.Random, n: int = PHRASES_PER_KIND
) -> list[tuple[str, bool, str]]:
    """(text, takes the turn, kind): ``n`` backchannels, ``n`` commands, ``n`` new
    questions asked over the reply and ``n`` questions' second halves (a user going on
    after a pause the reply started in). ``words``: "train" draws the training words;
    "heldout" puts at least one held-out word in each phrase."""
    back, take = BACKCHANNEL_WORDS, TAKEOVER_WORDS
    new_back = HELDOUT_BACKCHANNEL_WORDS if words == "heldout" else ()
    new_take = HELDOUT_TAKEOVER_WORDS if words == "heldout" else ()

    def join(pool: Sequence[str], fresh: Sequence[str]) -> str:
        said = [rng.choice(pool) for _ in range(rng.choice((1, 1, 2, 2, 3)))]
        if fresh:
            said[rng.randrange(len(said))] = rng.choice(fresh)
        return " ".join(said)

    asked = rng.sample(list(questions), min(2 * n, len(questions)))
    rests = [rest for q in asked[n:] if (rest := rest_of(q, rng))]
    return (
        [(join(back, new_back), False, "backchannel") for _ in range(n)]
        + [(join(take, new_take), True, "command") for _ in range(n)]
        + [(q, True, "question") for q in asked[:n]]
        + [(r, True, "continuation") for r in rests]
    )


def rest_of(question: str, rng: random.Random) -> str | None:
    """What follows a cut mid-phrase in ``question`` ("times eight" of "what is seven
    times eight"); None for a question no cut can split."""
    head = cut_mid_phrase(question, rng)
    return None if head is None else question[len(head) :].strip(" ,")


def heard_at(speech: np.ndarray, at_s: float | None) -> tuple[np.ndarray, float]:
    """What the session has of ``speech`` when it asks: its first ``at_s`` seconds while
    the user is still speaking, or all of it and the silence that ends it (None)."""
    if at_s is None:
        return speech, AFTER_END_S
    return speech[: int(at_s * SAMPLE_RATE)], 0.0


def make_examples(
    spoken: Sequence[tuple[str, bool, str, Voice]],
    echo: np.ndarray,
    features: FeatureConfig,
    encoder: BlockCausalEncoder,
    window: Callable[[torch.Tensor], torch.Tensor],
    seed: int,
    progress: Callable[[Iterable], Iterable] = lambda it: it,
) -> list[CutInExample]:
    """Each (text, takes the turn, kind, voice) at every decision point it reaches."""
    rng = random.Random(f"cut-in:{seed}")
    out: list[CutInExample] = []
    for i, (text, takes, kind, voice) in enumerate(progress(spoken)):
        # From the first sound: the onset is where the session's clock for it starts.
        speech = trim_silence(voice.synthesize(text, voice.sample_params(rng)), 0.0, 0.02)
        ends = speech.size / SAMPLE_RATE
        for j, at_s in enumerate([*(d for d in DECISIONS_S if d < ends), None]):
            noise_rng = np.random.default_rng([seed, i, j])
            part, silence = heard_at(speech, at_s)
            audio = pad_for_decision(part, silence, noise_rng, noisy=rng.random() < 0.3)
            if rng.random() < 0.5:
                audio = with_echo(audio, echo, noise_rng)
            frames = window(encode_utterance(audio, features, encoder))
            at = "end" if at_s is None else f"{int(at_s * 1000)}ms"
            out.append(CutInExample(frames.half(), takes, voice.name, at, text, kind))
    return out
