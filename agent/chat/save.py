"""Saving a chat: both channels as WAV and the event log as JSON, in one folder."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import numpy as np

from parley.speech_io.audio import SAMPLE_RATE as SR
from parley.speech_io.audio import write_wav


def save_session(
    folder: Path,
    mic: np.ndarray,
    output: np.ndarray,
    events: list[dict[str, Any]],
    meta: dict[str, Any],
) -> Path:
    """Write ``mic.wav`` (what the session heard, mute applied), ``agent.wav`` (what it
    played) and ``events.json`` under a new ``chat-<time>`` folder in ``folder``; return it."""
    stamp = time.strftime("%Y%m%d-%H%M%S")
    out = folder / f"chat-{stamp}"
    n = 1
    while out.exists():  # two saves in one second
        n += 1
        out = folder / f"chat-{stamp}-{n}"
    out.mkdir(parents=True)
    write_wav(out / "mic.wav", mic, SR)
    write_wav(out / "agent.wav", output, SR)
    (out / "events.json").write_text(json.dumps({**meta, "events": events}, indent=1) + "\n")
    return out
