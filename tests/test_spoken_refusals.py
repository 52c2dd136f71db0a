"""Refusals of requests the corpus never asks: dealt evenly, seeded, never a held-out one."""

from collections import Counter

import numpy as np
import pytest

from parley.speech_io.audio import load_audio
from parley.train import domain
from parley.train.lm_data import Dialogue, Turn
from parley.train.spoken_refusals import (
    is_spoken_refusal,
    more_ood_sentences,
    render_refusals,
    spoken_refusals,
)
from parley.train.voices import VOICES, available_voices, missing_engines

TRAIN_VOICES = [v.name for v in VOICES if v.split == "train"]


def _dialogues(n):
    return [Dialogue(f"d{i}", "train", [Turn(f"user/d{i}_0.wav", "hello")], {}) for i in range(n)]


def test_the_requests_are_new_and_none_is_held_out():
    sentences = more_ood_sentences()
    assert len(sentences) == len(set(sentences)) >= 300
    known = set(domain.ood_sentences(heldout=False)) | set(domain.ood_sentences(heldout=True))
    assert not known & set(sentences)
    asked = {p for train, held in domain.PHRASINGS.values() for p in (*train, *held)}
    assert not asked & set(sentences)
    assert all(s == s.lower() and not any(c.isdigit() for c in s) for s in sentences)


def _word_edits(a: str, b: str) -> int:
    """Words inserted, deleted or swapped to turn ``a`` into ``b``."""
    x, y = a.split(), b.split()
    row = list(range(len(y) + 1))
    for i, word in enumerate(x, 1):
        prev, row = row, [i] + [0] * len(y)
        for j, other in enumerate(y, 1):
            row[j] = min(prev[j] + 1, row[j - 1] + 1, prev[j - 1] + (word != other))
    return row[-1]


def test_no_request_is_one_word_from_a_held_out_one():
    # "what is a verb" beside a held-out "what is a noun" would teach the probe's answer.
    held = domain.ood_sentences(heldout=True)
    close = [(s, h) for s in more_ood_sentences() for h in held if _word_edits(s, h) <= 1]
    assert close == []
    assert _word_edits("what is a verb", "what is a noun") == 1


def test_every_request_is_dealt_before_any_comes_again():
    n = len(more_ood_sentences())
    made = spoken_refusals(_dialogues(n), 2.0, seed=1, voices=TRAIN_VOICES)
    asked = Counter(d.meta["turns"][0]["question"] for d in made)
    assert len(made) == 2 * n and set(asked.values()) == {2}
    assert all(d.turns[0].answer == domain.REFUSAL and d.split == "train" for d in made)
    keys = [d.turns[0].audio for d in made]
    assert len(set(keys)) == len(keys) and all(is_spoken_refusal(k) for k in keys)
    assert {d.meta["voice"] for d in made} <= set(TRAIN_VOICES)
    again = spoken_refusals(_dialogues(n), 2.0, seed=1, voices=TRAIN_VOICES)
    assert [d.turns[0].audio for d in again] == keys
    assert spoken_refusals(_dialogues(n), 2.0, seed=2, voices=TRAIN_VOICES) != made
    assert spoken_refusals(_dialogues(10), 0.0, seed=1) == []


def test_requests_are_spoken_once_into_the_work_dir(tmp_path):
    espeak = [v.name for v in available_voices() if v.engine == "espeak" and v.split == "train"]
    if not espeak:
        pytest.skip(f"needs espeak-ng: {missing_engines()}")
    made = spoken_refusals(_dialogues(3), 1.0, seed=0, voices=espeak[:1])
    render_refusals(made, tmp_path / "work", tmp_path / "corpus")
    paths = [tmp_path / "work" / d.turns[0].audio for d in made]
    audio = [load_audio(p, 16000) for p in paths]
    assert all(a.size > 16000 // 4 and np.isfinite(a).all() for a in audio)
    before = [p.stat().st_mtime_ns for p in paths]
    render_refusals(made, tmp_path / "work", tmp_path / "corpus")
    assert [p.stat().st_mtime_ns for p in paths] == before
