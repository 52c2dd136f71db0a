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

from transformers import PreTrainedModel, PreTrainedTokenizerBase
from transformers.models.whisper.modeling_whisper import WhisperEncoder

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
    # The key order is the manifest's: changing it would change the checkpoint's bytes.
    sources = {"encoder": "random", "lm": "random", "adapter": "random", "vocoder": "random"}
    whisper, cfg = _encoder_part(cfg, seed, encoder_from, log)
    if encoder_from is not None:
        sources["encoder"] = str(encoder_from)
    lm, tokenizer = _lm_part(cfg, seed, lm_from, log)
    if lm_from is not None:
        sources["lm"] = str(lm_from)
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

    def write_parts(tmp: Path) -> None:
        save_encoder(whisper, tmp / "encoder")
        save_state(adapter, tmp / "adapter.safetensors")
        lm.save_pretrained(tmp / "lm")
        tokenizer.save_pretrained(tmp / "lm")
        save_codec(tmp / "vocoder", vocoder, speech_tokenizer, cfg.codec)
        (tmp / ROOT_CONFIG).write_text(manifest.model_dump_json(indent=2) + "\n")

    _write_aside(out, write_parts)
    size = sum(f.stat().st_size for f in out.rglob("*") if f.is_file())
    log(f"wrote {out} ({size / 1e6:.1f} MB)")
    return out


def _encoder_part(
    cfg: ModelConfig, seed: int, encoder_from: Path | None, log: Callable[[str], None]
) -> tuple[WhisperEncoder, ModelConfig]:
    """The encoder, and ``cfg`` with the encoder's and features' shapes made to fit it.

    A real Whisper dictates its own width and mel count; the rest of the model is then
    built around those, which is why the config comes back with it.
    """
    if encoder_from is None:
        log(f"encoder: random {cfg.encoder.d_model}x{cfg.encoder.layers}")
        whisper = BlockCausalEncoder.from_config(
            cfg.encoder, cfg.features.n_mels, seed * 10 + PART_SEEDS["encoder"]
        ).whisper
        return whisper, cfg
    log(f"encoder: reading {encoder_from}")
    whisper, wcfg = load_encoder(Path(encoder_from))
    cfg = cfg.model_copy(
        update={
            "encoder": encoder_config_from(wcfg, cfg.encoder),
            "features": cfg.features.model_copy(update={"n_mels": wcfg.num_mel_bins}),
        }
    )
    return whisper, cfg


def _lm_part(
    cfg: ModelConfig, seed: int, lm_from: Path | None, log: Callable[[str], None]
) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """The decoder LM and its tokenizer, read from ``lm_from`` or made at random."""
    if lm_from is not None:
        log(f"lm: reading {lm_from}")
        return lm_from_pretrained(Path(lm_from), cfg.codec.codebook_size)
    log(f"lm: random {cfg.lm.architecture} {cfg.lm.hidden}x{cfg.lm.layers}, training BPE")
    return random_lm(cfg.lm, cfg.codec.codebook_size, seed * 10 + PART_SEEDS["lm"])


def _write_aside(out: Path, write: Callable[[Path], None]) -> None:
    """Run ``write`` on a fresh folder beside ``out``, then move it into place.

    A failed or interrupted build then leaves ``out`` as it was, never half written.
    """
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        write(tmp)
        if out.exists():
            shutil.rmtree(out)
        tmp.rename(out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
