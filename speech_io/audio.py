"""Audio input hygiene and WAV I/O.

Every path by which user audio enters the system goes through :func:`load_audio` (files)
or :func:`prepare_audio` (arrays): both return float32 mono at the model rate, or raise
:class:`~parley.errors.AudioInputError` naming the input and what is wrong with it, so
nothing downstream has to check for NaN, silence or the wrong rate again. Streamed audio
(a microphone's chunks) goes through :func:`prepare_chunk`, the same checks less those
that only make sense for a whole recording.
"""

from __future__ import annotations

import numbers
from pathlib import Path

import numpy as np
import soundfile as sf
import soxr

from parley.errors import AudioInputError
from parley.speech_io.wav_header import truncation

__all__ = ["SAMPLE_RATE", "load_audio", "prepare_audio", "prepare_chunk", "write_wav"]

SAMPLE_RATE = 16000
"""The model's rate: features, VAD, echo canceller, vocoder and every session buffer run
at it; audio at any other rate is resampled on the way in and out."""

# Below telephone band speech is not speech any more: a file that claims 1 Hz is broken,
# and resampling it up would make minutes of noise out of a hundred samples.
MIN_SAMPLE_RATE = 8000
# Mono and stereo are mixed down as a matter of course; more channels are a multitrack or
# a surround recording, where the average is rarely the voice a user meant.
MAX_CHANNELS = 2

# Full-scale divisors that map each PCM integer type onto [-1, 1), as soundfile does.
_INT_SCALE = {np.dtype(np.int16): 32768.0, np.dtype(np.int32): 2147483648.0}


def load_audio(path: str | Path, target_rate: int = SAMPLE_RATE) -> np.ndarray:
    """Read any file soundfile reads; return validated float32 mono at ``target_rate``.

    Stereo is averaged to mono and the rate converted with soxr (quality "HQ"). A WAV
    cut short, more than two channels or a rate below 8000 Hz are refused.
    """
    path = Path(path)
    target_rate = _check_rate(target_rate, "target rate", str(path))
    if not path.exists():
        raise AudioInputError(f"{path}: file not found")
    if not path.is_file():
        raise AudioInputError(f"{path}: not a file")
    try:
        samples, rate = sf.read(path, dtype="float32", always_2d=True)
    except (sf.SoundFileError, RuntimeError, OSError) as exc:
        # libsndfile's message ("Format not recognised", ...) is the useful part; the
        # traceback is not, so the CLI can print one line.
        raise AudioInputError(f"{path}: cannot read audio: {exc}") from None
    cut = truncation(path)
    if cut is not None:
        raise AudioInputError(f"{path}: {cut}")
    return prepare_audio(samples, rate, target_rate, name=str(path))


def prepare_audio(
    samples: np.ndarray,
    sample_rate: int,
    target_rate: int = SAMPLE_RATE,
    name: str = "audio",
) -> np.ndarray:
    """Validate an in-memory signal; return float32 mono at ``target_rate``.

    ``samples`` is ``(n,)`` or ``(n, channels)`` (soundfile's layout), of int16, int32 or
    float dtype; integers are scaled to [-1, 1). Floats are taken as they are, not
    rescaled or clipped. Up to two channels, at 8000 Hz or more. ``name`` labels the input
    in error messages.
    """
    rate = _check_rate(sample_rate, "sample rate", name)
    if rate < MIN_SAMPLE_RATE:
        raise AudioInputError(
            f"{name}: sample rate {rate} Hz is too low for speech (at least {MIN_SAMPLE_RATE} Hz)"
        )
    target = _check_rate(target_rate, "target rate", name)
    x = np.asarray(samples)
    if x.ndim not in (1, 2):
        raise AudioInputError(
            f"{name}: expected shape (samples,) or (samples, channels), got {x.shape}"
        )
    if x.size == 0:
        raise AudioInputError(f"{name}: audio is empty (shape {x.shape})")
    if x.ndim == 2 and x.shape[1] > x.shape[0]:
        # (channels, samples) is the torch/librosa layout; averaging the wrong axis would
        # silently turn speech into a handful of samples.
        raise AudioInputError(
            f"{name}: shape {x.shape} has more channels than samples; "
            "pass (samples, channels), e.g. transpose it"
        )
    if x.ndim == 2 and x.shape[1] > MAX_CHANNELS:
        raise AudioInputError(
            f"{name}: {x.shape[1]} channels; give mono or stereo "
            "(e.g. sox in.wav -c 1 out.wav, or pick the voice's channel)"
        )
    x = _to_float(x, name)
    _check_finite(x, name)
    if not np.any(x):
        raise AudioInputError(f"{name}: audio is silent (every sample is zero)")
    mono = x.mean(axis=1, dtype=np.float64).astype(np.float32) if x.ndim == 2 else x
    if not np.any(mono):
        raise AudioInputError(f"{name}: channels cancel out when mixed down to mono")
    if rate != target:
        mono = soxr.resample(mono, rate, target, quality="HQ")
        if mono.size == 0:
            raise AudioInputError(
                f"{name}: {x.shape[0]} samples at {rate} Hz is too short to resample to {target} Hz"
            )
    return np.ascontiguousarray(mono, dtype=np.float32)


def prepare_chunk(samples: np.ndarray, sample_rate: int, name: str = "audio") -> np.ndarray:
    """Validate one chunk of a stream; return it as float32 mono, still at ``sample_rate``.

    The checks of :func:`prepare_audio` that hold for any piece of a stream: a whole
    positive rate, int16/int32 (scaled to [-1, 1)) or float samples, all finite. A chunk
    may be empty or silent, and it must already be mono ``(n,)``: which axis holds the
    channels of a short 2-D chunk is ambiguous. Resampling is left to the caller's
    streaming resampler, since resampling chunks one by one would click at their edges.
    """
    _check_rate(sample_rate, "sample rate", name)
    if samples is None:
        raise AudioInputError(f"{name}: got None instead of an array of samples")
    x = np.asarray(samples)
    if x.ndim != 1:
        raise AudioInputError(
            f"{name}: expected mono samples of shape (n,), got shape {x.shape}; "
            "mix the channels down first (e.g. samples.mean(axis=1) for (n, channels))"
        )
    x = _to_float(x, name)
    _check_finite(x, name)
    return x


def write_wav(path: str | Path, samples: np.ndarray, sample_rate: int) -> Path:
    """Write ``(n,)`` or ``(n, channels)`` float samples as 16-bit PCM WAV; return the path.

    Samples are clipped to [-1, 1] first (libsndfile would otherwise wrap loud ones
    around), and missing parent folders are created.
    """
    path = Path(path)
    rate = _check_rate(sample_rate, "sample rate", str(path))
    x = np.asarray(samples)
    if x.ndim not in (1, 2):
        raise AudioInputError(
            f"{path}: expected shape (samples,) or (samples, channels), got {x.shape}"
        )
    x = _to_float(x, str(path))
    _check_finite(x, str(path))
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(path, np.clip(x, -1.0, 1.0), rate, subtype="PCM_16", format="WAV")
    return path


def _check_rate(rate: object, what: str, name: str) -> int:
    """A rate must be a positive whole number; integral floats (16000.0) are accepted."""
    # bool is an int subclass, and True Hz is surely a mistake.
    if isinstance(rate, bool) or not isinstance(rate, numbers.Real):
        raise AudioInputError(f"{name}: {what} must be a positive integer, got {rate!r}")
    if not float(rate).is_integer() or rate <= 0:
        raise AudioInputError(f"{name}: {what} must be a positive integer, got {rate!r}")
    return int(float(rate))


def _to_float(x: np.ndarray, name: str) -> np.ndarray:
    if x.dtype in _INT_SCALE:
        return (x.astype(np.float64) / _INT_SCALE[x.dtype]).astype(np.float32)
    if np.issubdtype(x.dtype, np.floating):
        return x.astype(np.float32, copy=False)
    raise AudioInputError(f"{name}: unsupported sample type {x.dtype}; use int16, int32 or float")


def _check_finite(x: np.ndarray, name: str) -> None:
    finite = np.isfinite(x)
    if finite.all():
        return
    nans = int(np.isnan(x).sum())
    infs = int(x.size - finite.sum()) - nans
    problems = [f"{n} {kind}" for n, kind in ((nans, "NaN"), (infs, "infinite")) if n]
    raise AudioInputError(f"{name}: audio has {' and '.join(problems)} samples")
