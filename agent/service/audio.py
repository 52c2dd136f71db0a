"""Audio on the wire: the rates a client may choose and the resampling qualities (the
PCM16 coding itself is :mod:`parley.speech_io.pcm16`).

The model runs at 16 kHz; the Realtime protocol's default is 24 kHz. Each direction keeps
one streaming :class:`~parley.speech_io.resample.Resampler`.
"""

from __future__ import annotations

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
