"""Applying the interleave schedule to logits: the transformers-side processor."""

from __future__ import annotations

from typing import cast

import torch
from transformers import LogitsProcessor

from parley.config import ScheduleConfig
from parley.llm.schedule import ScheduleState, advance, allowed_next
from parley.tokenizers.vocab import TokenClass, VocabLayout


def class_masks(layout: VocabLayout, size: int) -> dict[TokenClass, torch.Tensor]:
    """A boolean mask over ``size`` logits for each token class."""
    masks = {cls: torch.zeros(size, dtype=torch.bool) for cls in TokenClass}
    masks[TokenClass.TEXT][: layout.speech_offset] = True
    masks[TokenClass.TEXT][list(layout.reserved_text_ids)] = False
    start = layout.speech_offset
    masks[TokenClass.SPEECH][start : start + layout.codebook_size] = True
    masks[TokenClass.TEXT_END][layout.text_end] = True
    masks[TokenClass.EOT][layout.eot] = True
    return masks


class ScheduleLogitsProcessor(LogitsProcessor):
    """Masks every token the schedule does not allow next (one sequence, incremental).

    Call :meth:`accept` with each token chosen; ``__call__`` then masks the next step's
    logits. It also works under ``model.generate``: there it reads the newest token off
    ``input_ids`` (``prompt_length`` tells it where the reply starts).
    """

    def __init__(
        self, layout: VocabLayout, schedule: ScheduleConfig, vocab_size: int, prompt_length: int = 0
    ) -> None:
        self.layout = layout
        self.schedule = schedule
        self.state = ScheduleState()
        self.classes: list[TokenClass] = []
        self.prompt_length = prompt_length
        self._masks = class_masks(layout, vocab_size)
        self._cache: dict[frozenset[TokenClass], torch.Tensor] = {}

    def accept(self, token_id: int) -> TokenClass:
        """Record the token chosen; returns its class."""
        cls = self.layout.classify(token_id)
        self.state = advance(self.state, cls, self.schedule)
        self.classes.append(cls)
        return cls

    def allowed_mask(self) -> torch.Tensor:
        allowed = allowed_next(self.state, self.schedule)
        mask = self._cache.get(allowed)
        if mask is None:
            mask = torch.zeros_like(self._masks[TokenClass.TEXT])
            for cls in allowed:
                mask |= self._masks[cls]
            self._cache[allowed] = mask
        return mask

    def apply(self, scores: torch.Tensor) -> torch.Tensor:
        """``scores`` (..., vocab) with every token the schedule forbids next set to -inf."""
        return scores.masked_fill(~self.allowed_mask().to(scores.device), float("-inf"))

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        seen = input_ids.shape[-1] - self.prompt_length
        while len(self.classes) < seen:
            self.accept(int(input_ids[0, self.prompt_length + len(self.classes)]))
        # HF's LogitsProcessor signature names the legacy FloatTensor; any float tensor does.
        return cast(torch.FloatTensor, self.apply(scores))
