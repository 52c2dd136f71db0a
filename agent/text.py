"""Turning a stream of text token ids into text deltas."""

from __future__ import annotations


class IncrementalDetokenizer:
    """Decodes a growing list of ids and hands out only the new, complete characters.

    Byte-level BPE can split one character over several tokens; a trailing replacement
    character means the character is not complete yet, so it is held back.
    """

    def __init__(self, tokenizer) -> None:
        self.tokenizer = tokenizer
        self.ids: list[int] = []
        self._emitted = ""

    @property
    def text(self) -> str:
        return self._emitted

    def add(self, token_id: int) -> str:
        """Add one id; return the text it completed (possibly empty)."""
        self.ids.append(token_id)
        full = self.tokenizer.decode(self.ids, skip_special_tokens=True)
        if full.endswith("\ufffd"):
            return ""
        delta = full[len(self._emitted) :] if full.startswith(self._emitted) else full
        self._emitted = full
        return delta


def text_of(tokenizer, tokens: list[int], classes: list) -> str:
    """The text carried by the text tokens among ``tokens`` (``classes`` names each one's)."""
    from parley.tokenizers.vocab import TokenClass

    ids = [t for t, c in zip(tokens, classes, strict=True) if c is TokenClass.TEXT]
    return tokenizer.decode(ids, skip_special_tokens=True)
