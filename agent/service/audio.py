"""Audio on the wire: PCM16 little-endian mono, and streaming resampling to and from 16 kHz.

The model runs at 16 kHz; the Realtime protocol's default is 24 kHz. Each direction keeps
one streaming resampler, so chunk boundaries leave no clicks and the sample count over a
stream is exact.
"""

from __future__ import annotations

import base64
import binascii

import numpy as np
import soxr

MODEL_RATE = 16000
# Rates a client may choose for ``audio/pcm``: the protocol's 24 kHz, and the model's own
# 16 kHz (no resampling at all). Others are refused rather than silently resampled from
# an odd rate a client may have declared by mistake.
PCM_RATES = (16000, 24000)
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


class Resampler:
    """A streaming resampler from ``src`` to ``dst`` Hz (a pass-through when equal)."""

    def __init__(self, src: int, dst: int, quality: str) -> None:
        self.src, self.dst = src, dst
        self._stream = (
            None
            if src == dst
            else soxr.ResampleStream(src, dst, 1, dtype="float32", quality=quality)
        )

    def push(self, samples: np.ndarray) -> np.ndarray:
        samples = np.asarray(samples, dtype=np.float32)
        if self._stream is None:
            return samples
        return self._stream.resample_chunk(samples)

    def flush(self) -> np.ndarray:
        """What the filter still holds; the stream is over after this."""
        if self._stream is None:
            return np.zeros(0, dtype=np.float32)
        return self._stream.resample_chunk(np.zeros(0, dtype=np.float32), last=True)
