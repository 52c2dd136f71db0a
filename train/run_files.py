"""What the codec and LM training loops keep on disk: a log of metric rows, and a saved
state to resume from. Both survive a stopped run: rows are appended one line each, and a
state is written aside and renamed, so a kill mid-write leaves the previous one whole."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch


def append_rows(path: Path, *rows: dict[str, Any]) -> None:
    with path.open("a") as f:
        f.writelines(json.dumps(row) + "\n" for row in rows)


def read_rows(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines() if line]


def drop_rows_after(path: Path, step: int) -> None:
    """Forget rows past ``step``: a run resumed from there is about to redo them."""
    if path.is_file():
        kept = [row for row in read_rows(path) if row["step"] <= step]
        path.write_text("".join(json.dumps(row) + "\n" for row in kept))


def save_state(state: dict[str, Any], path: Path) -> None:
    tmp = path.with_suffix(".tmp")
    torch.save(state, tmp)
    tmp.replace(path)
