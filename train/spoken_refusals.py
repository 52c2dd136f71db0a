"""Refusals of requests the corpus never asks: ``ood_more.txt`` spoken in training voices.

The corpus's training refusals draw from 149 out-of-domain sentences, and copies of them
(``--refusals``) teach the LM those sentences, not the rule: 81% of the 74 held-out
out-of-domain questions of ``evaluation/refusal_probe.py`` were refused by the session-13
model, the misses taken for small talk ("what is my name" → the "who" reply) or for a sum.
These examples ask 384 other requests, each sentence dealt in turn, in a training voice
and augmentation drawn as the corpus draws them; their audio lives in the work dir
(``WORK/lm/ood-user/``), made once.
"""

from __future__ import annotations

import hashlib
import random
from collections.abc import Callable, Iterable, Sequence
from functools import cache
from pathlib import Path

from parley.train.domain import REFUSAL, sentence_list
from parley.train.lm_data import Dialogue, Turn

AUDIO_DIR = "ood-user"
"""Where under ``WORK/lm`` the spoken requests go; also the start of their frame-cache keys."""


@cache
def more_ood_sentences() -> tuple[str, ...]:
    return sentence_list(Path(__file__).with_name("ood_more.txt"))


def spoken_refusals(
    dialogues: Sequence[Dialogue], share: float, seed: int, voices: Sequence[str] | None = None
) -> list[Dialogue]:
    """``share`` as many one-turn refusal dialogues as ``dialogues``, their requests dealt
    evenly from :func:`more_ood_sentences` (a fresh shuffle each round), each in a training
    voice (``voices``: the installed ones) with its own augmentation. Seeded."""
    from parley.train.corpus import training_utterance

    wanted = round(share * len(dialogues))
    if wanted == 0:
        return []
    rng = random.Random(f"spoken-refusals:{seed}")
    pool = list(voices) if voices is not None else None
    out: list[Dialogue] = []
    deck: list[str] = []
    for i in range(wanted):
        if not deck:
            deck = list(more_ood_sentences())
            rng.shuffle(deck)
        sentence = deck.pop()
        voice, plan = training_utterance(rng, pool)
        tag = hashlib.sha1(repr((sentence, voice, plan)).encode()).hexdigest()[:10]
        key = f"{AUDIO_DIR}/{i:05d}-{tag}.wav"
        meta = {
            "voice": voice,
            "turns": [{"intent": "refuse", "question": sentence, "augment": plan}],
        }
        out.append(Dialogue(f"ood-more-{i}", "train", [Turn(key, REFUSAL)], meta))
    return out


def render_refusals(
    dialogues: Iterable[Dialogue],
    work: Path,
    corpus: Path,
    progress: Callable[[Iterable], Iterable] = lambda it: it,
) -> None:
    """Speak every request of :func:`spoken_refusals`' dialogues into ``work`` (kept where
    it exists), with babble from ``corpus``'s training talkers."""
    from parley.train.corpus import render_question

    todo = [d for d in dialogues if not (Path(work) / d.turns[0].audio).is_file()]
    for d in progress(todo):
        turn = d.meta["turns"][0]
        render_question(
            d.meta["voice"], turn["question"], work, d.turns[0].audio, turn["augment"], corpus
        )


def is_spoken_refusal(key: str) -> bool:
    """Whether a frame-cache key names one of these requests (not a corpus file)."""
    return key.startswith(f"{AUDIO_DIR}/")
