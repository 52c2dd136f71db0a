"""The encoder's tuned copies trained as low-rank differences from Whisper's own layers.

A checkpoint stores each tuned matrix as Whisper's plus a difference of rank
``--tuned-rank`` (:mod:`parley.llm.tuned_layers`). Trained whole and cut to that rank at
export (session 13), the copies lost what lay beyond it: rank 96 held 72-89% of each
difference's energy, and the frames moved 13% off where training had taken them. Trained
as the difference itself, what ships is what trained.
"""

from __future__ import annotations

from typing import cast

import torch
from torch import Tensor, nn
from torch.nn.utils import parametrize

from parley.llm.encoder import BlockCausalEncoder
from parley.llm.tuned_layers import whisper_originals

__all__ = ["LowRankDelta", "factor_tuned", "merge_tuned"]


class LowRankDelta(nn.Module):
    """A parametrization: the (frozen) original weight plus ``up @ down``."""

    def __init__(self, up: Tensor, down: Tensor) -> None:
        super().__init__()
        self.up = nn.Parameter(up)
        self.down = nn.Parameter(down)

    def forward(self, original: Tensor) -> Tensor:
        return original + (self.up @ self.down).to(original.dtype)


@torch.no_grad()
def _factors(delta: Tensor, rank: int, gen: torch.Generator) -> tuple[Tensor, Tensor]:
    """``up`` and ``down`` whose product is ``delta``'s top ``rank`` part, the singular
    values split evenly between them (so both learn at a like pace).

    A direction the difference lacks would start with both factors zero, where neither
    gets a gradient: its ``down`` row is drawn small and random instead (``up`` stays zero,
    so the product is unchanged), as LoRA starts every direction."""
    u, s, vh = torch.linalg.svd(delta.double(), full_matrices=False)
    root = s[:rank].sqrt()
    up = (u[:, :rank] * root).float()
    down = (root[:, None] * vh[:rank]).float()
    dead = s[:rank] <= max(float(s[0]), 1e-12) * 1e-6
    if dead.any():
        fresh = torch.randn(int(dead.sum()), delta.shape[1], generator=gen)
        down[dead] = fresh / delta.shape[1] ** 0.5
        up[:, dead] = 0.0
    return up, down


def factor_tuned(encoder: BlockCausalEncoder, rank: int, seed: int = 0) -> int:
    """Make every tuned matrix Whisper's own (frozen) plus a trainable difference of rank
    ``rank``, starting from the copy's present difference cut to that rank; vectors
    (biases, norms) stay whole and trainable. Returns how many matrices were factored
    (a matrix no larger than ``rank`` stays whole)."""
    base = dict(whisper_originals(encoder).named_parameters())
    tuned = encoder.tuned_module()
    gen = torch.Generator().manual_seed(seed)
    factored = 0
    for name, p in list(tuned.named_parameters()):
        if p.dim() != 2 or not 0 < rank < min(p.shape):
            continue
        owner, _, attr = name.rpartition(".")
        module = tuned.get_submodule(owner)
        with torch.no_grad():
            up, down = _factors(p - base[name], rank, gen)
            p.copy_(base[name])
        parametrize.register_parametrization(module, attr, LowRankDelta(up, down))
        # Whisper's own weight, now the parametrization's input: it must not learn.
        getattr(module.parametrizations, attr).original.requires_grad_(False)
        factored += 1
    return factored


def merge_tuned(encoder: BlockCausalEncoder) -> None:
    """Fold the factored differences back into plain weights (what export and the
    runtime read); a no-op for copies that were never factored."""
    for module in encoder.tuned_module().modules():
        if parametrize.is_parametrized(module):
            for attr in list(cast(nn.ModuleDict, module.parametrizations).keys()):
                parametrize.remove_parametrizations(module, attr, leave_parametrized=True)
    encoder.tuned_module().requires_grad_(True)
