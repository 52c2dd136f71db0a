"""Building the decoder LM part of a checkpoint: random from a preset, or from a local HF LM."""

from __future__ import annotations

from pathlib import Path

import torch
from transformers import (
    AutoModelForCausalLM,
    AutoTokenizer,
    LlamaConfig,
    PreTrainedModel,
    PreTrainedTokenizerBase,
    Qwen2Config,
)

from parley.config import LMConfig
from parley.errors import CheckpointError
from parley.tokenizers.text_tokenizer import train_text_tokenizer
from parley.tokenizers.vocab import EOT, VocabLayout, add_speech_vocab


def random_lm(
    cfg: LMConfig,
    codebook_size: int,
    seed: int,
    corpus: str | None = None,
    tokenizer: PreTrainedTokenizerBase | None = None,
) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """A seeded random LM and its tokenizer (BPE trained here on ``corpus``, by default the
    shipped text, plus speech and special tokens); or for ``tokenizer``, one made so before
    (a resumed training run must keep the ids its data were cached with)."""
    if tokenizer is None:
        tokenizer = train_text_tokenizer(cfg.text_vocab, corpus)
        add_speech_vocab(tokenizer, codebook_size)
    config_cls = Qwen2Config if cfg.architecture == "qwen2" else LlamaConfig
    eot = tokenizer.convert_tokens_to_ids(EOT)
    # transformers' config classes take their fields as **kwargs (untyped to a checker).
    config = config_cls(  # type: ignore[call-arg]
        vocab_size=len(tokenizer),
        hidden_size=cfg.hidden,
        num_hidden_layers=cfg.layers,
        num_attention_heads=cfg.heads,
        num_key_value_heads=cfg.kv_heads,
        intermediate_size=cfg.intermediate,
        max_position_embeddings=cfg.max_positions,
        rope_theta=cfg.rope_theta,
        tie_word_embeddings=cfg.tie_embeddings,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=eot,
        pad_token_id=tokenizer.pad_token_id,
        dtype="float32",
    )
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    return model.eval(), tokenizer


def lm_from_pretrained(
    path: Path, codebook_size: int
) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """A local HF causal LM with the speech and special tokens added and embeddings resized."""
    path = Path(path)
    if not (path / "config.json").is_file():
        raise CheckpointError(
            f"--lm-from {path}: no config.json (expected an HF causal-LM directory)"
        )
    try:
        tokenizer = AutoTokenizer.from_pretrained(path)
        model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32)
    except (OSError, ValueError) as exc:
        raise CheckpointError(f"--lm-from {path}: cannot load: {exc}") from None
    add_speech_vocab(tokenizer, codebook_size)
    rows = embedding_rows(model)
    # Keep padding rows a model may carry beyond its tokenizer; grow when the new ids need it.
    model.resize_token_embeddings(max(rows, len(tokenizer)))
    model.config.eos_token_id = tokenizer.convert_tokens_to_ids(EOT)
    model.config.pad_token_id = tokenizer.pad_token_id
    return model.eval(), tokenizer


def embedding_table(model: PreTrainedModel) -> torch.Tensor:
    """The LM's input embedding weights (rows: token ids, padding rows included)."""
    table = model.get_input_embeddings().weight
    assert isinstance(table, torch.Tensor)
    return table


def embedding_rows(model: PreTrainedModel) -> int:
    """Rows of the LM's input embedding table (ids it can take, padding rows included)."""
    return int(embedding_table(model).shape[0])


def layout_of(model: PreTrainedModel, tokenizer, codebook_size: int) -> VocabLayout:
    """The vocabulary layout of an LM directory's model and tokenizer."""
    rows = embedding_rows(model)
    return VocabLayout.from_tokenizer(tokenizer, codebook_size, rows)
