"""Reading and writing module weights as safetensors, with errors that name file and tensor."""

from __future__ import annotations

from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from parley.errors import CheckpointError

_SHOWN = 8


def save_state(module: torch.nn.Module, path: Path, prefix: str = "") -> None:
    """Write ``module``'s state as safetensors: contiguous, keys sorted, so bytes are stable."""
    state = {
        prefix + k: v.detach().cpu().contiguous() for k, v in sorted(module.state_dict().items())
    }
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
    problems = []
    missing = [k for k in sorted(expected) if k not in tensors]
    if missing:
        problems.append(
            "missing tensor(s): "
            + ", ".join(
                f"{k!r} (expected shape {tuple(expected[k].shape)})" for k in missing[:_SHOWN]
            )
            + _more(missing)
        )
    unexpected = sorted(set(tensors) - set(expected))
    if unexpected:
        problems.append(
            "unexpected tensor(s): "
            + ", ".join(f"{k!r} {tuple(tensors[k].shape)}" for k in unexpected[:_SHOWN])
            + _more(unexpected)
        )
    misshaped = [
        f"{k!r} has shape {tuple(tensors[k].shape)}, expected {tuple(expected[k].shape)}"
        for k in sorted(set(expected) & set(tensors))
        if expected[k].shape != tensors[k].shape
    ]
    if misshaped:
        problems.append("; ".join(misshaped[:_SHOWN]) + _more(misshaped))
    if problems:
        raise CheckpointError(f"{source}: " + " | ".join(problems))
    with torch.no_grad():
        module.load_state_dict(tensors, strict=True)


def load_file_into(module: torch.nn.Module, path: Path) -> None:
    """Load the safetensors file at ``path`` into ``module`` exactly."""
    load_state(module, read_tensors(path), str(path))


def _more(items: list[str]) -> str:
    return f" (+{len(items) - _SHOWN} more)" if len(items) > _SHOWN else ""


def read_input_embeddings(lm_dir: Path) -> torch.Tensor:
    """The input embedding table of the HF causal LM in ``lm_dir``, without loading the rest.

    Reads the one tensor named ``*embed_tokens.weight`` from ``model.safetensors`` or,
    for a sharded model, from the shard its index names.
    """
    from safetensors import safe_open

    index = lm_dir / "model.safetensors.index.json"
    if index.is_file():
        import json

        weight_map = json.loads(index.read_text()).get("weight_map", {})
        names = [k for k in weight_map if k.endswith("embed_tokens.weight")]
        files = [lm_dir / weight_map[k] for k in names[:1]]
    else:
        files = [lm_dir / "model.safetensors"]
        names = []
    for file in files:
        if not file.is_file():
            raise CheckpointError(f"missing checkpoint file: {file}")
        with safe_open(str(file), framework="pt") as f:
            name = next((k for k in f.keys() if k.endswith("embed_tokens.weight")), None)  # noqa: SIM118  (safe_open is not a dict)
            if name is not None:
                return f.get_tensor(name)
    raise CheckpointError(
        f"{lm_dir}: no '*embed_tokens.weight' tensor in {', '.join(map(str, files))}"
    )
