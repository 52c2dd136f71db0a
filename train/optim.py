"""What the codec and LM trainers share: the optimiser and the learning-rate schedule."""

from __future__ import annotations

import math

import torch
from torch import nn


def _groups(params: list[nn.Parameter], weight_decay: float, **extra) -> list[dict]:
    return [
        {"params": [p for p in params if p.dim() >= 2], "weight_decay": weight_decay, **extra},
        {"params": [p for p in params if p.dim() < 2], "weight_decay": 0, **extra},
    ]


def adamw(
    module: nn.Module,
    lr: float,
    weight_decay: float,
    betas: tuple[float, float],
    scaled: tuple[nn.Module, float] | None = None,
):
    """AdamW with weight decay on matrices and kernels only (not on norms, biases, scales).
    ``scaled``: a submodule whose groups carry ``lr_scale`` (the step multiplies its rate)."""
    special = {id(p) for p in scaled[0].parameters()} if scaled else set()
    groups = _groups([p for p in module.parameters() if id(p) not in special], weight_decay)
    if scaled:
        groups += _groups(list(scaled[0].parameters()), weight_decay, lr_scale=scaled[1])
    return torch.optim.AdamW(groups, lr=lr, betas=betas)


def warmup_cosine(step: int, total: int, peak: float, warmup: int, min_ratio: float) -> float:
    """Linear warm-up to ``peak`` over ``warmup`` steps, then a cosine down to
    ``peak * min_ratio`` at ``total`` (and held there after)."""
    if step < warmup:
        return peak * (step + 1) / warmup
    progress = min(1.0, (step - warmup) / max(1, total - warmup))
    cosine = 0.5 * (1.0 + math.cos(math.pi * progress))
    return peak * (min_ratio + (1.0 - min_ratio) * cosine)
