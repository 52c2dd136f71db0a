"""Starting the adapter + LM from a trained checkpoint rather than from random weights.

What carries over is everything the LM learned about the questions and the text of its
answers. What may not is its speech tokens: a checkpoint whose codec made other units (a
new codebook, or units from other encoder frames) wrote the same audio with other ids. The
two tokenizers see the same recordings frame for frame, so each new unit's embedding starts
as the mean of the old embeddings of the frames it labels: the LM starts out saying
roughly the right sounds and only has to sharpen them.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from pathlib import Path

import numpy as np
import torch
from torch import Tensor
from transformers import PreTrainedModel

from parley.errors import ConfigError
from parley.llm.adapter import Adapter
from parley.llm.lm_build import embedding_table
from parley.tokenizers.vocab import VocabLayout

__all__ = ["co_occurrence", "remap_rows", "warm_start"]

Log = Callable[[str], None]


def co_occurrence(pairs: Iterable[tuple[list[int], list[int]]], n_new: int, n_old: int) -> Tensor:
    """Counts (n_new, n_old) of frames labelled ``new`` by one tokenizer and ``old`` by the
    other, over aligned id sequences of the same recordings."""
    counts = torch.zeros(n_new, n_old)
    for new, old in pairs:
        n = min(len(new), len(old))  # equal for the same audio; a stray edge frame is dropped
        if n:
            idx = torch.tensor(new[:n]) * n_old + torch.tensor(old[:n])
            counts.view(-1).index_add_(0, idx, torch.ones(n))
    return counts


def remap_rows(old_rows: Tensor, counts: Tensor, fallback: Tensor) -> Tensor:
    """New rows as count-weighted means of ``old_rows``; a new unit never seen keeps its
    ``fallback`` row."""
    seen = counts.sum(1)
    mixed = (counts / seen.clamp_min(1.0)[:, None]) @ old_rows.float()
    return torch.where(seen[:, None] > 0, mixed, fallback.float()).to(old_rows.dtype)


def warm_start(
    adapter: Adapter,
    lm: PreTrainedModel,
    layout: VocabLayout,
    checkpoint: Path,
    new_codes: dict[str, list[int]],
    reply_audio: Callable[[str], np.ndarray],
    log: Log = print,
) -> None:
    """Load ``checkpoint``'s adapter and LM into ``adapter`` and ``lm`` (same shapes), then
    remap the speech rows when its units differ from ``new_codes`` (reply -> unit ids of
    ``reply_audio(reply)``, as the LM will learn them)."""
    from parley.llm.checkpoint import load_checkpoint

    ckpt = load_checkpoint(checkpoint)
    rows = slice(layout.speech_offset, layout.speech_offset + layout.codebook_size)
    tables = [embedding_table(lm)]
    head = lm.get_output_embeddings()
    if head is not None and head.weight is not tables[0]:
        assert isinstance(head.weight, torch.Tensor)
        tables.append(head.weight)
    fresh = [t[rows].detach().clone() for t in tables]  # for units the old never labelled
    try:
        adapter.load_state_dict(ckpt.adapter.state_dict())
        assert ckpt.lm is not None
        lm.load_state_dict(ckpt.lm.state_dict())
    except RuntimeError as exc:
        raise ConfigError(
            f"--init-from {checkpoint}: its adapter or LM has another shape than this "
            f"training's preset ({str(exc).splitlines()[0]})"
        ) from None
    old_layout = ckpt.manifest.vocab
    if (old_layout.speech_offset, old_layout.codebook_size) != (
        layout.speech_offset,
        layout.codebook_size,
    ):
        raise ConfigError(f"--init-from {checkpoint}: its vocabulary is laid out differently")
    replies = sorted(new_codes)
    with torch.inference_mode():
        old_codes = [ckpt.speech_tokenizer.encode(reply_audio(r)).tolist() for r in replies]
    same = sum(old == new_codes[r] for r, old in zip(replies, old_codes, strict=True))
    if same == len(replies):
        log(f"warm start from {checkpoint}: same units, weights taken as they are")
        return
    k = layout.codebook_size
    pairs = ((new_codes[r], o) for r, o in zip(replies, old_codes, strict=True))
    counts = co_occurrence(pairs, k, k)
    with torch.no_grad():
        # Input rows and (when not tied to them) the speech logits' weights alike.
        for table, init in zip(tables, fresh, strict=True):
            table[rows] = remap_rows(table[rows].clone(), counts, init)
    seen = int((counts.sum(1) > 0).sum())
    log(
        f"warm start from {checkpoint}: its units differ on {len(replies) - same} of "
        f"{len(replies)} replies; {seen} of {k} new speech rows start as means of the old"
    )
