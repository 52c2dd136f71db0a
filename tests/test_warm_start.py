"""Warm start: speech rows of new units from the old units that label the same frames."""

from __future__ import annotations

import torch

from parley.train.warm_start import co_occurrence, remap_rows


def test_co_occurrence_counts_aligned_frames() -> None:
    counts = co_occurrence([([0, 0, 1, 2], [3, 3, 0, 0]), ([1, 1], [0, 2, 9])], n_new=3, n_old=4)
    assert counts.tolist() == [[0, 0, 0, 2], [2, 0, 1, 0], [1, 0, 0, 0]]


def test_new_rows_are_means_of_the_old_rows_they_cover() -> None:
    old = torch.tensor([[1.0, 0.0], [0.0, 1.0], [5.0, 5.0]])
    counts = torch.tensor([[3.0, 1.0, 0.0], [0.0, 0.0, 2.0], [0.0, 0.0, 0.0]])
    fallback = torch.full((3, 2), -7.0)
    rows = remap_rows(old, counts, fallback)
    torch.testing.assert_close(rows[0], torch.tensor([0.75, 0.25]))
    torch.testing.assert_close(rows[1], torch.tensor([5.0, 5.0]))
    # A unit the old tokenizer never met on these recordings keeps its fresh row.
    torch.testing.assert_close(rows[2], torch.tensor([-7.0, -7.0]))
