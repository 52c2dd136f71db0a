"""A deterministic simulated loudspeaker-to-microphone path, for testing echo handling.

What the agent plays reaches its microphone late (``delay_ms``), quieter (``gain_db``),
smeared by the room (a direct path followed by exponentially decaying reflections over
``room_ms``) and buried in white noise (``noise_db``: RMS in dB relative to full scale
1.0; ``None`` for none). Room and noise come from generators seeded by ``seed``, so a seed
is the same room and the same noise on every run, and feeding the signal in chunks gives
the same echo as feeding it at once::

    path = EchoPath(delay_ms=60, gain_db=-10)
    mic = user + path.process(played)      # any chunk sizes, in order
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from parley.speech_io.audio import SAMPLE_RATE
from parley.streaming import Streaming

__all__ = ["EchoPath"]

# Reflections carry this fraction of the direct path's energy (direct-to-reverberant
# ratio about +3 dB: a small room with the speaker near the microphone).
_REVERB_ENERGY = 0.5
# The first reflection arrives this long after the direct sound (floor, desk, wall).
_FIRST_REFLECTION_MS = 2.0
# No reflection may rival the direct path, so the cross-correlation peak sits at the delay.
_MAX_REFLECTION = 0.5


@dataclass
class _PathState:
    """Per-stream state: the tail of what was played and the noise generator."""

    history: np.ndarray
    noise: np.random.Generator = field(repr=False)


class EchoPath(Streaming):
    """Delay + gain + seeded room impulse response + white noise, applied sample-exactly.

    ``process(played)`` returns the echo that reaches the microphone during the same span
    of time as ``played`` (so ``len(out) == len(played)``), noise included. The impulse
    response is :attr:`impulse_response` (room part only; the delay is applied on top).
    """

    def __init__(
        self,
        delay_ms: float,
        gain_db: float,
        room_ms: float = 60.0,
        noise_db: float | None = -60.0,
        seed: int = 0,
        sample_rate: int = SAMPLE_RATE,
    ) -> None:
        if delay_ms < 0 or room_ms < 0:
            raise ValueError(f"delay_ms and room_ms must be >= 0, got {delay_ms}, {room_ms}")
        self.sample_rate = sample_rate
        self.delay = round(delay_ms * sample_rate / 1000)
        self.gain = 10.0 ** (gain_db / 20.0)
        self.noise_rms = 0.0 if noise_db is None else 10.0 ** (noise_db / 20.0)
        self.seed = seed
        self.impulse_response = self._room(room_ms, np.random.default_rng(seed))
        self._state = self._new_state()

    def _room(self, room_ms: float, rng: np.random.Generator) -> np.ndarray:
        length = max(1, round(room_ms * self.sample_rate / 1000))
        h = np.zeros(length)
        h[0] = 1.0
        first = round(_FIRST_REFLECTION_MS * self.sample_rate / 1000)
        if length > first:
            t = np.arange(first, length)
            # The envelope falls 60 dB over room_ms, so room_ms plays the role of RT60.
            envelope = np.exp(-6.9 * t / length)
            tail = rng.standard_normal(len(t)) * envelope
            tail *= np.sqrt(_REVERB_ENERGY / np.sum(tail**2))
            h[first:] = np.clip(tail, -_MAX_REFLECTION, _MAX_REFLECTION)
        return h * self.gain

    def _new_state(self) -> _PathState:
        history = np.zeros(self.delay + len(self.impulse_response) - 1)
        # A separate stream of the same seed, so noise does not depend on the room draw.
        noise = np.random.default_rng([self.seed, 1])
        return _PathState(history=history, noise=noise)

    def reset(self) -> None:
        """Forget everything played so far and restart the noise from the seed."""
        self._state = self._new_state()

    def process(self, played: np.ndarray) -> np.ndarray:
        """Echo (plus noise) that reaches the microphone while ``played`` is playing."""
        x = np.asarray(played, dtype=np.float64).reshape(-1)
        st = self._state
        buf = np.concatenate([st.history, x])
        n = len(x)
        # history = delay + R - 1 samples, so the first len(buf) - delay samples hold exactly
        # the inputs that the n outputs' room responses reach back to.
        src = buf[: len(buf) - self.delay]
        echo = np.convolve(src, self.impulse_response, mode="valid")[:n]
        if len(st.history):
            st.history = buf[len(buf) - len(st.history) :]
        if self.noise_rms > 0:
            echo = echo + self.noise_rms * st.noise.standard_normal(n)
        return echo.astype(np.float32)
