"""Audio on the wire: PCM16 little-endian mono, and the rates and resampling qualities.

The model runs at 16 kHz; the Realtime protocol's default is 24 kHz. Each direction keeps
one streaming :class:`~parley.speech_io.resample.Resampler`.
"""

from __future__ import annotations

import base64
import binascii

import numpy as np

from parley.speech_io.audio import SAMPLE_RATE as MODEL_RATE

# Rates a client may choose for ``audio/pcm``: the protocol's 24 kHz, and the model's own
# 16 kHz (no resampling at all). Others are refused rather than silently resampled from
# an odd rate a client may have declared by mistake.
PCM_RATES = (MODEL_RATE, 24000)
# Output (16 -> 24 kHz) uses soxr's quick cubic mode: it adds no buffering delay, and any
# delay here is time the client hears our voice after a barge-in. Input uses "LQ", a
# real low-pass filter (24 -> 16 kHz must not alias 8-12 kHz into the band the model
# hears) that holds back about one 20 ms chunk.
OUTPUT_QUALITY = "QQ"
INPUT_QUALITY = "LQ"


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
