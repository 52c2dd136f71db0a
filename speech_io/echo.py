"""Acoustic echo handling: an adaptive echo canceller (the gate after it: ``echo_gate``).

The agent knows exactly what it played (the *reference*); in a room that sound comes back
into the microphone 20-120 ms later, quieter, smeared by reflections, with noise. Two
stages keep the agent from hearing itself while still hearing a user who talks over it.

:class:`EchoCanceller` subtracts a linear estimate of the echo. It is a partitioned-block
frequency-domain adaptive filter (MDF: 10 ms blocks, 2N-point FFTs, per-bin normalised
NLMS, constrained gradients) with five additions:

* **Delay estimation.** A filter spanning the whole 250 ms tail spends most of its taps on
  the bulk delay and learns speech echo slowly (12-15 dB over seconds 1-4 in our tests).
  So the reference spectra of the last 250 ms are kept, their smoothed cross-spectra with
  the microphone locate the direct path to within a block, and the adaptive filter spans
  80 ms from just before it: three times fewer taps, 16-24 dB over the same seconds.
* **Two-path double-talk protection.** A *background* filter adapts on every block; the
  *foreground* filter, whose residual is the output, copies it only when it has been
  better over the last few blocks. Blocks whose ERLE falls well below the running ERLE are
  taken for double talk: the background does not learn from them (15 dB below) and nothing
  is copied on them (6 dB below), since a fast filter can fit a little of the user's voice
  by chance. A background that went wrong is reset to the foreground.
* **Following a moved path.** A device whose latency changes (an underrun, a cleared
  buffer) plays the same echo some blocks later; the filter, aimed at the old lag, then
  cancels nothing, its blocks look like double talk, and the gate, still crediting the old
  ERLE, hears the echo as the user. The user's voice does not correlate with the
  reference, a moved echo does, at its new lag: faster statistics watch for that on such
  blocks, then re-aim the filters by the move (their shape holds) and learn the ERLE anew,
  about 0.2 s after the move (it took 2 s before).
* **Noise-aware step.** Per bin, the step is scaled by the share of the error above the
  stationary noise floor, so a quiet echo's filter does not learn the noise.
* **Zero added latency.** Any chunk length is accepted; the output of a partial block is
  computed from the samples already there (the filter is causal and changes only at block
  boundaries), so chunking does not change the result.

:class:`~parley.speech_io.echo_gate.NearEndGate` (its own module) then decides, per
frame, whether the residual may hold the user.

Neither stage alone is enough: without the canceller the gate would have to ignore anything
quieter than the raw echo (deaf to a user talking at the agent's own level); without the
gate, the canceller's leftover and its first second of convergence trigger barge-in.

Per-stream state lives in one dataclass per component; ``reset()`` starts a new stream and
``streaming()`` scopes one. Keep one stream for a whole conversation: the echo path does
not change between replies, and re-learning it costs a second of echo.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from parley.speech_io.audio import SAMPLE_RATE
from parley.streaming import Streaming

__all__ = ["EchoCanceller", "EchoOptions"]

_TINY = 1e-20
# Per-block smoothing of the ERLE read-out (time constant ~200 ms).
_ERLE_RATE = 0.05


@dataclass(frozen=True)
class EchoOptions:
    """Settings of :class:`EchoCanceller`; the defaults suit 16 kHz speech in a room."""

    sample_rate: int = SAMPLE_RATE
    block: int = 160
    """Samples per block and per filter partition (10 ms)."""
    tail_ms: float = 250.0
    """Reference history searched for the echo: longest delay plus room response."""
    filter_ms: float = 80.0
    """Span of the adaptive filter, from one block before the estimated delay: the
    direct path and 50-70 ms of room. Longer learns more slowly and more noise."""
    step: float = 0.6
    """Background NLMS step (1 is a full normalised step)."""
    relative_floor: float = 0.3
    """Per-bin normaliser floor, relative to the mean: limits how hard bins the reference
    barely excites are whitened, where the error is mostly noise."""
    reference_floor_db: float = -70.0
    """Reference level (dBFS) below which nothing is learnt."""
    delay_smoothing: float = 0.95
    """Forgetting factor of the delay estimator's cross-spectra (time constant ~200 ms)."""
    copy_ratio: float = 0.9
    """The foreground copies the background when its error power is below this ratio."""
    reset_ratio: float = 2.0
    """The background is reset to the foreground when its error power exceeds this."""
    adapt_shortfall_db: float = 15.0
    """The background skips blocks whose ERLE falls this far below the running ERLE
    (the user's voice dominates them)."""
    copy_shortfall_db: float = 6.0
    """No copying, ordinary delay tracking or ERLE update on blocks this far below it
    (they may hold the user's voice; only the watch for a moved echo runs on them)."""
    move_smoothing: float = 0.85
    """Forgetting factor of the statistics that watch for a moved echo (~70 ms)."""
    moved_blocks: int = 5
    """Such blocks on which one other lag leads before the echo counts as moved there."""
    moved_margin: float = 2.0
    """How much more that lag must correlate with the microphone than the old one."""
    moved_coherence: float = 0.4
    """And the share of the microphone's power that lag must explain (the user talking
    over a faint echo leaves little of it explained, wherever the peak wanders)."""


@dataclass
class _EchoState:
    """Everything one stream of :class:`EchoCanceller` carries between calls."""

    ref: np.ndarray  # (2N,) previous and current reference block, current zero-padded
    mic: np.ndarray  # (2N,) previous and current microphone block
    fill: int  # samples of the current block received
    spectra: np.ndarray  # (K, N+1) reference block spectra, newest first
    ref_power: np.ndarray  # (K, N+1) smoothed reference power, same lags
    cross: np.ndarray  # (K, N+1) smoothed mic x reference cross-spectra per lag
    # The same three, smoothed faster: the watch for a moved echo path (_path_moved).
    fast_cross: np.ndarray  # (K, N+1)
    fast_ref: np.ndarray  # (K, N+1)
    fast_mic: np.ndarray  # (N+1,)
    fg: np.ndarray  # (F, N+1) foreground filter, partitions offset.. offset+F-1
    bg: np.ndarray  # (F, N+1) background filter
    past: np.ndarray  # (2, N+1) fore/background output spectra from known blocks
    err_psd: np.ndarray  # (N+1,) smoothed background error power
    noise_psd: np.ndarray  # (N+1,) its running minimum: the noise floor
    offset: int = 0  # first reference lag (in blocks) the filters cover
    candidate: int = 0  # lag the delay estimator favours, and for how many blocks
    candidate_blocks: int = 0
    quiet: int = 0  # samples since the reference was last non-zero
    fg_err: float = 0.0
    bg_err: float = 0.0
    mic_avg: float = _TINY  # echo-only mic and residual power, for the ERLE
    res_avg: float = _TINY
    active_blocks: int = 0  # blocks with audible reference, for the coupling prior
    flagged_blocks: int = 0  # consecutive blocks that looked like double talk
    good_lag: int = -1  # the delay estimator's lag on the last echo-only block
    moved_to: int = -1  # the lag the echo may have moved to, and for how many blocks
    moved_for: int = 0
    echo: np.ndarray = field(default_factory=lambda: np.zeros((2, 0), np.float32))


class EchoCanceller(Streaming):
    """Streaming echo canceller: delay estimation plus a two-path MDF adaptive filter.

    ``process(mic, reference)`` takes equal-length float32 chunks of any length, where
    ``reference[i]`` is what the speaker played when ``mic[i]`` was recorded, and returns
    the residual (``mic`` minus the estimated echo), same length, no added latency. The
    echo estimate for those samples is :attr:`echo_estimate`. Once the reference has been
    silent for the whole tail (250 ms), the residual is ``mic`` exactly.
    """

    def __init__(self, options: EchoOptions | None = None) -> None:
        self.options = o = options or EchoOptions()
        n = self.block = o.block
        self.lags = max(2, int(np.ceil(o.tail_ms * o.sample_rate / 1000 / n)))
        self.taps = min(self.lags, max(1, int(np.ceil(o.filter_ms * o.sample_rate / 1000 / n))))
        # Power of the floor level in one 2N-point bin of one partition.
        self._floor = 2 * n * 10 ** (o.reference_floor_db / 10)
        self._state = self._new_state()

    # -- stream lifecycle ------------------------------------------------------------

    def _new_state(self) -> _EchoState:
        n, k, f = self.block, self.lags, self.taps
        return _EchoState(
            ref=np.zeros(2 * n),
            mic=np.zeros(2 * n),
            fill=0,
            spectra=np.zeros((k, n + 1), np.complex128),
            ref_power=np.zeros((k, n + 1)),
            cross=np.zeros((k, n + 1), np.complex128),
            fast_cross=np.zeros((k, n + 1), np.complex128),
            fast_ref=np.zeros((k, n + 1)),
            fast_mic=np.zeros(n + 1),
            fg=np.zeros((f, n + 1), np.complex128),
            err_psd=np.zeros(n + 1),
            noise_psd=np.full(n + 1, np.inf),
            bg=np.zeros((f, n + 1), np.complex128),
            past=np.zeros((2, n + 1), np.complex128),
            quiet=(k + 1) * n,
        )

    def reset(self) -> None:
        """Start a new stream: forget the learnt echo path and all history."""
        self._state = self._new_state()

    # -- read-outs -------------------------------------------------------------------

    @property
    def echo_estimate(self) -> np.ndarray:
        """The echo subtracted from the samples returned by the last :meth:`process`."""
        return self._state.echo[0]

    @property
    def background_estimate(self) -> np.ndarray:
        """The background filter's echo estimate for the same samples (for the gate)."""
        return self._state.echo[1]

    @property
    def erle_db(self) -> float:
        """Echo return loss enhancement (dB): mic over residual power on echo-only blocks.

        Smoothed over ~200 ms of blocks with reference and without suspected double talk
        (a block whose own ERLE falls 6 dB under the running value); 0 dB at the start.
        """
        st = self._state
        return float(10 * np.log10(st.mic_avg / st.res_avg))

    @property
    def coupling(self) -> float:
        """Power gain of the learnt echo path (linear), bounded below by a fading prior.

        The prior starts at +3 dB (speaker next to the microphone, plus reflections) and
        fades over the first half second of reference, so that the gate does not trust a
        path that has not been learnt yet.
        """
        st = self._state
        prior = 2.0 * np.exp(-st.active_blocks / 50)
        w = st.fg.real**2 + st.fg.imag**2
        # Parseval for one-sided 2N-point spectra: inner bins stand for two.
        learnt = float(2 * np.sum(w) - np.sum(w[:, 0]) - np.sum(w[:, -1])) / (2 * self.block)
        return float(max(prior, learnt))

    @property
    def delay_ms(self) -> float:
        """Estimated echo delay, to the block (10 ms)."""
        return self._state.candidate * self.block * 1000 / self.options.sample_rate

    # -- processing ------------------------------------------------------------------

    def process(self, mic: np.ndarray, reference: np.ndarray) -> np.ndarray:
        """Residual of ``mic`` after removing the echo of ``reference`` (same length)."""
        mic = np.asarray(mic, dtype=np.float32).reshape(-1)
        reference = np.asarray(reference, dtype=np.float32).reshape(-1)
        if mic.shape != reference.shape:
            raise ValueError(f"mic and reference lengths differ: {mic.shape} vs {reference.shape}")
        st, n = self._state, self.block
        out = mic.copy()
        echo = np.zeros((2, len(mic)), np.float32)
        pos = 0
        while pos < len(mic):
            start = st.fill
            take = min(n - start, len(mic) - pos)
            seg = reference[pos : pos + take]
            st.ref[n + start : n + start + take] = seg
            st.mic[n + start : n + start + take] = mic[pos : pos + take]
            nonzero = np.flatnonzero(seg)
            st.quiet = take - 1 - int(nonzero[-1]) if len(nonzero) else st.quiet + take
            st.fill += take
            y = self._block() if st.fill == n else self._partial()
            if y is not None:
                echo[:, pos : pos + take] = y[:, start : start + take]
                out[pos : pos + take] = mic[pos : pos + take] - y[0, start : start + take]
            pos += take
        st.echo = echo
        return out

    def _silent(self) -> bool:
        # Every reference sample the filter can reach is zero, so the estimate is zero.
        return self._state.quiet >= (self.lags + 1) * self.block

    def _partial(self) -> np.ndarray | None:
        """(2, N) fore- and background echo estimates for the incomplete current block."""
        st, n = self._state, self.block
        if self._silent():
            return None
        spectra = st.past
        if st.offset == 0:
            # Unknown samples count as zero: causal taps never reach them anyway.
            spectra = spectra + np.stack([st.fg[0], st.bg[0]]) * np.fft.rfft(st.ref)
        return np.fft.irfft(spectra, 2 * n, axis=1)[:, n:]

    def _block(self) -> np.ndarray | None:
        """A full block arrived: filter, adapt, and get ready for the next block."""
        st, n = self._state, self.block
        silent = self._silent()
        st.spectra[1:] = st.spectra[:-1]
        st.spectra[0] = 0 if silent else np.fft.rfft(st.ref)
        y = None
        if not silent:
            window = st.spectra[st.offset : st.offset + self.taps]
            spectra = np.stack([np.sum(w * window, axis=0) for w in (st.fg, st.bg)])
            y = np.fft.irfft(spectra, 2 * n, axis=1)[:, n:]
            self._learn(y, window)
        # Output spectra for the next block from the blocks known now.
        first = 1 if st.offset == 0 else 0
        lags = st.spectra[st.offset + first - 1 : st.offset + self.taps - 1]
        st.past = np.stack([np.sum(w[first:] * lags, axis=0) for w in (st.fg, st.bg)])
        st.ref[:n] = st.ref[n:]
        st.ref[n:] = 0
        st.mic[:n] = st.mic[n:]
        st.fill = 0
        return y

    def _learn(self, y: np.ndarray, window: np.ndarray) -> None:
        """Adapt to the block just filtered (``y``: its fore- and background estimates)."""
        st, n, o = self._state, self.block, self.options
        d = st.mic[n:]
        e_fg, e_bg = d - y
        power = window.real**2 + window.imag**2
        norm = np.sum(power, axis=0)
        if float(np.mean(norm)) >= self.taps * self._floor:
            s_dd, s_ee = float(d @ d), float(e_fg @ e_fg)
            shortfall = self._track_erle(s_dd, s_ee)
            # The background may learn from blocks somewhat worse than usual (that is how
            # it converges), but not from blocks the user dominates.
            if shortfall < o.adapt_shortfall_db:
                # Background: constrained NLMS, normalised per bin by the reference power
                # in the filter span (floored, see EchoOptions.relative_floor).
                err = np.fft.rfft(np.concatenate([np.zeros(n), e_bg]))
                step = o.step * self._noise_share(err)
                norm += self.taps * self._floor + o.relative_floor * float(np.mean(norm))
                grad = np.fft.irfft(np.conj(window) * (2 * step * err / norm), 2 * n, axis=1)
                grad[:, n:] = 0
                st.bg += np.fft.rfft(grad, axis=1)
            # Two-path logic on a-priori errors smoothed over a few blocks. While the user
            # talks a fast filter can fit a little of their voice by chance: never copy then.
            st.fg_err = 0.6 * st.fg_err + 0.4 * s_ee
            st.bg_err = 0.6 * st.bg_err + 0.4 * float(e_bg @ e_bg)
            echo_only = shortfall < o.copy_shortfall_db
            if echo_only and st.bg_err < o.copy_ratio * st.fg_err:
                st.fg = st.bg.copy()
                st.fg_err = st.bg_err
            elif st.bg_err > o.reset_ratio * st.fg_err:
                st.bg = st.fg.copy()
                st.bg_err = st.fg_err
            # Last, as it may re-aim the filters (the window above is then stale).
            self._track_delay(echo_only)

    def _noise_share(self, err: np.ndarray) -> np.ndarray:
        """Per bin, the share of the error that is not the stationary noise floor.

        Scaling the step by it stops the filter from learning noise in bins where the echo
        is weaker than the noise (most of the spectrum, for a quiet echo).
        """
        st = self._state
        p_e = err.real**2 + err.imag**2
        st.err_psd = 0.6 * st.err_psd + 0.4 * p_e
        # Minimum tracking: follow dips at once, rise by ~2 dB/s. The minimum of a noisy
        # estimate sits below the mean, hence the factor 2.
        st.noise_psd = np.minimum(st.noise_psd * 1.005, st.err_psd)
        return np.clip(1 - 2 * st.noise_psd / (p_e + _TINY), 0, 1)

    def _track_erle(self, s_dd: float, s_ee: float) -> float:
        """Update the ERLE read-out; return how far (dB) this block falls short of it."""
        st = self._state
        st.active_blocks += 1
        ratio = (s_ee * st.mic_avg + _TINY) / (s_dd * st.res_avg + _TINY)
        shortfall = float(10 * np.log10(ratio))
        if shortfall > self.options.copy_shortfall_db:
            # Likely the user's voice. Yet a changed echo path looks the same, and must be
            # learnt again: after 2 s without a single block near the usual ERLE, the
            # running ERLE is dropped (the user always pauses within 2 s; a path does not).
            st.flagged_blocks += 1
            if st.flagged_blocks > 200:
                st.mic_avg, st.res_avg, st.flagged_blocks = _TINY, _TINY, 0
            return shortfall
        st.flagged_blocks = 0
        st.mic_avg += _ERLE_RATE * (s_dd - st.mic_avg)
        st.res_avg += _ERLE_RATE * (s_ee - st.res_avg)
        return shortfall

    def _track_delay(self, echo_only: bool) -> None:
        """Follow the lag whose cross-spectrum with the microphone is strongest. On blocks
        that may hold the user it only watches for the echo moving (see _path_moved)."""
        st, lam = self._state, self.options.delay_smoothing
        mic_spec = np.fft.rfft(st.mic)
        product = mic_spec * np.conj(st.spectra)
        st.cross = lam * st.cross + (1 - lam) * product
        st.ref_power[1:] = st.ref_power[:-1]
        x0 = st.spectra[0]
        st.ref_power[0] = lam * st.ref_power[1] + (1 - lam) * (x0.real**2 + x0.imag**2)
        f = self.options.move_smoothing
        st.fast_cross = f * st.fast_cross + (1 - f) * product
        st.fast_ref[1:] = st.fast_ref[:-1]
        st.fast_ref[0] = f * st.fast_ref[1] + (1 - f) * (x0.real**2 + x0.imag**2)
        st.fast_mic = f * st.fast_mic + (1 - f) * (mic_spec.real**2 + mic_spec.imag**2)
        cross = st.cross.real**2 + st.cross.imag**2
        power = np.sum(st.ref_power, axis=1)
        # Normalise per lag, but not by lags the reference has barely reached yet.
        score = np.sum(cross, axis=1) / (np.maximum(power, np.mean(power)) + _TINY)
        best = int(np.argmax(score))
        if best == st.candidate:
            st.candidate_blocks += 1
        else:
            st.candidate, st.candidate_blocks = best, 1
        if not echo_only:
            self._path_moved()
            return
        st.good_lag, st.moved_for = best, 0
        # Move only for a lag that has led for a while and sits outside the first few
        # partitions of the span (the room response needs the rest).
        inside = st.offset + 1 <= best <= st.offset + 3
        # Once the filter cancels, ask for a quarter second before moving it.
        needed = 3 if st.mic_avg < 4 * st.res_avg else 25
        if st.candidate_blocks >= needed and not inside:
            self._move(min(max(best - 1, 0), self.lags - self.taps))

    def _path_moved(self) -> None:
        """A block far below the usual ERLE is the user's voice, or the echo path moved:
        a device whose latency changed (an underrun, a buffer cleared) plays the same echo
        some blocks later, and a filter aimed at the old lag then cancels nothing, while
        the gate still credits it the old ERLE and hears the echo as the user. The user's
        voice does not correlate with the reference; a moved echo does, at its new lag. So
        when, on fast statistics, another lag has led clearly for ``moved_blocks`` such
        blocks and explains much of the microphone, the filters are re-aimed by the move
        (their shape still holds) and the ERLE is learnt anew."""
        st, o = self._state, self.options
        if st.good_lag < 0:
            return
        cross = st.fast_cross.real**2 + st.fast_cross.imag**2
        power = np.sum(st.fast_ref, axis=1)
        score = np.sum(cross, axis=1) / (np.maximum(power, np.mean(power)) + _TINY)
        best = int(np.argmax(score))
        if best == st.good_lag or score[best] < o.moved_margin * score[st.good_lag]:
            st.moved_for = 0
            return
        st.moved_for = st.moved_for + 1 if best == st.moved_to else 1
        st.moved_to = best
        # How much of the microphone's power the reference at that lag explains (0-1).
        explained = np.sum(cross[best]) / (np.sum(st.fast_ref[best] * st.fast_mic) + _TINY)
        if st.moved_for < o.moved_blocks or explained < o.moved_coherence:
            return
        self._move(min(max(st.offset + best - st.good_lag, 0), self.lags - self.taps))
        # The slow statistics would still point at the old lag: they start from the fast.
        st.cross, st.ref_power = st.fast_cross.copy(), st.fast_ref.copy()
        st.candidate, st.candidate_blocks = best, 0
        st.good_lag, st.moved_for = best, 0
        st.mic_avg, st.res_avg, st.flagged_blocks = _TINY, _TINY, 0

    def _move(self, offset: int) -> None:
        """Re-aim both filters at lags from ``offset``, keeping partitions still covered."""
        st = self._state
        shift = offset - st.offset
        for name in ("fg", "bg"):
            w = getattr(st, name)
            moved = np.zeros_like(w)
            if abs(shift) >= self.taps:
                pass  # nothing in common: start from zero
            elif shift >= 0:
                moved[: self.taps - shift] = w[shift:]
            else:
                moved[-shift:] = w[: self.taps + shift]
            setattr(st, name, moved)
        st.offset = offset
