"""Writing trained parts as a Parley checkpoint directory, with their provenance.

Weights are stored as float16 where the model computes in float32 anyway (they are cast
back on load); ``eval`` on the written checkpoint is what shows the cast costs nothing.
"""

from __future__ import annotations

import copy
import hashlib
import shutil
import tempfile
from pathlib import Path
from typing import TypeVar

import torch
from safetensors.torch import save_file
from torch import nn

from parley.config import ModelConfig
from parley.llm.adapter import Adapter
from parley.llm.checkpoint import ROOT_CONFIG, TUNED_ENCODER_FILE, Manifest
from parley.llm.encoder import BlockCausalEncoder
from parley.llm.encoder_io import save_encoder
from parley.llm.lm_build import layout_of
from parley.llm.tuned_layers import tuned_tensors
from parley.tokenizers.codec_io import save_codec
from parley.weights import save_state

M = TypeVar("M", bound=nn.Module)


def _half(module: M) -> M:
    return copy.deepcopy(module).to(torch.float16)


def _as_is(module: M) -> M:
    return module


def sha256_of(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def write_trained_checkpoint(
    out: Path,
    cfg: ModelConfig,
    encoder: BlockCausalEncoder,
    adapter: Adapter,
    lm,
    tokenizer,
    vocoder,
    speech_tokenizer,
    sources: dict[str, str],
    provenance: dict,
    seed: int,
    half: bool = True,
    tuned_rank: int = 0,
) -> Path:
    """Write every part to ``out`` (built aside, then moved in) and return it; the
    encoder's tuned layers too when it has them (``cfg`` is made to say how many), their
    matrices as differences from Whisper's at ``tuned_rank`` (0: whole; see
    :mod:`parley.llm.tuned_layers`)."""
    out = Path(out)
    tuned = len(encoder.tuned)
    cfg = cfg.model_copy(update={"encoder": cfg.encoder.model_copy(update={"tuned_layers": tuned})})
    layout = layout_of(lm, tokenizer, cfg.codec.codebook_size)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    cast = _half if half else _as_is
    try:
        save_encoder(cast(encoder.whisper), tmp / "encoder")
        if tuned:
            stored = tuned_tensors(encoder, tuned_rank)
            dtype = torch.float16 if half else torch.float32
            save_file(
                {k: v.to(dtype).contiguous() for k, v in sorted(stored.items())},
                str(tmp / TUNED_ENCODER_FILE),
                metadata={"format": "pt"},
            )
        save_state(cast(adapter), tmp / "adapter.safetensors")
        cast(lm).save_pretrained(tmp / "lm")
        tokenizer.save_pretrained(tmp / "lm")
        save_codec(tmp / "vocoder", cast(vocoder), speech_tokenizer, cfg.codec)
        files = {
            str(f.relative_to(tmp)): sha256_of(f) for f in sorted(tmp.rglob("*")) if f.is_file()
        }
        manifest = Manifest(
            model=cfg,
            vocab=layout,
            lm_hidden=int(lm.config.hidden_size),
            seed=seed,
            sources=sources,
            provenance={**provenance, "files_sha256": files},
        )
        (tmp / ROOT_CONFIG).write_text(manifest.model_dump_json(indent=2) + "\n")
        if out.exists():
            shutil.rmtree(out)
        tmp.rename(out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out
