"""The Parley checkpoint directory: write it, check it, load it.

::

    parley.json           root config: format version, model config, vocabulary layout
    encoder/              HF Whisper layout (config.json, model.safetensors)
    adapter.safetensors   frame stacking + MLP into the LM's embedding space
    lm/                   a plain HF causal-LM directory with the speech and special tokens
    vocoder/              speech tokenizer and streaming token vocoder

Every part is checked on load; a missing or mismatched file or tensor is a
:class:`~parley.errors.CheckpointError` that names it.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import torch
from pydantic import BaseModel, ConfigDict, ValidationError
from transformers import (
    AutoConfig,
    AutoModelForCausalLM,
    AutoTokenizer,
    PreTrainedModel,
    PreTrainedTokenizerBase,
)

from parley.config import CHECKPOINT_FORMAT_VERSION, ModelConfig
from parley.errors import CheckpointError
from parley.llm.adapter import Adapter
from parley.llm.encoder import BlockCausalEncoder
from parley.llm.encoder_io import load_encoder
from parley.llm.lm_build import embedding_table
from parley.tokenizers.codec_io import AnyTokenizer, load_codec
from parley.tokenizers.vocab import VocabLayout
from parley.tokenizers.vocoder import TokenVocoder
from parley.weights import load_file_into, read_input_embeddings, read_tensors

ROOT_CONFIG = "parley.json"
TUNED_ENCODER_FILE = "encoder_tuned.safetensors"
REQUIRED_FILES = (
    ROOT_CONFIG,
    "encoder/config.json",
    "encoder/model.safetensors",
    "adapter.safetensors",
    "lm/config.json",
    "lm/tokenizer.json",
    "vocoder/config.json",
)


class Manifest(BaseModel):
    """The checkpoint's root config."""

    model_config = ConfigDict(extra="forbid")

    format: Literal["parley-checkpoint"] = "parley-checkpoint"
    format_version: int = CHECKPOINT_FORMAT_VERSION
    model: ModelConfig
    vocab: VocabLayout
    lm_hidden: int
    seed: int | None = None
    sources: dict[str, str] = {}
    provenance: dict[str, Any] = {}
    """How a trained checkpoint was made: sources with versions, hashes and licences, the
    command, the training time and figures, and the sha256 of every other file."""


@dataclass
class Checkpoint:
    """Every part of a loaded checkpoint, ready to run."""

    path: Path
    manifest: Manifest
    encoder: BlockCausalEncoder
    adapter: Adapter
    lm: PreTrainedModel | None  # None when loaded for an engine that serves lm/ itself
    lm_embeddings: torch.Tensor  # the LM's input embedding table (rows, hidden)
    tokenizer: PreTrainedTokenizerBase
    vocoder: TokenVocoder
    speech_tokenizer: AnyTokenizer  # a UnitTokenizer on `encoder` for "whisper-units"

    @property
    def random_weights(self) -> bool:
        """True when a part the voice depends on is untrained: such a model speaks noise.

        A real encoder or LM alone does not make it talk: the adapter joining them and the
        vocoder voicing the LM's speech tokens are only ever trained here, together.
        """
        return any(
            self.manifest.sources.get(part, "random") == "random"
            for part in ("adapter", "lm", "vocoder")
        )


def read_manifest(path: Path) -> Manifest:
    """The root config of the checkpoint at ``path``, checked."""
    path = Path(path)
    if not path.is_dir():
        raise CheckpointError(f"checkpoint directory not found: {path}")
    missing = [f for f in REQUIRED_FILES if not (path / f).is_file()]
    if missing:
        raise CheckpointError(f"{path}: missing checkpoint file(s): {', '.join(missing)}")
    try:
        raw = json.loads((path / ROOT_CONFIG).read_text())
    except json.JSONDecodeError as exc:
        raise CheckpointError(f"{path / ROOT_CONFIG}: not valid JSON ({exc})") from None
    version = raw.get("format_version") if isinstance(raw, dict) else None
    if version != CHECKPOINT_FORMAT_VERSION:
        raise CheckpointError(
            f"{path / ROOT_CONFIG}: format_version {version!r}; this Parley reads "
            f"version {CHECKPOINT_FORMAT_VERSION}"
        )
    try:
        return Manifest.model_validate(raw)
    except ValidationError as exc:
        first = exc.errors()[0]
        key = ".".join(str(p) for p in first["loc"])
        raise CheckpointError(f"{path / ROOT_CONFIG}: {key}: {first['msg']}") from None


def load_checkpoint(path: Path, dtype: str = "float32", lm_weights: bool = True) -> Checkpoint:
    """Load and cross-check every part of the checkpoint at ``path``.

    With ``lm_weights=False`` only the LM's input embeddings are read (an engine such as
    vLLM loads ``lm/`` itself; a second full copy here would double the memory).
    """
    path = Path(path)
    manifest = read_manifest(path)
    cfg = manifest.model

    encoder = _load_encoder_part(path, cfg)
    adapter = Adapter.from_config(cfg.adapter, cfg.encoder.d_model, manifest.lm_hidden)
    load_file_into(adapter, path / "adapter.safetensors")
    lm, tokenizer, embeddings = _load_lm_part(path, manifest, dtype, lm_weights)

    encoder = encoder.eval()
    vocoder, speech_tokenizer, _ = load_codec(
        path / "vocoder", cfg.codec, encoder=encoder, features=cfg.features
    )
    return Checkpoint(
        path=path,
        manifest=manifest,
        encoder=encoder,
        adapter=adapter.eval(),
        lm=None if lm is None else lm.eval(),
        lm_embeddings=embeddings,
        tokenizer=tokenizer,
        vocoder=vocoder.eval(),
        speech_tokenizer=speech_tokenizer.eval(),
    )


def _load_encoder_part(path: Path, cfg: ModelConfig) -> BlockCausalEncoder:
    """The checkpoint's encoder, refused when its shapes are not the ones the root config
    (and so the adapter and codec built on it) expects."""
    whisper, wcfg = load_encoder(path / "encoder")
    if wcfg.num_mel_bins != cfg.features.n_mels or wcfg.d_model != cfg.encoder.d_model:
        raise CheckpointError(
            f"{path / 'encoder/config.json'}: num_mel_bins={wcfg.num_mel_bins}, "
            f"d_model={wcfg.d_model}; {ROOT_CONFIG} says n_mels={cfg.features.n_mels}, "
            f"d_model={cfg.encoder.d_model}"
        )
    encoder = BlockCausalEncoder(whisper, cfg.encoder.block_frames, cfg.encoder.context_blocks)
    if cfg.encoder.tuned_layers:
        from parley.llm.tuned_layers import load_tuned

        encoder.add_tuned_copy(cfg.encoder.tuned_layers)
        tuned = path / TUNED_ENCODER_FILE
        load_tuned(encoder, read_tensors(tuned), str(tuned))
    return encoder


def _load_lm_part(
    path: Path, manifest: Manifest, dtype: str, lm_weights: bool
) -> tuple[PreTrainedModel | None, PreTrainedTokenizerBase, torch.Tensor]:
    """The LM (None without ``lm_weights``), its tokenizer and input embedding table.

    Both are checked against the root config: a tokenizer whose speech ids moved, or an
    LM of another width, would load fine and then speak garbage.
    """
    lm = None
    try:
        tokenizer = AutoTokenizer.from_pretrained(path / "lm")
        if lm_weights:
            lm = AutoModelForCausalLM.from_pretrained(path / "lm", dtype=getattr(torch, dtype))
            embeddings = embedding_table(lm).detach()
            lm_config = lm.config
        else:
            lm_config = AutoConfig.from_pretrained(path / "lm")
            embeddings = read_input_embeddings(path / "lm")
    except (OSError, ValueError) as exc:
        raise CheckpointError(f"{path / 'lm'}: cannot load the LM ({exc})") from None
    rows = embeddings.shape[0]
    found = VocabLayout.from_tokenizer(tokenizer, manifest.vocab.codebook_size, rows)
    if found != manifest.vocab:
        raise CheckpointError(
            f"{path / 'lm'}: tokenizer/embedding layout {found} differs from {ROOT_CONFIG}'s "
            f"{manifest.vocab}"
        )
    if lm_config.hidden_size != manifest.lm_hidden or embeddings.shape[1] != manifest.lm_hidden:
        raise CheckpointError(
            f"{path / 'lm/config.json'}: hidden_size {lm_config.hidden_size}, but the adapter "
            f"emits {manifest.lm_hidden}"
        )
    return lm, tokenizer, embeddings
