"""What the microphone has already shown about the echo path, lag by lag.

:class:`~parley.speech_io.echo_gate.NearEndGate` bounds the echo by the loudest reference of the
last 250 ms through the path's power gain, and until the canceller has learnt that gain it
assumes a +3 dB prior that fades only with seconds of reference. Against a full-scale voice
that bound sits above a user talking at a normal level: a user who cut into the first chunk
of the session's first reply went unheard until the prior had faded (840 ms with the
trained voice in the bench's ``interrupt-first-chunk``).

Yet the microphone rules lags out long before the canceller converges: if the reference
was loud ``d`` ago and the microphone stayed quiet, the path carries little at delay ``d``.
Echo powers add over delays (reflections of different stretches of speech are
uncorrelated), so ``mic(t) >= g(d) * ref(t - d)`` at every delay, whatever else the
microphone holds; over a few frames this bounds each delay's gain ``g(d)``. Another voice
only loosens a bound, so talking over the agent never makes an echo look smaller than it
is. The echo now is then at most what a path could make of the recent reference with no
more than ``g(d)`` at each delay and no more than the coupling in all (the canceller's +3 dB
prior, or what it has learnt if more): fill the loudest delays first. A frame whose
microphone power exceeds that plus the noise floor by the gate's margin holds a sound that
neither the echo nor the noise can be. Delays not heard yet keep the prior, so this never
trusts a path it has no evidence about; it only stops distrusting delays it has.

Once the user's voice is in the microphone, no frame after it can tighten a bound: the
reference that reaches those frames at delays not heard yet arrived while the user was
already talking. So a user who starts within the first quarter second of the reply proves
their onset and then drops back under the prior at the next frame, too soon for the VAD to
confirm it (silero lags 16-60 ms). A proven frame therefore also opens the next
``HOLD_FRAMES`` while some lag has not been heard lately: the onset it proves is a sound no
echo can be, and what the VAD makes of those frames first is a tentative pause, which
stops the reference. A click proven there may pause the reply over its echo; unconfirmed,
the reply resumes where it paused.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from parley.speech_io.echo import EchoCanceller
from parley.speech_io.echo_gate import GateOptions
from parley.streaming import Streaming

__all__ = ["EchoEvidence"]

# Delays are resolved to a quarter frame: with whole frames, a delay between two of them
# splits each frame's echo unevenly at sharp onsets, and the bounds learnt there came out
# too low (isolated echo frames passed at 35 and 95 ms).
HOP = 40
# Frames summed per bound: a single frame's echo-to-reference ratio scatters too much for
# a bound that keeps its lowest value.
WINDOW = 3
# Bounds loosen by this much per second, so a path that changes (a volume knob, headphones
# unplugged) is not ruled out for long; evidence is renewed every frame the user is quiet.
FORGET_DB_PER_S = 20.0
# No delay is ruled out beyond this gain: digital silence is not proof of an absent path.
MIN_GAIN_DB = -60.0
# The canceller's prior for a path it has not learnt: speaker next to the microphone, plus
# reflections. Its coupling falls below this as the prior fades; these bounds stand in then.
WORST_COUPLING = 2.0
# Frames a proven frame holds open after it: enough for silero to confirm a voiced onset.
HOLD_FRAMES = 6
# A lag not heard (bounded under the prior) for this long counts as unheard again: its
# bound has loosened by 20 dB since.
STALE_S = 1.0


@dataclass
class _EvidenceState:
    ref: np.ndarray  # squared reference samples, oldest first: the tail plus WINDOW frames
    mic: np.ndarray  # microphone power of the last WINDOW frames, oldest first
    bound: np.ndarray  # per delay (HOP samples apart, 0 = now): bound on the power gain
    noise: float = np.inf  # microphone floor while no echo was possible (mean square)
    hold: int = 0  # frames still open after the last proven one
    frame: int = 0  # frames judged so far
    # Per delay, the frame its bound was last tightened under the prior (-inf: never).
    heard_at: np.ndarray = field(default_factory=lambda: np.zeros(0))


class EchoEvidence(Streaming):
    """Per-frame verdict: does the microphone hold more than the echo can possibly be?

    ``process(mic, reference)`` takes the raw microphone samples (before cancellation) and
    the reference played at the same sample times, a whole number of gate frames (10 ms);
    it returns one bool per frame, True where the microphone power exceeds the bound on the
    echo plus the noise floor by ``GateOptions.margin_db``, and for ``HOLD_FRAMES`` frames
    after such a frame while some lag has not been heard within ``STALE_S``. Use it beside
    the gate: a frame either one allows may hold the user.
    """

    def __init__(self, canceller: EchoCanceller, options: GateOptions | None = None) -> None:
        self.canceller = canceller
        self.options = o = options or GateOptions()
        rate = canceller.options.sample_rate
        tail = canceller.lags * canceller.block  # the delays the canceller searches
        self._delays = np.arange(0, tail + 1, HOP)
        self._size = tail + WINDOW * o.frame
        self._margin = 10 ** (o.margin_db / 10)
        self._floor = 10 ** (o.reference_floor_db / 10)
        self._forget = 10 ** (FORGET_DB_PER_S * o.frame / rate / 10)
        self._rise = 10 ** (o.noise_rise_db_per_s * o.frame / rate / 10)
        self._min_gain = 10 ** (MIN_GAIN_DB / 10)
        self._stale = STALE_S * rate / o.frame
        self._state = self._new_state()

    def _new_state(self) -> _EvidenceState:
        return _EvidenceState(
            ref=np.zeros(self._size),
            mic=np.zeros(WINDOW),
            bound=np.full(len(self._delays), np.inf),
            heard_at=np.full(len(self._delays), -np.inf),
        )

    def reset(self) -> None:
        """Start a new stream: no evidence about any delay."""
        self._state = self._new_state()

    def process(self, mic: np.ndarray, reference: np.ndarray) -> np.ndarray:
        """Verdicts (bool array), one per frame of these samples."""
        mic = np.asarray(mic, dtype=np.float64).reshape(-1)
        reference = np.asarray(reference, dtype=np.float64).reshape(-1)
        f = self.options.frame
        if mic.shape != reference.shape or len(mic) % f:
            raise ValueError(
                f"mic and reference must be the same whole number of {f}-sample frames: "
                f"{mic.shape}, {reference.shape}"
            )
        return np.array(
            [self._frame(mic[i : i + f], reference[i : i + f]) for i in range(0, len(mic), f)],
            dtype=bool,
        )

    def _frame(self, mic: np.ndarray, reference: np.ndarray) -> bool:
        st, f = self._state, self.options.frame
        st.ref = np.concatenate([st.ref[f:], reference**2])
        p_mic = float(np.mean(mic**2))
        st.mic = np.concatenate([st.mic[1:], [p_mic]])
        # ref_power[j, k]: reference power over the frame that delay k maps onto the
        # microphone frame j frames back.
        cumulative = np.concatenate([[0.0], np.cumsum(st.ref)])
        ends = self._size - np.arange(WINDOW)[:, None] * f - self._delays[None, :]
        ref_power = (cumulative[ends] - cumulative[ends - f]) / f
        if np.max(ref_power[0]) < self._floor:
            # Nothing in the tail: the room alone. Learnt only here, so no echo inflates it.
            st.noise = min(st.noise * self._rise, p_mic)
        noise = st.noise if np.isfinite(st.noise) else 0.0
        proven = p_mic > self._margin * (self._echo_bound(ref_power[0]) + noise)
        self._learn(ref_power, noise)
        held = st.hold > 0
        # Only lags not heard lately can hide later frames; once every lag has been heard
        # the bounds go on judging each frame on its own.
        unheard = bool(np.any(st.frame - st.heard_at > self._stale))
        st.hold = HOLD_FRAMES if proven and unheard else max(st.hold - 1, 0)
        st.frame += 1
        return proven or held

    def _echo_bound(self, ref_power: np.ndarray) -> float:
        """The most echo a path within the bounds and the coupling can make of this frame."""
        coupling = max(WORST_COUPLING, self.canceller.coupling)
        order = np.argsort(-ref_power)
        gains = np.minimum(self._state.bound[order], coupling)
        spent = np.cumsum(gains) - gains
        return float(np.clip(coupling - spent, 0.0, gains) @ ref_power[order])

    def _learn(self, ref_power: np.ndarray, noise: float) -> None:
        """Tighten each delay's bound with the frames just heard (after judging the newest,
        which must not vouch for itself)."""
        st = self._state
        st.bound *= self._forget
        sums = ref_power.sum(axis=0)
        heard = sums >= WINDOW * self._floor
        # Without the floor taken out, every delay would keep noise / reference, and the sum
        # over a hundred delays would put the bound 20 dB above the noise.
        ratio = max(float(np.sum(st.mic)) - WINDOW * noise, 0.0) / sums[heard]
        st.bound[heard] = np.maximum(np.minimum(st.bound[heard], ratio), self._min_gain)
        # A lag counts as heard when these frames bound it under the prior, not when the
        # user's voice filled the microphone as its reference came by.
        tight = np.flatnonzero(heard)[ratio < WORST_COUPLING]
        st.heard_at[tight] = st.frame
