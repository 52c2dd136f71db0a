"""Render one scenario step to 16 kHz audio, with where its content truly starts and ends.

Speech clips carry leading and trailing silence (espeak-ng pads both ends), so the
metrics use :attr:`StepAudio.onset` / :attr:`StepAudio.offset`, found by level, as the
user's real speech start and end rather than the clip's edges.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from parley.agent.harness.scenario import Step
from parley.errors import AudioInputError, EngineUnavailableError
from parley.speech_io.audio import SAMPLE_RATE, load_audio

__all__ = ["SAMPLE_RATE", "StepAudio", "render_step", "say", "speech_span"]

ACTIVE_DB = -45.0  # a 10 ms window above this RMS level counts as content
WINDOW_MS = 10
BROWN_HIGHPASS_HZ = 20.0  # keeps integrated noise from drifting into DC
_TTS_FORMAT = 1  # bump when the cached representation changes


@dataclass(frozen=True)
class StepAudio:
    """A rendered step: ``samples`` at 16 kHz, content in ``[onset, offset)``.

    ``onset`` is the first sample above -45 dBFS (in the first 10 ms window whose RMS is
    above it); ``offset`` is one past the last such sample. Noise spans the whole clip;
    silence has ``onset == offset == 0``.
    """

    samples: np.ndarray
    onset: int
    offset: int
    sample_rate: int = SAMPLE_RATE

    @property
    def duration_s(self) -> float:
        """Length of the whole clip in seconds."""
        return len(self.samples) / self.sample_rate

    @property
    def content_s(self) -> float:
        """Length of ``[onset, offset)`` in seconds."""
        return (self.offset - self.onset) / self.sample_rate


def speech_span(
    samples: np.ndarray,
    sample_rate: int = SAMPLE_RATE,
    threshold_db: float = ACTIVE_DB,
    window_ms: int = WINDOW_MS,
) -> tuple[int, int] | None:
    """``(onset, offset)`` of the content above ``threshold_db``; None if there is none.

    10 ms RMS windows find the content; inside the first and last active windows the
    edge is the first/last sample whose magnitude crosses the threshold, so the span is
    sample-exact rather than 10 ms coarse.
    """
    x = np.asarray(samples, dtype=np.float64)
    win = max(1, sample_rate * window_ms // 1000)
    n_win = -(-len(x) // win)
    if n_win == 0:
        return None
    padded = np.zeros(n_win * win)
    padded[: len(x)] = x
    rms = np.sqrt(np.mean(padded.reshape(n_win, win) ** 2, axis=1))
    level = 10.0 ** (threshold_db / 20.0)
    active = np.flatnonzero(rms > level)
    if active.size == 0:
        return None
    first = active[0] * win
    last_end = min(len(x), (active[-1] + 1) * win)
    head = np.flatnonzero(np.abs(x[first : first + win]) > level)
    tail = np.flatnonzero(np.abs(x[active[-1] * win : last_end]) > level)
    # An active window always holds a sample above the RMS level, so head/tail are non-empty.
    return int(first + head[0]), int(active[-1] * win + tail[-1] + 1)


def say(text: str, voice: str, cache_dir: Path) -> np.ndarray:
    """Speak ``text`` in ``voice``: an espeak-ng voice ("en-us") or one of the corpus's
    voices ("flite-rms", "mbrola-us3": :mod:`parley.train.voices`, at their default rate
    and pitch). 16 kHz float32, cached by (text, voice)."""
    key = json.dumps([_TTS_FORMAT, text, voice], ensure_ascii=False)
    digest = hashlib.sha256(key.encode()).hexdigest()[:32]
    cached = cache_dir / f"{digest}.npy"
    if cached.is_file():
        return np.load(cached)
    corpus = _corpus_voice(voice)
    samples = corpus.synthesize(text) if corpus is not None else _espeak(text, voice)
    cache_dir.mkdir(parents=True, exist_ok=True)
    # Write then rename, so a parallel run never reads a half-written cache entry.
    fd, tmp_name = tempfile.mkstemp(dir=cache_dir, suffix=".npy.tmp")
    with os.fdopen(fd, "wb") as f:
        np.save(f, samples)
    os.replace(tmp_name, cached)
    return samples


def _corpus_voice(name: str):
    from parley.train.voices import INSTALL_HINT, VOICES

    found = next((v for v in VOICES if v.name == name), None)
    if found is not None and not found.available():
        raise EngineUnavailableError(
            f"voice {name!r} is not installed here ({INSTALL_HINT[found.engine]})"
        )
    return found


def _espeak(text: str, voice: str) -> np.ndarray:
    exe = shutil.which("espeak-ng")
    if exe is None:
        raise EngineUnavailableError(
            "a `say` step needs espeak-ng, which is not on PATH: install it "
            "(Debian/Ubuntu: apt-get install espeak-ng) or use a `wav:` step"
        )
    with tempfile.TemporaryDirectory(prefix="parley-tts-") as tmp:
        out = Path(tmp) / "say.wav"
        # Text goes in on stdin so a line starting with "-" is never read as a flag.
        proc = subprocess.run(
            [exe, "-v", voice, "-w", str(out), "--stdin"],
            input=text.encode(),
            capture_output=True,
            timeout=60,
            check=False,
        )
        if proc.returncode != 0 or not out.is_file():
            err = proc.stderr.decode(errors="replace").strip() or f"exit code {proc.returncode}"
            raise AudioInputError(f"espeak-ng failed for {text!r} (voice {voice!r}): {err}")
        return load_audio(out, SAMPLE_RATE)


def render_step(
    step: Step,
    scenario_dir: str | Path,
    cache_dir: str | Path | None = None,
    seed: int = 0,
) -> StepAudio:
    """Render ``step`` to 16 kHz mono float32 with its content span.

    ``wav`` paths are relative to ``scenario_dir``; ``say`` audio is cached under
    ``cache_dir`` (default: Parley's cache dir ``/tts``); noise is a pure function of
    the step and ``seed``.
    """
    kind = step.kind
    if kind == "silence":
        assert step.silence is not None
        return StepAudio(np.zeros(round(step.silence * SAMPLE_RATE), np.float32), 0, 0)
    if kind == "noise":
        assert step.noise is not None and step.duration is not None
        n = round(step.duration * SAMPLE_RATE)
        x = _noise(step.noise, n, step.noise_level_db, seed)
        return StepAudio(x, 0, n)
    if kind == "say":
        assert step.say is not None
        x = say(step.say, step.effective_voice, _tts_cache(cache_dir))
        name = f"say {step.say!r}"
    else:
        assert step.wav is not None
        x = load_audio(Path(scenario_dir) / step.wav, SAMPLE_RATE)
        name = f"wav {step.wav}"
    if step.gain_db:
        x = (x * 10.0 ** (step.gain_db / 20.0)).astype(np.float32)
    span = speech_span(x)
    if span is None:
        raise AudioInputError(
            f"{name}: nothing above {ACTIVE_DB:g} dBFS, so it has no speech to place; "
            "raise gain_db or use a silence step"
        )
    return StepAudio(np.ascontiguousarray(x, dtype=np.float32), *span)


def _tts_cache(cache_dir: str | Path | None) -> Path:
    if cache_dir is not None:
        return Path(cache_dir)
    # Imported here: the runtime module pulls in torch, which rendering does not need.
    from parley.agent.runtime import cache_dir as parley_cache_dir

    return parley_cache_dir() / "tts"


def _noise(color: str, n: int, level_db: float, seed: int) -> np.ndarray:
    """Seeded noise of ``n`` samples at RMS ``level_db`` dBFS.

    Coloured noise is shaped in the frequency domain: brown is integrated white noise
    (amplitude ~ 1/f) with a first-order high-pass at 20 Hz, the response of a leaky
    integrator, so it does not wander off into DC; pink is ~ 1/sqrt(f), same corner.
    """
    rng = np.random.default_rng([seed, n, ("white", "brown", "pink").index(color)])
    x = rng.standard_normal(n)
    if color != "white" and n > 1:
        spec = np.fft.rfft(x)
        f = np.fft.rfftfreq(n, 1.0 / SAMPLE_RATE)
        mag = 1.0 / np.sqrt(f**2 + BROWN_HIGHPASS_HZ**2)
        spec *= mag if color == "brown" else np.sqrt(mag)
        spec[0] = 0.0
        x = np.fft.irfft(spec, n)
    x -= x.mean()
    rms = float(np.sqrt(np.mean(x**2))) if n else 0.0
    if rms > 0:
        x *= 10.0 ** (level_db / 20.0) / rms
    return x.astype(np.float32)
