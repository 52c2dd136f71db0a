"""The token id layout shared by every engine: text ids, speech codes, special tokens.

Ids ``[0, speech_offset)`` are the text tokenizer's own (its own special tokens excluded
from generation), ``[speech_offset, speech_offset + codebook_size)`` are speech codes, and
our special tokens follow. The layout is read off the tokenizer once, saved in the
checkpoint's root config, and checked against the tokenizer when a checkpoint loads.
"""

from __future__ import annotations

from enum import IntEnum

from pydantic import BaseModel, ConfigDict, Field

from parley.errors import CheckpointError

USER = "<|user|>"
ASSISTANT = "<|assistant|>"
TEXT_END = "<|text_end|>"
EOT = "<|eot|>"
PAD = "<|pad|>"
SPECIAL_TOKENS = (USER, ASSISTANT, TEXT_END, EOT, PAD)


def speech_token(code: int) -> str:
    """The tokenizer string of speech code ``code``."""
    return f"<|s{code}|>"


class TokenClass(IntEnum):
    """What a generated token is, as far as the interleave schedule cares."""

    TEXT = 0
    SPEECH = 1
    TEXT_END = 2
    EOT = 3
    OTHER = 4  # markers and the text tokenizer's own specials: never generated in a reply


class VocabLayout(BaseModel):
    """Where each kind of token lives in the LM's vocabulary."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    speech_offset: int = Field(ge=1)
    codebook_size: int = Field(ge=2)
    user: int
    assistant: int
    text_end: int
    eot: int
    pad: int
    vocab_size: int = Field(description="Rows of the LM's embedding table.")
    reserved_text_ids: tuple[int, ...] = Field(
        (), description="The text tokenizer's own special ids: never generated as text."
    )

    def classify(self, token_id: int) -> TokenClass:
        """The class of one token id."""
        if self.speech_offset <= token_id < self.speech_offset + self.codebook_size:
            return TokenClass.SPEECH
        if token_id == self.text_end:
            return TokenClass.TEXT_END
        if token_id == self.eot:
            return TokenClass.EOT
        if 0 <= token_id < self.speech_offset and token_id not in self.reserved_text_ids:
            return TokenClass.TEXT
        return TokenClass.OTHER

    def speech_code(self, token_id: int) -> int:
        """Speech code of a speech token id."""
        code = token_id - self.speech_offset
        if not 0 <= code < self.codebook_size:
            raise ValueError(f"token {token_id} is not a speech token")
        return code

    @classmethod
    def from_tokenizer(cls, tokenizer, codebook_size: int, vocab_size: int) -> VocabLayout:
        """Read the layout off a tokenizer that :func:`add_speech_vocab` extended."""
        ids = tokenizer.convert_tokens_to_ids
        offset = ids(speech_token(0))
        last = ids(speech_token(codebook_size - 1))
        if offset is None or last != offset + codebook_size - 1:
            raise CheckpointError(
                f"tokenizer lacks {codebook_size} consecutive speech tokens "
                f"{speech_token(0)}..{speech_token(codebook_size - 1)}"
            )
        own_specials = tuple(sorted(i for i in tokenizer.all_special_ids if i < offset))
        return cls(
            speech_offset=offset,
            codebook_size=codebook_size,
            user=ids(USER),
            assistant=ids(ASSISTANT),
            text_end=ids(TEXT_END),
            eot=ids(EOT),
            pad=ids(PAD),
            vocab_size=vocab_size,
            reserved_text_ids=own_specials,
        )


def add_speech_vocab(tokenizer, codebook_size: int) -> None:
    """Append the speech codes, then our special tokens, to ``tokenizer`` in place.

    Speech codes come first so that they form one contiguous id range right after the
    text vocabulary, whatever tokenizer the LM came with.
    """
    from tokenizers import AddedToken

    existing = tokenizer.convert_tokens_to_ids(speech_token(0))
    if existing is not None and existing != tokenizer.unk_token_id:
        raise CheckpointError("tokenizer already holds speech tokens; start from the text-only one")
    tokenizer.add_tokens(
        [AddedToken(speech_token(c), special=True, normalized=False) for c in range(codebook_size)]
    )
    tokenizer.add_tokens([AddedToken(t, special=True, normalized=False) for t in SPECIAL_TOKENS])
    tokenizer.pad_token = PAD
    tokenizer.eos_token = EOT
