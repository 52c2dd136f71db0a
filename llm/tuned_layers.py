"""The encoder's tuned layers as a checkpoint stores them: what they add to Whisper's own.

A tuned copy of tiny.en's top layer is 3.5 MB in float16, and the shipped checkpoint has
a 40 MB budget. Training moves the copies little from Whisper's weights, so each matrix is
stored as its difference from the original at low rank (``name.up`` @ ``name.down``, from
a truncated SVD); vectors (biases, norms) are stored whole. Loading adds the difference
back to the checkpoint's own Whisper layers, so the file means nothing without them.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from parley.errors import CheckpointError
from parley.llm.encoder import BlockCausalEncoder

__all__ = ["load_tuned", "tuned_tensors", "whisper_originals"]


def whisper_originals(encoder: BlockCausalEncoder) -> nn.ModuleDict:
    """Whisper's own layers and norm that the tuned module copies, keyed as it is."""
    return nn.ModuleDict(
        {
            "layers": nn.ModuleList(encoder.whisper.layers[encoder.branch_at :]),
            "norm": encoder.whisper.layer_norm,
        }
    )


@torch.no_grad()
def tuned_tensors(encoder: BlockCausalEncoder, rank: int) -> dict[str, Tensor]:
    """The tensors to store for ``encoder``'s tuned layers: each matrix's difference from
    Whisper's at ``rank`` (0: the matrices whole), every vector whole."""
    base = dict(whisper_originals(encoder).named_parameters())
    out: dict[str, Tensor] = {}
    for name, p in encoder.tuned_module().named_parameters():
        if p.dim() != 2 or not 0 < rank < min(p.shape):
            out[name] = p.detach().clone()
            continue
        u, s, vh = torch.linalg.svd((p - base[name]).double(), full_matrices=False)
        out[f"{name}.up"] = (u[:, :rank] * s[:rank]).float()
        out[f"{name}.down"] = vh[:rank].float()
    return out


@torch.no_grad()
def load_tuned(encoder: BlockCausalEncoder, tensors: dict[str, Tensor], source: str) -> None:
    """Set ``encoder``'s tuned copies (already added) from :func:`tuned_tensors`' output."""
    base = dict(whisper_originals(encoder).named_parameters())
    params = dict(encoder.tuned_module().named_parameters())
    wanted, problems = set(tensors), []
    for name, p in params.items():
        if name in tensors:
            value = tensors[name]
            wanted.discard(name)
        elif f"{name}.up" in tensors and f"{name}.down" in tensors:
            up, down = tensors[f"{name}.up"], tensors[f"{name}.down"]
            wanted -= {f"{name}.up", f"{name}.down"}
            if up.dim() != 2 or down.dim() != 2 or up.shape[1] != down.shape[0]:
                problems.append(f"{name}: factors {tuple(up.shape)} @ {tuple(down.shape)}")
                continue
            value = base[name].float() + up.float() @ down.float()
        else:
            problems.append(f"{name}: missing")
            continue
        if value.shape != p.shape:
            problems.append(f"{name}: shape {tuple(value.shape)}, expected {tuple(p.shape)}")
            continue
        p.copy_(value)
    problems += [f"{name}: unexpected" for name in sorted(wanted)]
    if problems:
        raise CheckpointError(f"{source}: " + "; ".join(problems[:5]))
