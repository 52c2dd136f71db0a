"""The synthetic corpus: domain answers, augmentation, and a tiny make-corpus run."""

from __future__ import annotations

import json
import random
import re
import shutil

import numpy as np
import pytest
import soundfile as sf

from parley.agent.cli import main
from parley.train import augment as aug
from parley.train.corpus import CorpusOptions, make_corpus, plan_corpus, select_voices
from parley.train.domain import (
    ARITHMETIC,
    DAYS,
    DEFAULT_MIX,
    INTENTS,
    MONTHS,
    PHRASINGS,
    REFUSAL,
    all_answers,
    is_heldout_phrasing,
    make_dialogue,
    number_words,
    ood_sentences,
    question_templates,
)
from parley.train.voices import VOICES, agent_voice, available_voices, missing_engines

WORDS = {number_words(n): n for n in range(10000)}


def _dialogues(n: int, seed: int = 0, **kw) -> list:
    rng = random.Random(seed)
    return [make_dialogue(rng, **kw) for _ in range(n)]


def _value(words: str) -> int:
    return WORDS[words]


def _check_arith(answer: str) -> int:
    m = re.fullmatch(r"(.+) (plus|minus|times) (.+) is (.+)", answer)
    assert m, answer
    a, op, b, r = _value(m[1]), m[2], _value(m[3]), _value(m[4])
    assert r == {"plus": a + b, "minus": a - b, "times": a * b}[op], answer
    assert r >= 0
    return r


def _check_seq(answer: str) -> str:
    m = re.fullmatch(r"the (number|day|month) (after|before) (.+) is (.+)", answer)
    assert m, answer
    kind, step, item, res = m[1], 1 if m[2] == "after" else -1, m[3], m[4]
    if kind == "number":
        assert _value(res) == _value(item) + step, answer
    else:
        names = DAYS if kind == "day" else MONTHS
        assert names[(names.index(item) + step) % len(names)] == res, answer
    return res


def test_number_words():
    assert number_words(0) == "zero"
    assert number_words(13) == "thirteen"
    assert number_words(56) == "fifty six"
    assert number_words(100) == "one hundred"
    assert number_words(112) == "one hundred twelve"
    assert number_words(2000) == "two thousand"
    assert number_words(9999) == "nine thousand nine hundred ninety nine"
    assert len(WORDS) == 10000  # every spelling distinct
    with pytest.raises(ValueError):
        number_words(10000)


def test_answers_are_right_and_spelled_in_words():
    for d in _dialogues(3000):
        for t in d.turns:
            assert not re.search(r"[^a-z ]", t.answer), t.answer
            assert t.key in t.answer, t
            if t.intent not in ("hello", "thanks", "who", "hear", "goodbye", "refuse"):
                assert t.answer.endswith(" " + t.key), t
            assert not re.search(r"\d", t.question)
            if t.intent in ARITHMETIC:
                _check_arith(t.answer)
                assert all(
                    _value(w) <= 12 for w in re.split(r" (?:plus|minus|times|is) ", t.answer)[:2]
                )
            elif "_" in t.intent:
                _check_seq(t.answer)
            elif t.intent == "refuse":
                assert t.answer == REFUSAL


def test_wraparound():
    answers = set(all_answers())
    assert "the day after sunday is monday" in answers
    assert "the day before monday is sunday" in answers
    assert "the month after december is january" in answers
    assert "the month before january is december" in answers
    assert "seven times eight is fifty six" in answers
    assert "fifty six times two is one hundred twelve" in answers


def test_followups_work_on_the_previous_answer():
    dialogues = _dialogues(600, intents={"followup"})
    assert all(len(d.turns) == 2 and d.turns[1].intent == "followup" for d in dialogues)
    kinds = set()
    for d in dialogues:
        first, second = d.turns
        if " after " in second.answer or " before " in second.answer:
            item = re.fullmatch(r"the \w+ \w+ (.+) is .+", second.answer)[1]
            assert item == first.key, d
            _check_seq(second.answer)
            kinds.add("seq")
        else:
            assert second.answer.startswith(first.key + " "), d
            _check_arith(second.answer)
            kinds.add("arith")
    assert kinds == {"seq", "arith"}


def test_every_answer_is_listed_and_mix_is_roughly_kept():
    answers = set(all_answers())
    dialogues = _dialogues(4000, seed=3)
    assert {t.answer for d in dialogues for t in d.turns} <= answers
    firsts = [d.turns[0].intent for d in dialogues]
    share = sum(i in ARITHMETIC for i in firsts) / len(firsts)
    two_turn = sum(len(d.turns) == 2 for d in dialogues) / len(dialogues)
    # A follow-up's first turn is a sum a third of the time (3 of the 9 followable intents).
    expected = DEFAULT_MIX["arithmetic"] + DEFAULT_MIX["followup"] * len(ARITHMETIC) / 9
    assert share == pytest.approx(expected, abs=0.03)
    assert two_turn == pytest.approx(DEFAULT_MIX["followup"], abs=0.02)


def test_heldout_phrasings_never_in_training_mode():
    train = _dialogues(4000, seed=1)
    held = _dialogues(1500, seed=1, heldout_phrasing=True)
    assert not any(is_heldout_phrasing(t) for d in train for t in d.turns)
    assert all(is_heldout_phrasing(t) for d in held for t in d.turns)
    train_q = {t.question for d in train for t in d.turns if t.intent == "refuse"}
    held_q = {t.question for d in held for t in d.turns if t.intent == "refuse"}
    strip = lambda q: q.split(", ", 1)[-1].replace(" uh", "").replace(" um", "")  # noqa: E731
    assert {strip(q) for q in train_q}.isdisjoint({strip(q) for q in held_q})
    phrasings = {(t.intent, t.phrasing) for d in held for t in d.turns if t.intent != "refuse"}
    assert len(phrasings) >= 2 * 15  # two held-out phrasings for every intent, all used


def test_no_out_of_domain_sentence_is_also_a_question_of_the_domain():
    # "are you a robot" was both a "who" phrasing and a refusal: one question, two answers.
    asked = {p for train, held in PHRASINGS.values() for p in (*train, *held)}
    ood = [*ood_sentences(heldout=False), *ood_sentences(heldout=True)]
    assert len(ood) == len(set(ood)) and asked.isdisjoint(ood)


@pytest.mark.parametrize(
    "intent",
    [*(i for i in INTENTS if i not in ("followup", "refuse")), "followup_arith", "followup_seq"],
)
def test_heldout_templates_are_worded_as_no_training_template(intent: str) -> None:
    train, held = question_templates(intent), question_templates(intent, heldout=True)
    assert len(train) >= 5 and len(held) >= 2
    assert set(train).isdisjoint(held)


def test_seeded():
    assert _dialogues(50, seed=7) == _dialogues(50, seed=7)
    assert _dialogues(50, seed=7) != _dialogues(50, seed=8)
    voices = [v for v in VOICES if v.engine == "espeak" or v.split == "heldout"]
    assert plan_corpus(20, 2, 5, voices) == plan_corpus(20, 2, 5, voices)
    # Growing the corpus keeps the dialogues already made.
    assert plan_corpus(30, 2, 5, voices)[:20] == plan_corpus(20, 2, 5, voices)[:20]


@pytest.fixture
def speech() -> np.ndarray:
    rng = np.random.default_rng(0)
    t = np.arange(24000) / 16000
    env = (np.sin(2 * np.pi * 3 * t) > 0).astype(np.float32)
    return (0.3 * env * np.sin(2 * np.pi * 180 * t) + 0.01 * rng.standard_normal(len(t))).astype(
        np.float32
    )


@pytest.mark.parametrize("kind", aug.NOISE_KINDS)
@pytest.mark.parametrize("snr_db", [0.0, 10.0, 20.0])
def test_add_noise_hits_the_snr(speech, kind, snr_db):
    pool = [speech[::-1].copy(), speech * 0.5, np.roll(speech, 999)]
    quiet = speech * 0.3  # no clip guard: the noise is exactly noisy - speech
    noisy = aug.add_noise(quiet, kind, snr_db, np.random.default_rng(1), pool)
    assert noisy.shape == quiet.shape and np.isfinite(noisy).all()
    assert np.abs(noisy).max() < aug.PEAK
    noise = noisy.astype(float) - quiet
    measured = 10 * np.log10(np.sum(quiet.astype(float) ** 2) / np.sum(noise**2))
    assert abs(measured - snr_db) < 0.5


def test_augment_keeps_length_and_is_seeded(speech):
    pool = [speech[::-1].copy()]
    for seed in range(20):
        out, desc = aug.augment(speech, random.Random(seed), pool)
        again, _ = aug.augment(speech, random.Random(seed), pool)
        np.testing.assert_array_equal(out, again)
        assert np.isfinite(out).all() and np.abs(out).max() <= 1.0
        assert len(out) == pytest.approx(len(speech) / desc.get("speed", 1.0), abs=2)
        json.dumps(desc)
    for part in (
        aug.shift_pitch(speech, 1.5),
        aug.shift_pitch(speech, -2.0),
        aug.reverb(speech, 0.4, np.random.default_rng(0)),
        aug.apply_gain(speech, -6.0),
    ):
        assert part.shape == speech.shape and np.isfinite(part).all()


def test_pitch_shift_moves_the_pitch():
    t = np.arange(16000) / 16000
    tone = np.sin(2 * np.pi * 200 * t).astype(np.float32)
    shifted = aug.shift_pitch(tone, 12.0)
    spec = np.abs(np.fft.rfft(shifted[4000:12000]))
    assert np.fft.rfftfreq(8000, 1 / 16000)[np.argmax(spec)] == pytest.approx(400, abs=5)


def test_heldout_voices_differ_in_engine_and_stay_out_of_training():
    held = [v for v in VOICES if v.split == "heldout"]
    assert len(held) >= 2 and len({v.engine for v in held}) >= 2
    assert any(v.engine != "espeak" for v in held)
    assert agent_voice().engine == "piper"
    plan = plan_corpus(200, 1, 0, list(VOICES))
    assert {r["voice"] for r in plan if r["split"] == "train"}.isdisjoint({v.name for v in held})


def _corpus_voices() -> list[str]:
    """One voice per available engine (all of them in CI), keeping a held-out one."""
    have = available_voices()
    if not any(v.engine == "espeak" for v in have) or not agent_voice().available():
        pytest.skip(f"needs espeak-ng and Piper joe: {missing_engines()}")
    picked: dict[str, str] = {}
    for v in have:
        picked.setdefault(f"{v.engine}-{v.split}", v.name)
    return sorted(picked.values())


def test_make_corpus_tiny(tmp_path):
    voices = _corpus_voices()
    out = tmp_path / "corpus"
    args = ["make-corpus", "--out", str(out), "--dialogues", "6", "--heldout", "1"]
    args += ["--workers", "1", "--quiet", "--voices", ",".join(voices), "--seed", "3"]
    assert main(args) == 0
    records = [json.loads(line) for line in (out / "manifest.jsonl").read_text().splitlines()]
    conditions = {r["condition"] for r in records}
    assert {
        "train",
        "clean",
        "phrasing",
        "noise-white",
        "noise-brown",
        "noise-babble",
    } <= conditions
    for r in records:
        for t in r["turns"]:
            audio, rate = sf.read(out / t["audio"], dtype="float32")
            info = sf.info(str(out / t["audio"]))
            assert rate == 16000 and audio.ndim == 1 and info.subtype == "PCM_16"
            lead = np.flatnonzero(np.abs(audio) > 0.05 * np.abs(audio).max())[0] / rate
            if r["noise"] is None and "noise" not in t["augment"]:
                assert 0.08 <= lead <= 0.5, (t["audio"], lead)
    answers = [
        json.loads(line) for line in (out / "agent" / "answers.jsonl").read_text().splitlines()
    ]
    assert {a["answer"] for a in answers} == {t["answer"] for r in records for t in r["turns"]}
    assert all((out / a["audio"]).is_file() and a["duration_s"] > 0.3 for a in answers)

    # Same seed: the same manifest; a second run finds every file made and resumes.
    manifest = (out / "manifest.jsonl").read_bytes()
    first = sorted(p.name for p in (out / "user").iterdir())
    (out / "user" / first[0]).unlink()
    summary = make_corpus(
        CorpusOptions(out, 6, 1, seed=3, workers=1, voices=tuple(voices), progress=False),
        log=lambda _: None,
    )
    assert summary["made"] == 1 and (out / "manifest.jsonl").read_bytes() == manifest
    # A different seed into the same folder is refused (exit 2, one line).
    assert main([*args[:-1], "4"]) == 2
    # Fewer dialogues than it holds would drop some from the manifest: refused, nothing lost.
    fewer = [a if a != "6" else "5" for a in args]
    assert main(fewer) == 2 and (out / "manifest.jsonl").read_bytes() == manifest


def test_make_corpus_clear_errors(tmp_path, capsys):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    code = main(["make-corpus", "--out", str(blocker / "sub"), "--dialogues", "1", "--quiet"])
    err = capsys.readouterr().err
    # Found by the preflight, before any engine is looked for: one line naming the flag.
    assert code == 2 and "--out" in err and "not a directory" in err
    assert len(err.strip().splitlines()) == 1
    with pytest.raises(Exception, match="unknown voice"):
        select_voices(["no-such-voice"])


@pytest.mark.skipif(shutil.which("espeak-ng") is None, reason="needs espeak-ng")
def test_every_available_voice_speaks():
    for v in available_voices():
        audio = v.synthesize("what is seven times eight", v.sample_params(random.Random(0)))
        assert audio.dtype == np.float32 and audio.ndim == 1 and np.isfinite(audio).all()
        assert 0.5 < len(audio) / 16000 < 5 and np.abs(audio).max() > 0.05, v.name
