"""Loading safetensors into modules with errors that name the file and the tensor."""

from __future__ import annotations

from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from parley.errors import CheckpointError


def save_state(module: torch.nn.Module, path: Path, prefix: str = "") -> None:
    """Write ``module``'s state as safetensors: contiguous, keys sorted, so bytes are stable."""
    state = {prefix + k: v.detach().contiguous() for k, v in sorted(module.state_dict().items())}
    save_file(state, str(path), metadata={"format": "pt"})


def read_tensors(path: Path) -> dict[str, torch.Tensor]:
    """All tensors of a safetensors file; a missing or corrupt file is a CheckpointError."""
    if not path.is_file():
        raise CheckpointError(f"missing checkpoint file: {path}")
    try:
        return load_file(str(path))
    except Exception as exc:  # safetensors raises its own error types for corrupt files
        raise CheckpointError(f"{path}: not a readable safetensors file ({exc})") from None


def load_state(module: torch.nn.Module, tensors: dict[str, torch.Tensor], source: str) -> None:
    """Load ``tensors`` into ``module`` exactly: every tensor present, none extra, shapes equal."""
    expected = module.state_dict()
    missing = sorted(set(expected) - set(tensors))
    unexpected = sorted(set(tensors) - set(expected))
    misshaped = [
        f"{k}: expected {tuple(expected[k].shape)}, found {tuple(tensors[k].shape)}"
        for k in sorted(set(expected) & set(tensors))
        if expected[k].shape != tensors[k].shape
    ]
    problems = []
    if missing:
        problems.append("missing tensors: " + ", ".join(missing[:8]) + _more(missing))
    if unexpected:
        problems.append("unexpected tensors: " + ", ".join(unexpected[:8]) + _more(unexpected))
    if misshaped:
        problems.append("mismatched shapes: " + "; ".join(misshaped[:8]) + _more(misshaped))
    if problems:
        raise CheckpointError(f"{source}: " + " | ".join(problems))
    module.load_state_dict(tensors, strict=True)


def _more(items: list[str]) -> str:
    return f" (+{len(items) - 8} more)" if len(items) > 8 else ""
