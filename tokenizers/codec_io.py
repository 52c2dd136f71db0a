"""The ``vocoder/`` part of a checkpoint: speech tokenizer and token vocoder.

::

    config.json                    the CodecConfig, plus "format" and "version"
    vocoder.safetensors            TokenVocoder weights
    speech_tokenizer.safetensors   SpeechTokenizer weights; for tokenizer "whisper-units"
                                   the codebook and the fingerprint of the encoder and
                                   features it was fitted on (the encoder is the checkpoint's)

Writing is byte-deterministic (sorted keys, contiguous tensors, fixed metadata), so the
same config and seed give the same files. Reading checks everything and fails with a
:class:`~parley.errors.CheckpointError` that names the file, key or tensor at fault.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from pydantic import ValidationError
from safetensors.torch import save_file

from parley.config import CodecConfig, FeatureConfig
from parley.errors import CheckpointError
from parley.llm.encoder import BlockCausalEncoder
from parley.tokenizers.speech_tokenizer import SpeechTokenizer
from parley.tokenizers.unit_tokenizer import UnitTokenizer, encoder_fingerprint
from parley.tokenizers.vocoder import TokenVocoder, seeded_generator
from parley.weights import load_file_into, read_tensors, save_state

CODEC_DIR = "vocoder"
"""Where this part sits inside a Parley checkpoint directory."""

CODEC_FORMAT = "parley-codec"
CODEC_FORMAT_VERSION = 1
CONFIG_FILE = "config.json"
VOCODER_FILE = "vocoder.safetensors"
TOKENIZER_FILE = "speech_tokenizer.safetensors"
CODEBOOK_KEY = "codebook"
FINGERPRINT_KEY = "encoder_sha256"

AnyTokenizer = SpeechTokenizer | UnitTokenizer
"""Either speech tokenizer: both map 16 kHz audio to ids with ``encode``."""


def build_codec(
    cfg: CodecConfig,
    seed: int,
    encoder: BlockCausalEncoder | None = None,
    features: FeatureConfig | None = None,
) -> tuple[TokenVocoder, AnyTokenizer]:
    """A seeded random vocoder and speech tokenizer; the same seed gives the same weights.

    Tokenizer "whisper-units" needs the checkpoint's ``encoder`` and ``features``; its
    random codebook is N(0, 1) of the encoder's width.
    """
    vocoder = TokenVocoder(cfg, seed=seed).eval()
    if cfg.tokenizer == "stft":
        return vocoder, SpeechTokenizer(cfg, seed=seed).eval()
    encoder, features = _unit_inputs(encoder, features, "build_codec")
    gen = seeded_generator(seed, salt=2)
    codebook = torch.randn(cfg.codebook_size, encoder.d_model, generator=gen)
    return vocoder, UnitTokenizer(encoder, features, codebook, cfg.frames_per_unit, cfg.unit_window)


def save_codec(
    directory: Path | str,
    vocoder: TokenVocoder,
    tokenizer: AnyTokenizer,
    cfg: CodecConfig,
) -> Path:
    """Write the codec part into ``directory`` (created if needed); returns it."""
    if vocoder.cfg != cfg:
        raise ValueError("save_codec: the vocoder must be built from `cfg`")
    if isinstance(tokenizer, UnitTokenizer):
        if cfg.tokenizer != "whisper-units" or (
            tokenizer.codebook_size != cfg.codebook_size
            or tokenizer.frames_per_unit != cfg.frames_per_unit
            or tokenizer.samples_per_token != cfg.samples_per_token
            or tokenizer.window != cfg.unit_window
        ):
            raise ValueError(
                f"save_codec: a UnitTokenizer of {tokenizer.codebook_size} units x "
                f"{tokenizer.frames_per_unit} frames (window {tokenizer.window}) does not fit "
                f"`cfg` (tokenizer {cfg.tokenizer!r}, {cfg.codebook_size} codes, "
                f"{cfg.frames_per_unit} frames, window {cfg.unit_window})"
            )
    elif cfg.tokenizer != "stft" or tokenizer.cfg != cfg:
        raise ValueError("save_codec: the tokenizer must be built from `cfg`")
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    meta = {"format": CODEC_FORMAT, "version": CODEC_FORMAT_VERSION, **cfg.model_dump(mode="json")}
    (directory / CONFIG_FILE).write_text(json.dumps(meta, indent=2, sort_keys=True) + "\n")
    save_state(vocoder, directory / VOCODER_FILE)
    if isinstance(tokenizer, UnitTokenizer):
        fingerprint = encoder_fingerprint(tokenizer.encoder, tokenizer.features, tokenizer.window)
        tensors = {
            CODEBOOK_KEY: tokenizer.codebook.contiguous(),
            FINGERPRINT_KEY: torch.frombuffer(bytearray(fingerprint), dtype=torch.uint8),
        }
        save_file(tensors, str(directory / TOKENIZER_FILE), metadata={"format": "pt"})
    else:
        save_state(tokenizer, directory / TOKENIZER_FILE)
    return directory


def load_codec(
    directory: Path | str,
    expected_cfg: CodecConfig | None = None,
    encoder: BlockCausalEncoder | None = None,
    features: FeatureConfig | None = None,
) -> tuple[TokenVocoder, AnyTokenizer, CodecConfig]:
    """Read the codec part at ``directory``; with ``expected_cfg``, it must match it.

    Tokenizer "whisper-units" runs on the checkpoint's ``encoder`` and ``features``, which
    must be the ones its codebook was fitted on.
    """
    directory = Path(directory)
    if not directory.is_dir():
        raise CheckpointError(f"codec checkpoint directory not found: {directory}")
    for name in (CONFIG_FILE, VOCODER_FILE, TOKENIZER_FILE):
        if not (directory / name).is_file():
            raise CheckpointError(f"missing codec checkpoint file: {directory / name}")
    cfg = read_codec_config(directory / CONFIG_FILE)
    if expected_cfg is not None:
        _check_same_config(cfg, expected_cfg, directory / CONFIG_FILE)
    vocoder = TokenVocoder(cfg, seed=0).eval()
    load_file_into(vocoder, directory / VOCODER_FILE)
    if cfg.tokenizer == "stft":
        tokenizer = SpeechTokenizer(cfg, seed=0).eval()
        load_file_into(tokenizer, directory / TOKENIZER_FILE)
        return vocoder, tokenizer, cfg
    return vocoder, _load_units(directory / TOKENIZER_FILE, cfg, encoder, features), cfg


def _unit_inputs(
    encoder: BlockCausalEncoder | None, features: FeatureConfig | None, where: str
) -> tuple[BlockCausalEncoder, FeatureConfig]:
    if encoder is None or features is None:
        raise ValueError(
            f"{where}: tokenizer 'whisper-units' runs on the checkpoint's Whisper encoder; "
            "pass `encoder` and `features`"
        )
    return encoder, features


def _load_units(
    path: Path,
    cfg: CodecConfig,
    encoder: BlockCausalEncoder | None,
    features: FeatureConfig | None,
) -> UnitTokenizer:
    if encoder is None or features is None:
        raise CheckpointError(
            f"{path}: tokenizer 'whisper-units' needs the checkpoint's encoder and features "
            "(load the whole checkpoint with load_checkpoint)"
        )
    tensors = read_tensors(path)
    extra = sorted(set(tensors) - {CODEBOOK_KEY, FINGERPRINT_KEY})
    missing = [k for k in (CODEBOOK_KEY, FINGERPRINT_KEY) if k not in tensors]
    if missing or extra:
        raise CheckpointError(
            f"{path}: expected tensors {CODEBOOK_KEY!r} and {FINGERPRINT_KEY!r}; "
            f"missing {missing}, unexpected {extra}"
        )
    codebook, stored = tensors[CODEBOOK_KEY], tensors[FINGERPRINT_KEY]
    want = (cfg.codebook_size, encoder.d_model)
    if tuple(codebook.shape) != want or codebook.dtype != torch.float32:
        raise CheckpointError(
            f"{path}: {CODEBOOK_KEY!r} has shape {tuple(codebook.shape)} ({codebook.dtype}), "
            f"expected {want} (torch.float32)"
        )
    if stored.dtype != torch.uint8 or stored.numel() != 32:
        raise CheckpointError(f"{path}: {FINGERPRINT_KEY!r} must be 32 uint8 (a SHA-256)")
    if bytes(stored.tolist()) != encoder_fingerprint(encoder, features, cfg.unit_window):
        raise CheckpointError(
            f"{path}: the codebook was fitted on another encoder or other features than this "
            "checkpoint's (weights, blocking or FeatureConfig differ); its units would be wrong"
        )
    return UnitTokenizer(encoder, features, codebook, cfg.frames_per_unit, cfg.unit_window)


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
