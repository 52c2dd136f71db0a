"""The tuned encoder layers as a checkpoint stores them: differences from Whisper's own."""

from __future__ import annotations

import pytest
import torch

from parley.config import load_config
from parley.errors import CheckpointError
from parley.llm.encoder import BlockCausalEncoder
from parley.llm.tuned_layers import load_tuned, tuned_tensors

TINY = load_config("tiny").model


def _encoder(layers: int = 1) -> BlockCausalEncoder:
    enc = BlockCausalEncoder.from_config(TINY.encoder, 80, seed=1)
    enc.add_tuned_copy(layers)
    return enc


def _moved(enc: BlockCausalEncoder, rank: int, seed: int = 0) -> None:
    """Move every tuned matrix by a difference of exactly ``rank``, every vector a little."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in enc.tuned_module().parameters():
            if p.dim() == 2:
                up = torch.randn(p.shape[0], rank, generator=gen)
                p.add_(0.01 * up @ torch.randn(rank, p.shape[1], generator=gen))
            else:
                p.add_(0.01 * torch.randn(p.shape, generator=gen))


def _same(a: BlockCausalEncoder, b: BlockCausalEncoder, **tol) -> None:
    for (name, x), y in zip(
        a.tuned_module().named_parameters(), b.tuned_module().parameters(), strict=True
    ):
        torch.testing.assert_close(x, y, msg=name, **tol)


@pytest.mark.parametrize("rank", [0, 3])
def test_stored_differences_give_back_the_tuned_layers(rank: int) -> None:
    trained = _encoder()
    _moved(trained, rank=3)
    stored = tuned_tensors(trained, rank)
    factored = [k for k in stored if k.endswith(".up")]
    assert bool(factored) == (rank > 0)
    fresh = _encoder()
    load_tuned(fresh, stored, "test")
    _same(trained, fresh, atol=1e-5, rtol=1e-5)


def test_a_lower_rank_keeps_the_largest_part_of_the_difference() -> None:
    trained = _encoder()
    _moved(trained, rank=8)
    fresh = _encoder()
    load_tuned(fresh, tuned_tensors(trained, 4), "test")
    base = dict(trained.whisper.layers[-1].named_parameters())
    got = dict(fresh.tuned[0].named_parameters())
    for name, p in trained.tuned[0].named_parameters():
        if p.dim() == 2:
            full = (p - base[name]).norm()
            left = (p - got[name]).norm()
            assert 0 < left < full, name  # not exact, and nearer than Whisper's own


def test_a_stored_file_that_does_not_fit_is_named() -> None:
    trained = _encoder()
    stored = tuned_tensors(trained, 0)
    missing = dict(stored)
    missing.pop("norm.weight")
    with pytest.raises(CheckpointError, match="norm.weight: missing"):
        load_tuned(_encoder(), missing, "tuned.safetensors")
    with pytest.raises(CheckpointError, match="extra: unexpected"):
        load_tuned(_encoder(), {**stored, "extra": torch.zeros(1)}, "tuned.safetensors")
    with pytest.raises(CheckpointError, match=r"fc1.bias: shape \(3,\), expected"):
        load_tuned(_encoder(), stored | {"layers.0.fc1.bias": torch.zeros(3)}, "x")
