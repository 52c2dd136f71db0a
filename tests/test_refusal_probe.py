"""The refusal probe: every held-out out-of-domain sentence in every held-out voice."""

import pytest

from parley.errors import ConfigError
from parley.evaluation.refusal_probe import CONDITION, main, probe_records, write_probe
from parley.evaluation.run_eval import load_heldout
from parley.train import domain
from parley.train.corpus import answer_path
from parley.train.voices import available_voices, missing_engines


def _held_voices():
    held = [v.name for v in available_voices() if v.split == "heldout"]
    if not held:
        pytest.skip(f"needs a held-out voice (flite rms or MBROLA us3): {missing_engines()}")
    return held


def test_the_probe_asks_each_held_out_sentence_in_each_held_out_voice():
    voices = _held_voices()
    records = probe_records()
    sentences = domain.ood_sentences(heldout=True)
    assert len(records) == len(voices) * len(sentences)
    for voice in voices:
        asked = [r["turns"][0]["question"] for r in records if r["voice"] == voice]
        assert asked == sentences
    turn = records[0]["turns"][0]
    assert turn["answer"] == domain.REFUSAL and turn["intent"] == "refuse"
    assert domain.is_heldout_phrasing(domain.refusal_turn(turn["question"]))
    with pytest.raises(ValueError, match="not an out-of-domain sentence"):
        domain.refusal_turn("what is seven times eight")


def test_eval_reads_the_probe_as_a_corpus(tmp_path, capsys):
    _held_voices()
    corpus = tmp_path / "corpus"
    refusal = corpus / answer_path(domain.REFUSAL)
    refusal.parent.mkdir(parents=True)
    refusal.write_bytes(b"RIFF")  # only copied, never read here
    out = tmp_path / "probe"
    main(["--out", str(out), "--corpus", str(corpus)])
    assert "questions in" in capsys.readouterr().out
    dialogues = load_heldout(out)
    assert len(dialogues) == len(probe_records())
    assert {d["condition"] for d in dialogues} == {CONDITION}
    assert (out / answer_path(domain.REFUSAL)).read_bytes() == b"RIFF"
    first = out / dialogues[0]["turns"][0]["audio"]
    stamp = first.stat().st_mtime_ns
    write_probe(out)  # a second call keeps what it made
    assert first.stat().st_mtime_ns == stamp
    with pytest.raises(ConfigError, match="no recording of the refusal"):
        write_probe(tmp_path / "other", tmp_path / "empty")


def test_an_unwritable_probe_folder_is_named(tmp_path):
    (tmp_path / "file").write_text("x")
    with pytest.raises(ConfigError, match="cannot write there"):
        write_probe(tmp_path / "file" / "probe")
