"""A small byte-level BPE text tokenizer, trained here on text shipped in ``configs/``.

Presets built from scratch need a text vocabulary but may not download one; training on
our own corpus takes well under a second and is deterministic.
"""

from __future__ import annotations

from importlib import resources

from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import PreTrainedTokenizerFast

ENDOFTEXT = "<|endoftext|>"


def shipped_corpus() -> str:
    """The training text shipped with the package."""
    return resources.files("parley.configs").joinpath("corpus.txt").read_text(encoding="utf-8")


def train_text_tokenizer(vocab_size: int, corpus: str | None = None) -> PreTrainedTokenizerFast:
    """Train a byte-level BPE of at most ``vocab_size`` tokens (fewer if the corpus runs out)."""
    text = shipped_corpus() if corpus is None else corpus
    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        min_frequency=2,
        special_tokens=[ENDOFTEXT],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    bpe.train_from_iterator(text.splitlines(), trainer=trainer)
    return PreTrainedTokenizerFast(tokenizer_object=bpe, unk_token=ENDOFTEXT, bos_token=ENDOFTEXT)
