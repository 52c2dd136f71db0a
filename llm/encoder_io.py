"""The ``encoder/`` part of a checkpoint, in HF Whisper layout.

We write a ``WhisperConfig`` and the encoder's tensors under the ``encoder.`` prefix that
``WhisperModel`` uses, so the directory is a Whisper checkpoint without a decoder. We read
any local HF Whisper checkpoint: ``WhisperModel`` (``encoder.``),
``WhisperForConditionalGeneration`` (``model.encoder.``) or a bare encoder (no prefix), in
one safetensors file, sharded safetensors, or ``pytorch_model.bin``; and a CTranslate2
(faster-whisper) model directory, whose ``model.bin`` holds the same encoder.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from transformers import WhisperConfig
from transformers.models.whisper.modeling_whisper import WhisperEncoder

from parley.config import EncoderConfig
from parley.errors import CheckpointError
from parley.llm.ct2_whisper import is_ct2_model, load_ct2_encoder
from parley.weights import load_state, read_tensors, save_state

PREFIXES = ("model.encoder.", "encoder.")


def encoder_config_from(whisper: WhisperConfig, base: EncoderConfig) -> EncoderConfig:
    """Our EncoderConfig for a Whisper encoder, keeping ``base``'s streaming settings."""
    return EncoderConfig(
        d_model=whisper.d_model,
        layers=whisper.encoder_layers,
        heads=whisper.encoder_attention_heads,
        ffn_dim=whisper.encoder_ffn_dim,
        max_source_positions=whisper.max_source_positions,
        block_frames=base.block_frames,
        context_blocks=min(base.context_blocks, whisper.max_source_positions // base.block_frames),
    )


def _read_any(path: Path) -> dict[str, torch.Tensor]:
    if (path / "model.safetensors").is_file():
        return read_tensors(path / "model.safetensors")
    index = path / "model.safetensors.index.json"
    if index.is_file():
        shards = sorted(set(json.loads(index.read_text())["weight_map"].values()))
        tensors: dict[str, torch.Tensor] = {}
        for shard in shards:
            tensors.update(read_tensors(path / shard))
        return tensors
    if (path / "pytorch_model.bin").is_file():
        return torch.load(path / "pytorch_model.bin", map_location="cpu", weights_only=True)
    raise CheckpointError(
        f"{path}: no weights (expected model.safetensors, model.safetensors.index.json "
        "or pytorch_model.bin)"
    )


def load_encoder(path: Path) -> tuple[WhisperEncoder, WhisperConfig]:
    """The encoder of a local Whisper directory: HF layout (ours or any other) or CTranslate2."""
    path = Path(path)
    if is_ct2_model(path):
        return load_ct2_encoder(path)
    if not (path / "config.json").is_file():
        raise CheckpointError(f"missing checkpoint file: {path / 'config.json'}")
    try:
        config = WhisperConfig.from_pretrained(path)
    except (OSError, ValueError) as exc:
        raise CheckpointError(f"{path / 'config.json'}: not a Whisper config ({exc})") from None
    if config.model_type != "whisper":
        raise CheckpointError(f"{path}: model_type is {config.model_type!r}, expected 'whisper'")
    tensors = _read_any(path)
    for prefix in PREFIXES:
        if any(k.startswith(prefix) for k in tensors):
            tensors = {k[len(prefix) :]: v for k, v in tensors.items() if k.startswith(prefix)}
            break
    encoder = WhisperEncoder(config)
    # Older Whisper checkpoints store the fixed sinusoidal table; newer ones may omit it.
    if "embed_positions.weight" not in tensors:
        tensors["embed_positions.weight"] = encoder.embed_positions.weight.detach().clone()
    load_state(encoder, tensors, f"encoder weights in {path}")
    return encoder.eval(), config


def save_encoder(encoder: WhisperEncoder, path: Path) -> None:
    """Write ``encoder`` as an HF Whisper checkpoint directory."""
    path.mkdir(parents=True, exist_ok=True)
    encoder.config.save_pretrained(path)
    save_state(encoder, path / "model.safetensors", prefix="encoder.")
