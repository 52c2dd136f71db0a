"""``make-checkpoint``: a seeded random checkpoint from a preset, optionally with real parts.

Random weights are deterministic: the same preset and seed give the same bytes. A local HF
Whisper checkpoint can supply the encoder and a local HF causal LM the decoder; the preset's
shapes for those parts are then replaced by theirs.
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path

from parley.config import ModelConfig
from parley.errors import CheckpointError
from parley.llm.adapter import Adapter
from parley.llm.checkpoint import ROOT_CONFIG, Manifest
from parley.llm.encoder import BlockCausalEncoder
from parley.llm.encoder_io import encoder_config_from, load_encoder, save_encoder
from parley.llm.lm_build import layout_of, lm_from_pretrained, random_lm
from parley.tokenizers.codec_io import build_codec, save_codec
from parley.weights import save_state

# Each part draws from its own seed so that swapping one part leaves the others' bytes alone.
PART_SEEDS = {"encoder": 1, "adapter": 2, "lm": 3, "codec": 4}


def build_checkpoint(
    out: Path,
    cfg: ModelConfig,
    seed: int = 0,
    encoder_from: Path | None = None,
    lm_from: Path | None = None,
    log: Callable[[str], None] = lambda _msg: None,
    overwrite: bool = False,
) -> Path:
    """Write a checkpoint directory at ``out`` (atomically: built aside, then moved in)."""
    out = Path(out)
    if out.exists() and any(out.iterdir()) and not overwrite:
        raise CheckpointError(f"{out} exists and is not empty (pass --force to replace it)")
    sources = {"encoder": "random", "lm": "random", "adapter": "random", "vocoder": "random"}

    if encoder_from is not None:
        log(f"encoder: reading {encoder_from}")
        whisper, wcfg = load_encoder(Path(encoder_from))
        cfg = cfg.model_copy(
            update={
                "encoder": encoder_config_from(wcfg, cfg.encoder),
                "features": cfg.features.model_copy(update={"n_mels": wcfg.num_mel_bins}),
            }
        )
        sources["encoder"] = str(encoder_from)
    else:
        log(f"encoder: random {cfg.encoder.d_model}x{cfg.encoder.layers}")
        whisper = BlockCausalEncoder.from_config(
            cfg.encoder, cfg.features.n_mels, seed * 10 + PART_SEEDS["encoder"]
        ).whisper

    if lm_from is not None:
        log(f"lm: reading {lm_from}")
        lm, tokenizer = lm_from_pretrained(Path(lm_from), cfg.codec.codebook_size)
        sources["lm"] = str(lm_from)
    else:
        log(f"lm: random {cfg.lm.architecture} {cfg.lm.hidden}x{cfg.lm.layers}, training BPE")
        lm, tokenizer = random_lm(cfg.lm, cfg.codec.codebook_size, seed * 10 + PART_SEEDS["lm"])
    layout = layout_of(lm, tokenizer, cfg.codec.codebook_size)
    lm_hidden = int(lm.config.hidden_size)

    log("adapter and codec: random")
    adapter = Adapter.from_config(
        cfg.adapter, cfg.encoder.d_model, lm_hidden, seed * 10 + PART_SEEDS["adapter"]
    )
    vocoder, speech_tokenizer = build_codec(
        cfg.codec,
        seed * 10 + PART_SEEDS["codec"],
        encoder=BlockCausalEncoder(whisper, cfg.encoder.block_frames, cfg.encoder.context_blocks),
        features=cfg.features,
    )

    manifest = Manifest(model=cfg, vocab=layout, lm_hidden=lm_hidden, seed=seed, sources=sources)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        save_encoder(whisper, tmp / "encoder")
        save_state(adapter, tmp / "adapter.safetensors")
        lm.save_pretrained(tmp / "lm")
        tokenizer.save_pretrained(tmp / "lm")
        save_codec(tmp / "vocoder", vocoder, speech_tokenizer, cfg.codec)
        (tmp / ROOT_CONFIG).write_text(manifest.model_dump_json(indent=2) + "\n")
        if out.exists():
            shutil.rmtree(out)
        tmp.rename(out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    size = sum(f.stat().st_size for f in out.rglob("*") if f.is_file())
    log(f"wrote {out} ({size / 1e6:.1f} MB)")
    return out
