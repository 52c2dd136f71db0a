"""The near-end gate: may the echo canceller's residual hold the user?

:class:`NearEndGate` decides, per 10 ms frame, whether the echo canceller's residual may
hold the user. A linear canceller leaves some echo behind (15-35 dB down, more while
converging), and a VAD calls that leftover speech - it *is* speech. The gate compares the
residual's energy with the echo still expected in it, plus the noise floor, with a 6 dB
margin. The expected leftover is the echo that can reach the microphone now - the loudest
reference in the last 250 ms through the learnt path's gain (a +3 dB prior until it is
learnt), or the canceller's own estimate if larger - divided by the canceller's measured
ERLE. When the background filter already cancels a frame better than the foreground, its
smaller residual is used: such a burst is echo it knows, not the user. With no reference in
the last 250 ms no echo is possible and the gate is open.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from parley.speech_io.echo import EchoCanceller
from parley.streaming import Streaming

__all__ = ["GateOptions", "NearEndGate"]


@dataclass(frozen=True)
class GateOptions:
    """Settings of :class:`NearEndGate`."""

    frame: int = 160
    """Samples per decision (10 ms at 16 kHz, one webrtcvad frame)."""
    margin_db: float = 6.0
    """How far the residual must rise above the expected leftover echo plus noise."""
    reference_floor_db: float = -70.0
    """Reference frames below this level (dBFS) count as silence."""
    max_erle_db: float = 25.0
    """ERLE credited to the canceller at most: its residual fluctuates from block to block,
    and beyond this the fluctuations, not the average, decide what leaks through."""
    noise_rise_db_per_s: float = 2.0
    """How fast the residual noise-floor estimate may rise (it falls at once)."""


@dataclass
class _GateState:
    """Per-stream state of :class:`NearEndGate`."""

    ref_energy: np.ndarray  # mean square of the last frames of reference, newest last
    pending: np.ndarray  # (4, <frame) samples of a frame not complete yet
    noise: float = np.inf  # residual noise floor (mean square)


class NearEndGate(Streaming):
    """Per-frame verdict: may the canceller's residual hold near-end (user) speech?

    ``process(residual, reference)`` takes what :meth:`EchoCanceller.process` just
    returned and the reference it was given; it returns one bool per frame completed by
    these samples (frames count from the start of the stream, so 10 or 20 ms chunks give
    one or two verdicts each). True when the reference has been silent for the canceller's
    whole tail, or when the residual is ``margin_db`` above the echo still expected in it
    (see the module docstring) plus the noise floor. Run the VAD only on frames it allows.
    """

    def __init__(self, canceller: EchoCanceller, options: GateOptions | None = None) -> None:
        self.canceller = canceller
        self.options = o = options or GateOptions()
        rate = canceller.options.sample_rate
        # Enough frames to cover every lag the canceller searches.
        self._frames = int(np.ceil(canceller.lags * canceller.block / o.frame)) + 1
        self._margin = 10 ** (o.margin_db / 10)
        self._floor = 10 ** (o.reference_floor_db / 10)
        self._rise = 10 ** (o.noise_rise_db_per_s * o.frame / rate / 10)
        self._state = self._new_state()

    def _new_state(self) -> _GateState:
        return _GateState(ref_energy=np.zeros(self._frames), pending=np.zeros((4, 0)))

    def reset(self) -> None:
        """Start a new stream."""
        self._state = self._new_state()

    def process(self, residual: np.ndarray, reference: np.ndarray) -> np.ndarray:
        """Verdicts (bool array) for the frames these samples complete."""
        residual = np.asarray(residual, dtype=np.float64).reshape(-1)
        reference = np.asarray(reference, dtype=np.float64).reshape(-1)
        aec = self.canceller
        echo = np.asarray(aec.echo_estimate, dtype=np.float64)
        if not residual.shape == reference.shape == echo.shape:
            raise ValueError(
                "residual, reference and the canceller's last echo estimate must have the "
                f"same length: {residual.shape}, {reference.shape}, {echo.shape}"
            )
        # What the background filter would have left: when it already cancels a burst the
        # foreground has not copied yet, that burst is echo, not the user.
        background = residual + echo - aec.background_estimate
        rows = np.stack([residual, background, echo, reference])
        st, f = self._state, self.options.frame
        data = np.concatenate([st.pending, rows], axis=1)
        count = data.shape[1] // f
        st.pending = data[:, count * f :]
        frames = data[:, : count * f].reshape(4, count, f)
        power = np.mean(frames**2, axis=2)
        verdicts = np.zeros(count, dtype=bool)
        for i in range(count):
            p_res = min(power[0, i], power[1, i])
            verdicts[i] = self._decide(p_res, power[2, i], power[3, i])
        return verdicts

    def _decide(self, p_res: float, p_echo: float, p_ref: float) -> bool:
        st = self._state
        st.ref_energy = np.roll(st.ref_energy, -1)
        st.ref_energy[-1] = p_ref
        st.noise = min(st.noise * self._rise, p_res)
        loudest = float(np.max(st.ref_energy))
        if loudest < self._floor:
            return True  # no reference within the tail: no echo is possible
        aec = self.canceller
        erle = 10 ** (min(aec.erle_db, self.options.max_erle_db) / 10)
        # The echo now is at most the loudest recent reference through the path's gain
        # (or, if larger, the canceller's own estimate); the canceller removes ERLE of it.
        leftover = max(p_echo, aec.coupling * loudest) / max(erle, 1.0)
        return p_res > self._margin * (leftover + st.noise)
