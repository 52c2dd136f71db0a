"""Seeded audio augmentation for training utterances, numpy only.

Speed (resampling, 0.9..1.1), a small pitch shift (time-stretch then resample, length
kept), simple room reverb (an exponentially decaying noise impulse response), background
noise at a chosen SNR (white, brown, or babble mixed from other voices' utterances) and
gain. The parameters are drawn first (:func:`plan_augment`, JSON-ready) and applied second
(:func:`apply_augment`), so a corpus's manifest can be written before any audio is made.

SNR here is the ratio of the whole clip's power to the whole noise's power, so it can be
checked on the output exactly: ``10 log10(sum(clean**2) / sum(noise**2))``.
"""

from __future__ import annotations

import random
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import soxr

from parley.speech_io.audio import SAMPLE_RATE

NOISE_KINDS = ("white", "brown", "babble")

# Chances and ranges of the training augmentation.
SPEED_P, SPEED_RANGE = 0.8, (0.9, 1.1)
PITCH_P, PITCH_SEMITONES = 0.5, 2.0
REVERB_P, RT60_RANGE = 0.3, (0.15, 0.6)
NOISE_P, SNR_RANGE = 0.5, (5.0, 30.0)
GAIN_DB_RANGE = (-12.0, 3.0)
PEAK = 0.98  # never write a clipped sample


def plan_augment(rng: random.Random, noise_kinds: Sequence[str] = NOISE_KINDS) -> dict[str, Any]:
    """Draw one utterance's augmentation; only what is applied appears in the dict."""
    plan: dict[str, Any] = {"seed": rng.randrange(2**31)}
    if rng.random() < SPEED_P:
        plan["speed"] = round(rng.uniform(*SPEED_RANGE), 3)
    if rng.random() < PITCH_P:
        plan["pitch_semitones"] = round(rng.uniform(-PITCH_SEMITONES, PITCH_SEMITONES), 2)
    if rng.random() < REVERB_P:
        plan["reverb_rt60_s"] = round(rng.uniform(*RT60_RANGE), 3)
    if noise_kinds and rng.random() < NOISE_P:
        plan["noise"] = {
            "kind": rng.choice(list(noise_kinds)),
            "snr_db": round(rng.uniform(*SNR_RANGE), 1),
        }
    plan["gain_db"] = round(rng.uniform(*GAIN_DB_RANGE), 1)
    return plan


def apply_augment(
    audio: np.ndarray,
    plan: Mapping[str, Any],
    babble_pool: Sequence[np.ndarray] | None = None,
    pad_s: tuple[float, float] = (0.0, 0.0),
) -> np.ndarray:
    """Apply ``plan`` (from :func:`plan_augment`) to 16 kHz float audio.

    Order: speed, pitch, reverb, then ``pad_s`` seconds of silence before and after (so
    the noise covers the pauses too), noise, gain. The length changes only by the speed
    factor and the padding.
    """
    rng = np.random.default_rng(int(plan.get("seed", 0)))
    x = np.asarray(audio, dtype=np.float32)
    if "speed" in plan:
        x = change_speed(x, float(plan["speed"]))
    if "pitch_semitones" in plan:
        x = shift_pitch(x, float(plan["pitch_semitones"]))
    if "reverb_rt60_s" in plan:
        x = reverb(x, float(plan["reverb_rt60_s"]), rng)
    x = pad(x, *pad_s)
    if "noise" in plan:
        n = plan["noise"]
        x = add_noise(x, n["kind"], float(n["snr_db"]), rng, babble_pool)
    return apply_gain(x, float(plan.get("gain_db", 0.0)))


def augment(
    audio: np.ndarray, rng: random.Random, noise_pool: Sequence[np.ndarray] | None = None
) -> tuple[np.ndarray, dict[str, Any]]:
    """Draw and apply a training augmentation; return the audio and its description.

    Babble is drawn only when ``noise_pool`` (other voices' utterances) is given.
    """
    kinds = NOISE_KINDS if noise_pool else ("white", "brown")
    plan = plan_augment(rng, kinds)
    return apply_augment(audio, plan, noise_pool), plan


def pad(audio: np.ndarray, lead_s: float, tail_s: float) -> np.ndarray:
    """Silence before and after."""
    lead, tail = round(lead_s * SAMPLE_RATE), round(tail_s * SAMPLE_RATE)
    return np.concatenate([np.zeros(lead, np.float32), audio, np.zeros(tail, np.float32)])


def change_speed(audio: np.ndarray, speed: float) -> np.ndarray:
    """Play ``speed`` times faster (pitch moves with it); length becomes len/speed."""
    if speed == 1.0:
        return audio.astype(np.float32)
    return soxr.resample(audio, SAMPLE_RATE * speed, SAMPLE_RATE).astype(np.float32)


def shift_pitch(audio: np.ndarray, semitones: float) -> np.ndarray:
    """Move the pitch by ``semitones``, keeping the length: stretch in time, then resample."""
    if semitones == 0.0:
        return audio.astype(np.float32)
    factor = 2.0 ** (semitones / 12.0)
    stretched = time_stretch(audio, factor)
    out = soxr.resample(stretched, SAMPLE_RATE * factor, SAMPLE_RATE).astype(np.float32)
    return _fit(out, len(audio))


def time_stretch(audio: np.ndarray, factor: float, frame: int = 512, hop: int = 128) -> np.ndarray:
    """WSOLA: make ``audio`` ``factor`` times longer at the same pitch.

    Each output frame is the input frame near the ideal position that best continues the
    previous one (cross-correlation over +-``hop`` samples), overlap-added with a Hann
    window; for speech at small factors this sounds natural and needs only numpy.
    """
    x = np.asarray(audio, dtype=np.float32)
    if len(x) < 2 * frame:
        return _fit(x, round(len(x) * factor))
    out_len = round(len(x) * factor)
    window = np.hanning(frame).astype(np.float32)
    padded = np.concatenate(
        [np.zeros(frame + hop, np.float32), x, np.zeros(4 * frame + hop, np.float32)]
    )
    out = np.zeros(out_len + 2 * frame, np.float32)
    norm = np.zeros_like(out)
    prev = frame + hop  # where the previous frame was read in `padded`
    for k, pos in enumerate(range(0, out_len + frame, hop)):
        ideal = frame + hop + round(pos / factor)
        if k == 0:
            start = ideal
        else:
            target = padded[prev + hop : prev + hop + frame]
            lo, hi = ideal - hop, ideal + hop
            region = padded[lo : hi + frame]
            corr = np.correlate(region, target, mode="valid")
            start = lo + int(np.argmax(corr))
        seg = padded[start : start + frame]
        if len(seg) < frame:
            break
        out[pos : pos + frame] += seg * window
        norm[pos : pos + frame] += window
        prev = start
    out = out / np.maximum(norm, 1e-3)
    return out[:out_len]


def reverb(audio: np.ndarray, rt60_s: float, rng: np.random.Generator) -> np.ndarray:
    """Convolve with a synthetic room: a direct path then noise decaying 60 dB in ``rt60_s``.

    The level is restored to the dry signal's RMS and the length kept.
    """
    x = np.asarray(audio, dtype=np.float32)
    n = max(1, int(rt60_s * SAMPLE_RATE))
    t = np.arange(n) / SAMPLE_RATE
    rir = rng.standard_normal(n) * np.exp(-6.9 * t / rt60_s) * 0.3
    rir[0] = 1.0
    size = 1 << int(np.ceil(np.log2(len(x) + n)))
    wet = np.fft.irfft(np.fft.rfft(x, size) * np.fft.rfft(rir, size), size)[: len(x)]
    return (wet * (_rms(x) / max(_rms(wet), 1e-9))).astype(np.float32)


def make_noise(
    kind: str,
    n: int,
    rng: np.random.Generator,
    babble_pool: Sequence[np.ndarray] | None = None,
) -> np.ndarray:
    """``n`` samples of white, brown (1/f^2 power, no rumble below 20 Hz) or babble noise."""
    if kind == "white":
        return rng.standard_normal(n).astype(np.float32)
    if kind == "brown":
        spec = np.fft.rfft(rng.standard_normal(n))
        freqs = np.fft.rfftfreq(n, 1 / SAMPLE_RATE)
        spec = np.where(freqs >= 20.0, spec / np.maximum(freqs, 20.0), 0.0)
        return np.fft.irfft(spec, n).astype(np.float32)
    if kind == "babble":
        if not babble_pool:
            raise ValueError("babble noise needs a pool of other voices' utterances")
        talkers = int(rng.integers(3, 7))
        out = np.zeros(n, np.float32)
        for _ in range(talkers):
            out += _talker(n, rng, babble_pool)
        return out
    raise ValueError(f"unknown noise kind {kind!r}; known: {', '.join(NOISE_KINDS)}")


def _talker(n: int, rng: np.random.Generator, pool: Sequence[np.ndarray]) -> np.ndarray:
    """One background talker: random pool utterances back to back, from a random offset."""
    parts: list[np.ndarray] = []
    total = 0
    while total < n + SAMPLE_RATE:
        clip = pool[int(rng.integers(len(pool)))]
        clip = clip / max(_rms(clip), 1e-9)
        parts.append(clip)
        total += len(clip)
    stream = np.concatenate(parts)
    start = int(rng.integers(0, len(stream) - n + 1))
    return stream[start : start + n].astype(np.float32)


def add_noise(
    audio: np.ndarray,
    kind: str,
    snr_db: float,
    rng: np.random.Generator | random.Random,
    babble_pool: Sequence[np.ndarray] | None = None,
) -> np.ndarray:
    """Add ``kind`` noise at exactly ``snr_db`` (whole-clip powers); the length is kept.

    If the sum would clip, speech and noise are scaled down together, so the SNR holds.
    """
    if isinstance(rng, random.Random):
        rng = np.random.default_rng(rng.randrange(2**63))
    x = np.asarray(audio, dtype=np.float32)
    noise = make_noise(kind, len(x), rng, babble_pool).astype(np.float64)
    p_sig, p_noise = float(np.mean(x.astype(np.float64) ** 2)), float(np.mean(noise**2))
    if p_sig <= 0 or p_noise <= 0:
        return x.copy()
    noise *= np.sqrt(p_sig / (p_noise * 10.0 ** (snr_db / 10.0)))
    out = x + noise
    peak = float(np.max(np.abs(out)))
    if peak > PEAK:
        out *= PEAK / peak
    return out.astype(np.float32)


def apply_gain(audio: np.ndarray, gain_db: float) -> np.ndarray:
    """Scale by ``gain_db``, then down if needed so that no sample clips."""
    out = np.asarray(audio, dtype=np.float32) * np.float32(10.0 ** (gain_db / 20.0))
    peak = float(np.max(np.abs(out))) if out.size else 0.0
    return out * np.float32(PEAK / peak) if peak > PEAK else out


def normalize(audio: np.ndarray, rms_dbfs: float = -23.0) -> np.ndarray:
    """Bring speech to a common level (engines differ by 15 dB), never past ``PEAK``."""
    x = np.asarray(audio, dtype=np.float32)
    rms = _rms(x)
    if rms <= 0:
        return x.copy()
    out = x * np.float32(10.0 ** (rms_dbfs / 20.0) / rms)
    peak = float(np.max(np.abs(out)))
    return out * np.float32(PEAK / peak) if peak > PEAK else out


def _fit(x: np.ndarray, n: int) -> np.ndarray:
    return x[:n] if len(x) >= n else np.concatenate([x, np.zeros(n - len(x), x.dtype)])


def _rms(x: np.ndarray) -> float:
    return float(np.sqrt(np.mean(np.square(x, dtype=np.float64)))) if len(x) else 0.0
