"""Turning a stream of text token ids into text deltas."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from parley.tokenizers.vocab import TokenClass


class Decoder(Protocol):
    """What a Hugging Face tokenizer offers here: ids back to text."""

    def decode(self, token_ids: list[int], skip_special_tokens: bool = ...) -> str | list[str]: ...


def _decode(tokenizer: Decoder, ids: list[int]) -> str:
    text = tokenizer.decode(ids, skip_special_tokens=True)
    if not isinstance(text, str):  # only a batch of sequences decodes to a list
        raise TypeError(f"decoding one sequence gave {type(text).__name__}, not text")
    return text


class IncrementalDetokenizer:
    """Decodes a growing list of ids and hands out only the new, complete characters.

    Byte-level BPE can split one character over several tokens; a trailing replacement
    character means the character is not complete yet, so it is held back.
    """

    def __init__(self, tokenizer: Decoder) -> None:
        self.tokenizer = tokenizer
        self.ids: list[int] = []
        self._emitted = ""

    @property
    def text(self) -> str:
        return self._emitted

    def add(self, token_id: int) -> str:
        """Add one id; return the text it completed (possibly empty)."""
        self.ids.append(token_id)
        full = _decode(self.tokenizer, self.ids)
        if full.endswith("\ufffd"):
            return ""
        delta = full[len(self._emitted) :] if full.startswith(self._emitted) else full
        self._emitted = full
        return delta


def text_of(tokenizer: Decoder, tokens: Sequence[int], classes: Sequence[TokenClass]) -> str:
    """The text carried by the text tokens among ``tokens`` (``classes`` names each one's)."""
    from parley.tokenizers.vocab import TokenClass

    ids = [t for t, c in zip(tokens, classes, strict=True) if c is TokenClass.TEXT]
    return _decode(tokenizer, ids)
