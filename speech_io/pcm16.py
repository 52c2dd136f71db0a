"""PCM16 little-endian mono in base64, as the WebSocket protocol carries audio: shared by
the service and any client of it (the harness's wire runs, the examples)."""

from __future__ import annotations

import base64
import binascii

import numpy as np


class AudioFormatError(ValueError):
    """Audio bytes that cannot be PCM16 in the session's format."""


def decode_pcm16(data: str) -> np.ndarray:
    """Base64 PCM16 little-endian mono to float32 in [-1, 1)."""
    try:
        raw = base64.b64decode(data, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise AudioFormatError(f"audio is not valid base64: {exc}") from None
    if len(raw) % 2:
        raise AudioFormatError(f"PCM16 audio needs an even number of bytes, got {len(raw)}")
    return np.frombuffer(raw, dtype="<i2").astype(np.float32) / 32768.0


def encode_pcm16(samples: np.ndarray) -> str:
    """float32 samples to base64 PCM16 little-endian (clipped to the int16 range)."""
    pcm = np.clip(np.round(samples * 32768.0), -32768, 32767).astype("<i2")
    return base64.b64encode(pcm.tobytes()).decode("ascii")
