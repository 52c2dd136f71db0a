"""Tuned encoder layers trained as low-rank differences: what ships is what trained."""

from __future__ import annotations

import torch

from parley.config import load_config
from parley.llm.encoder import BlockCausalEncoder
from parley.llm.tuned_layers import load_tuned, tuned_tensors
from parley.train.low_rank import factor_tuned, merge_tuned

TINY = load_config("tiny").model


def _encoder() -> BlockCausalEncoder:
    enc = BlockCausalEncoder.from_config(TINY.encoder, 80, seed=1)
    enc.requires_grad_(False)
    enc.add_tuned_copy(1)
    enc.tuned_module().requires_grad_(True)
    return enc


def _moved(enc: BlockCausalEncoder, rank: int) -> None:
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for p in enc.tuned_module().parameters():
            if p.dim() == 2:
                up = torch.randn(p.shape[0], rank, generator=gen)
                p.add_(0.01 * up @ torch.randn(rank, p.shape[1], generator=gen))


def _frames(enc: BlockCausalEncoder) -> torch.Tensor:
    shared = torch.randn(12, TINY.encoder.d_model, generator=torch.Generator().manual_seed(3))
    return enc.tuned_frames(shared)


def _train_a_little(enc: BlockCausalEncoder, steps: int = 3) -> None:
    trainable = [p for p in enc.tuned_module().parameters() if p.requires_grad]
    opt = torch.optim.SGD(trainable, lr=0.5)
    for _ in range(steps):
        opt.zero_grad()
        _frames(enc).pow(2).mean().backward()
        opt.step()


def test_factoring_keeps_a_difference_within_the_rank() -> None:
    enc = _encoder()
    _moved(enc, rank=3)
    before = _frames(enc)
    assert factor_tuned(enc, rank=4) > 0
    torch.testing.assert_close(_frames(enc), before, atol=1e-5, rtol=1e-5)


def test_only_the_factors_and_vectors_learn() -> None:
    enc = _encoder()
    factor_tuned(enc, rank=4)
    names = {n for n, p in enc.tuned_module().named_parameters() if p.requires_grad}
    assert any(n.endswith(".up") for n in names)
    assert not any(n.endswith(".original") for n in names)
    whisper = [p for p in enc.whisper.parameters()]
    assert not any(p.requires_grad for p in whisper)


def test_a_copy_equal_to_whisper_still_learns_every_matrix() -> None:
    enc = _encoder()
    factor_tuned(enc, rank=4)  # no difference yet: up starts at zero, down at random
    base = dict(enc.whisper.layers[-1].named_parameters())
    _train_a_little(enc)
    merge_tuned(enc)
    for name, p in enc.tuned[0].named_parameters():
        if p.dim() == 2:
            assert not torch.equal(p, base[name]), name


def test_what_is_stored_at_the_rank_is_what_trained() -> None:
    enc = _encoder()
    _moved(enc, rank=8)  # more than the rank: the start is cut to it
    factor_tuned(enc, rank=4)
    _train_a_little(enc)
    trained = _frames(enc).detach()
    merge_tuned(enc)
    torch.testing.assert_close(_frames(enc), trained, atol=1e-5, rtol=1e-5)
    fresh = _encoder()
    load_tuned(fresh, tuned_tensors(enc, 4), "test")
    torch.testing.assert_close(_frames(fresh), trained, atol=1e-4, rtol=1e-4)
    assert all(p.requires_grad for p in enc.tuned_module().parameters())
