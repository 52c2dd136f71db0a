"""The ``vocoder/`` part of a checkpoint: speech tokenizer and token vocoder.

::

    config.json                    the CodecConfig, plus "format" and "version"
    vocoder.safetensors            TokenVocoder weights
    speech_tokenizer.safetensors   SpeechTokenizer weights

Writing is byte-deterministic (sorted keys, contiguous tensors, fixed metadata), so the
same config and seed give the same files. Reading checks everything and fails with a
:class:`~parley.errors.CheckpointError` that names the file, key or tensor at fault.
"""

from __future__ import annotations

import json
from pathlib import Path

from pydantic import ValidationError

from parley.config import CodecConfig
from parley.errors import CheckpointError
from parley.tokenizers.speech_tokenizer import SpeechTokenizer
from parley.tokenizers.vocoder import TokenVocoder
from parley.weights import load_file_into, save_state

CODEC_DIR = "vocoder"
"""Where this part sits inside a Parley checkpoint directory."""

CODEC_FORMAT = "parley-codec"
CODEC_FORMAT_VERSION = 1
CONFIG_FILE = "config.json"
VOCODER_FILE = "vocoder.safetensors"
TOKENIZER_FILE = "speech_tokenizer.safetensors"


def build_codec(cfg: CodecConfig, seed: int) -> tuple[TokenVocoder, SpeechTokenizer]:
    """A seeded random vocoder and speech tokenizer; the same seed gives the same weights."""
    return TokenVocoder(cfg, seed=seed).eval(), SpeechTokenizer(cfg, seed=seed).eval()


def save_codec(
    directory: Path | str,
    vocoder: TokenVocoder,
    tokenizer: SpeechTokenizer,
    cfg: CodecConfig,
) -> Path:
    """Write the codec part into ``directory`` (created if needed); returns it."""
    if vocoder.cfg != cfg or tokenizer.cfg != cfg:
        raise ValueError("save_codec: the vocoder and tokenizer must be built from `cfg`")
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    meta = {"format": CODEC_FORMAT, "version": CODEC_FORMAT_VERSION, **cfg.model_dump(mode="json")}
    (directory / CONFIG_FILE).write_text(json.dumps(meta, indent=2, sort_keys=True) + "\n")
    save_state(vocoder, directory / VOCODER_FILE)
    save_state(tokenizer, directory / TOKENIZER_FILE)
    return directory


def load_codec(
    directory: Path | str, expected_cfg: CodecConfig | None = None
) -> tuple[TokenVocoder, SpeechTokenizer, CodecConfig]:
    """Read the codec part at ``directory``; with ``expected_cfg``, it must match it."""
    directory = Path(directory)
    if not directory.is_dir():
        raise CheckpointError(f"codec checkpoint directory not found: {directory}")
    for name in (CONFIG_FILE, VOCODER_FILE, TOKENIZER_FILE):
        if not (directory / name).is_file():
            raise CheckpointError(f"missing codec checkpoint file: {directory / name}")
    cfg = read_codec_config(directory / CONFIG_FILE)
    if expected_cfg is not None:
        _check_same_config(cfg, expected_cfg, directory / CONFIG_FILE)
    vocoder, tokenizer = build_codec(cfg, seed=0)
    load_file_into(vocoder, directory / VOCODER_FILE)
    load_file_into(tokenizer, directory / TOKENIZER_FILE)
    return vocoder, tokenizer, cfg


def read_codec_config(path: Path) -> CodecConfig:
    """The CodecConfig stored in a codec ``config.json``, format and version checked."""
    try:
        raw = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise CheckpointError(f"{path}: not a readable JSON file ({exc})") from None
    if not isinstance(raw, dict):
        raise CheckpointError(f"{path}: expected a JSON object")
    fmt, version = raw.pop("format", None), raw.pop("version", None)
    if fmt != CODEC_FORMAT:
        raise CheckpointError(f"{path}: format is {fmt!r}, expected {CODEC_FORMAT!r}")
    if version != CODEC_FORMAT_VERSION:
        raise CheckpointError(
            f"{path}: version {version!r}; this Parley reads version {CODEC_FORMAT_VERSION}"
        )
    try:
        return CodecConfig.model_validate(raw)
    except ValidationError as exc:
        first = exc.errors()[0]
        key = ".".join(str(p) for p in first["loc"]) or "(top level)"
        raise CheckpointError(f"{path}: {key}: {first['msg']}") from None


def _check_same_config(found: CodecConfig, expected: CodecConfig, path: Path) -> None:
    have, want = found.model_dump(), expected.model_dump()
    diffs = [
        f"{k} is {have[k]!r}, expected {want[k]!r}" for k in sorted(want) if have[k] != want[k]
    ]
    if diffs:
        raise CheckpointError(f"{path}: codec config mismatch: " + "; ".join(diffs))
