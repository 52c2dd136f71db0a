"""What a conversation keeps when it outgrows the LM: the newest turns, whole.

A conversation grows by about ten positions a second (user audio through the adapter, the
replies' text and speech tokens), and the LM has a fixed number of them: a few minutes of
talk. Past that, RoPE positions the LM never trained on give garbage and vLLM refuses the
request. So before each reply the oldest turns are dropped, each one whole (a user turn
and the reply to it), until the history, the new user turn and the longest reply the
schedule allows fit. The model has no system prompt, so there is nothing to pin.

A user turn that alone does not fit keeps its end: the words just said are the question.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass

import torch

__all__ = ["Fit", "fit_turns", "keep_tail", "log_fit"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Fit:
    """How to make a conversation fit: drop the first ``drop`` turns; then keep at most
    ``pending_keep`` positions of the new input (None: all of it). ``by_history`` of the
    dropped turns went to keep at most ``history`` turns, the rest for room."""

    drop: int
    pending_keep: int | None = None
    by_history: int = 0

    @property
    def for_room(self) -> int:
        """Turns dropped because the LM's positions ran out."""
        return self.drop - self.by_history


def fit_turns(
    turns: Sequence[int], pending: int, reserve: int, limit: int, history: int | None = None
) -> Fit:
    """The fewest oldest ``turns`` (their lengths in positions) to drop so that what stays
    + ``pending`` + ``reserve`` (room for the reply) is at most ``limit``, and, unless
    ``history`` is None, at most that many turns stay."""
    if reserve + 2 > limit:
        raise ValueError(f"a reply needs {reserve} positions; the LM has only {limit}")
    first = 0 if history is None else max(0, len(turns) - history)
    total = sum(turns[first:]) + pending + reserve
    drop = first
    while total > limit and drop < len(turns):
        total -= turns[drop]
        drop += 1
    if total <= limit:
        return Fit(drop, None, first)
    return Fit(drop, limit - reserve, first)


def keep_tail(pending: torch.Tensor, keep: int) -> torch.Tensor:
    """``keep`` positions of a user turn's embeddings: its first (the user marker) and its
    last ``keep - 1`` (the end of the audio and the assistant marker)."""
    if keep >= pending.shape[0]:
        return pending
    return torch.cat([pending[:1], pending[pending.shape[0] - (keep - 1) :]])


def log_fit(fit: Fit, turns: int, limit: int, pending: int) -> None:
    """One line on what a fit dropped (a conversation that long is worth knowing about)."""
    if fit.for_room:
        log.info("conversation at the LM's %d positions: dropped the oldest %d of %d turns",
                 limit, fit.for_room, turns)  # fmt: skip
    if fit.pending_keep is not None:
        log.warning(
            "a user turn of %d positions does not fit the LM's %d: kept its last %d",
            pending, limit, fit.pending_keep,
        )  # fmt: skip
