"""The cut-in detector: its phrases, and `train-turns --cut-in` on a tiny slice (the rules
it feeds are in tests/test_barge_in.py)."""

import json
import random

import numpy as np

from parley.train.cut_in_data import (
    BACKCHANNEL_WORDS,
    HELDOUT_BACKCHANNEL_WORDS,
    HELDOUT_TAKEOVER_WORDS,
    TAKEOVER_WORDS,
    heard_at,
    phrases,
    rest_of,
    with_echo,
)


def _has(text: str, words) -> bool:
    return any(f" {w} " in f" {text} " for w in words)


def test_phrases_keep_the_held_out_words_out_of_training():
    rng = random.Random(0)
    train = phrases("train", ["what is two plus two", "what day is after monday"], rng, 30)
    kinds = [k for _, _, k in train]
    assert kinds.count("backchannel") == 30 and kinds.count("command") == 30
    assert kinds.count("question") == 2  # as many questions as there are
    assert kinds.count("continuation") == 0  # none left over for second halves
    held = HELDOUT_BACKCHANNEL_WORDS + HELDOUT_TAKEOVER_WORDS
    assert not any(_has(text, held) for text, _, _ in train)
    for text, takes, kind in train:
        assert takes == (kind != "backchannel")
        if kind == "backchannel":
            assert _has(text, BACKCHANNEL_WORDS) and not _has(text, TAKEOVER_WORDS)
    heldout = phrases("heldout", ["q"], rng, 10)
    for text, _, kind in heldout:
        if kind == "backchannel":
            assert _has(text, HELDOUT_BACKCHANNEL_WORDS)
        elif kind == "command":
            assert _has(text, HELDOUT_TAKEOVER_WORDS)


def test_second_halves_are_what_follows_a_pause():
    rng = random.Random(0)
    rests = {rest_of("what is seven times eight", rng) for _ in range(40)}
    assert rests <= {"is seven times eight", "seven times eight", "times eight", "eight"}
    assert len(rests) > 1 and rest_of("hello", rng) is None


def test_what_the_session_has_heard_when_it_asks():
    speech = np.ones(16000, np.float32)
    part, silence = heard_at(speech, 0.25)
    assert part.size == 4000 and silence == 0.0  # still speaking: no silence yet
    part, silence = heard_at(speech, None)
    assert part.size == 16000 and silence > 0  # the end, and the silence that calls it
    rng = np.random.default_rng(0)
    echo = np.sin(np.arange(3000) / 5).astype(np.float32)  # shorter than the speech: tiled
    mixed = with_echo(speech * 0.1, echo, rng)
    under = mixed - speech * 0.1
    ratio_db = 10 * np.log10(np.mean((speech * 0.1) ** 2) / np.mean(under**2))
    assert mixed.shape == speech.shape and 20 <= ratio_db <= 40


def test_train_cut_in_on_a_tiny_slice_adds_a_traceable_detector(tiny_checkpoint, tmp_path):
    from parley.agent.cli import main
    from parley.agent.core.model import AgentModel
    from parley.config import load_config
    from parley.train.export import sha256_of
    from tests.test_turn_detection import tiny_slice

    corpus, ckpt, voices = tiny_slice(tiny_checkpoint, tmp_path, 6)
    argv = ["train-turns", "--cut-in", "--checkpoint", str(ckpt), "--corpus", str(corpus)]
    argv += ["--work", str(tmp_path / "work"), "--phrases", "2", "--epochs", "1"]
    argv += ["--voices", ",".join(voices), "--threads", "1", "--no-progress"]
    assert main(argv) == 0
    prov = json.loads((ckpt / "parley.json").read_text())["provenance"]["cut_in_detector"]
    assert prov["reproduce"].startswith("python run_agent.py train-turns --cut-in")
    assert f"--voices {','.join(voices)}" in prov["reproduce"]
    assert {"voices_all_takes", "voices_all_backchannel", "words_all_takes"} <= set(prov["heldout"])
    files = json.loads((ckpt / "parley.json").read_text())["provenance"]["files_sha256"]
    for name in ("cut_in/config.json", "cut_in/model.safetensors", "cut_in/metrics.json"):
        assert files[name] == sha256_of(ckpt / name)
    model = AgentModel.load(ckpt, load_config("tiny"))
    assert model.cut_in_detector is not None and model.turn_detector is None
