"""Whisper log-mel features in numpy, offline and streaming.

The numbers follow ``transformers.WhisperFeatureExtractor`` (periodic Hann window, centred
STFT with reflect padding, power spectrum, Slaney mel filterbank, log10, last frame
dropped so ``N`` samples give ``N // hop_length`` frames, then ``(x + 4) / 4``), with one
deliberate difference: Whisper clamps the log spectrum at ``(utterance max - 8)``, which
depends on audio not yet heard, so a stream could never reproduce it. We clamp at the
fixed ``FeatureConfig.log_floor`` instead; where neither clamp bites, the two agree. With
``floor_mode="running_max"`` we also clamp at (the loudest frame so far - ``dynamic_range``):
Whisper's clamp made causal. A pretrained encoder needs it: on speech at -6 dBFS its outputs
keep a cosine similarity of 0.99 to those on Whisper's own features with it, 0.79 with the
fixed -1.5 floor alone (0.999 against 0.43 at -26 dBFS).

Short input: ``N < hop_length`` samples give zero frames (HF gives zero too, after its
dropped last frame). Between ``hop_length`` and ``n_fft // 2`` samples the centre padding is
longer than the signal and we use numpy's repeated reflection, exactly as HF does. Empty
input gives an empty ``(n_mels, 0)`` array rather than numpy's padding error.

Features do not check for NaN or inf: that is done once, at the edge, by
:mod:`parley.speech_io.audio`.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from parley.config import FeatureConfig
from parley.streaming import Streaming

__all__ = ["MelStreamState", "StreamingLogMel", "log_mel", "mel_filters"]

# HF's spectrogram() floors mel power here before log10; it only matters if log_floor < -10.
_MEL_POWER_FLOOR = 1e-10


def _hz_to_mel(freq: float | np.ndarray) -> np.ndarray:
    """Slaney mel scale: linear below 1 kHz, logarithmic above."""
    freq = np.asarray(freq, dtype=np.float64)
    logstep = 27.0 / np.log(6.4)
    return np.where(
        freq >= 1000.0,
        15.0 + np.log(np.maximum(freq, 1e-12) / 1000.0) * logstep,
        3.0 * freq / 200.0,
    )


def _mel_to_hz(mels: np.ndarray) -> np.ndarray:
    """Inverse of :func:`_hz_to_mel`."""
    mels = np.asarray(mels, dtype=np.float64)
    logstep = np.log(6.4) / 27.0
    return np.where(mels >= 15.0, 1000.0 * np.exp(logstep * (mels - 15.0)), 200.0 * mels / 3.0)


def mel_filters(n_mels: int, n_fft: int = 400, sample_rate: int = 16000) -> np.ndarray:
    """Slaney-scale, Slaney-normalised triangular mel filterbank over 0 Hz .. 8 kHz.

    Returns float64 of shape ``(n_mels, n_fft // 2 + 1)``: rows are filters, so
    ``mel_filters(...) @ power_spectrum`` maps ``(bins, frames)`` to ``(n_mels, frames)``.
    This is the transpose of ``transformers.audio_utils.mel_filter_bank``'s layout.
    """
    n_bins = n_fft // 2 + 1
    # Whisper's band edge is 8 kHz whatever the rate; the FFT grid ends at Nyquist.
    edges_hz = _mel_to_hz(np.linspace(_hz_to_mel(0.0), _hz_to_mel(8000.0), n_mels + 2))
    fft_hz = np.linspace(0, sample_rate // 2, n_bins)
    slopes = edges_hz[None, :] - fft_hz[:, None]  # (bins, n_mels + 2)
    widths = np.diff(edges_hz)
    down = -slopes[:, :-2] / widths[:-1]
    up = slopes[:, 2:] / widths[1:]
    weights = np.maximum(0.0, np.minimum(down, up))  # (bins, n_mels)
    # Area normalisation keeps energy per filter roughly constant as bands widen.
    weights *= 2.0 / (edges_hz[2:] - edges_hz[:-2])
    return np.ascontiguousarray(weights.T)


@dataclass(frozen=True)
class _Params:
    """Everything derived from a FeatureConfig that the frame maths needs."""

    n_fft: int
    hop: int
    pad: int
    log_floor: float
    window: np.ndarray
    filters: np.ndarray

    @classmethod
    def from_config(cls, cfg: FeatureConfig) -> _Params:
        # Periodic Hann, as torch.hann_window / HF window_function(periodic=True).
        window = np.hanning(cfg.n_fft + 1)[:-1]
        return cls(
            n_fft=cfg.n_fft,
            hop=cfg.hop_length,
            pad=cfg.n_fft // 2,
            log_floor=cfg.log_floor,
            window=window,
            filters=mel_filters(cfg.n_mels, cfg.n_fft, cfg.sample_rate),
        )

    def frames(self, ext: np.ndarray, origin: int, first: int, count: int) -> np.ndarray:
        """Features for frames ``first .. first + count - 1``.

        ``ext[i]`` holds the (padded) signal at absolute sample ``origin + i``; frame ``t``
        covers absolute samples ``t * hop - pad`` onwards for ``n_fft`` samples.
        """
        if count <= 0:
            return np.zeros((self.filters.shape[0], 0), dtype=np.float32)
        start = first * self.hop - self.pad - origin
        windows = sliding_window_view(ext, self.n_fft)[start : start + count * self.hop : self.hop]
        power = np.abs(np.fft.rfft(windows * self.window, axis=-1)) ** 2  # (count, bins)
        mel = np.maximum(power @ self.filters.T, _MEL_POWER_FLOOR)
        log_spec = np.maximum(np.log10(mel), self.log_floor)
        return np.ascontiguousarray(((log_spec + 4.0) / 4.0).T, dtype=np.float32)

    def total_frames(self, n_samples: int) -> int:
        """Frames HF keeps for ``n_samples`` samples (its last frame is dropped)."""
        return n_samples // self.hop

    def samples_needed(self, t: int) -> int:
        """Samples that must have arrived before frame ``t`` can be computed mid-stream."""
        right = t * self.hop + self.n_fft - self.pad  # window end, no right reflection
        exists = (t + 1) * self.hop  # frame survives the dropped-last-frame rule
        left = self.pad + 1  # left reflection of the first frames reads x[1 .. pad]
        return max(right, exists, left)


class _RunningFloor:
    """Whisper's ``max - 8`` clamp, with the max taken over the frames so far."""

    def __init__(self, cfg: FeatureConfig) -> None:
        self.active = cfg.floor_mode == "running_max"
        # Features are (log10 + 4) / 4, so a log10 range is a quarter as wide here.
        self.range = cfg.dynamic_range / 4.0
        self.peak = -np.inf

    def apply(self, feats: np.ndarray) -> np.ndarray:
        if not self.active or feats.shape[1] == 0:
            return feats
        peaks = np.maximum.accumulate(np.maximum(feats.max(axis=0), self.peak))
        self.peak = float(peaks[-1])
        return np.maximum(feats, (peaks - self.range)[None, :]).astype(np.float32)


def log_mel(audio: np.ndarray, cfg: FeatureConfig) -> np.ndarray:
    """Log-mel features of a whole mono signal: float32 ``(n_mels, len(audio) // hop)``.

    ``audio`` is float samples in [-1, 1] at ``cfg.sample_rate``, as ``prepare_audio`` gives.
    """
    params = _Params.from_config(cfg)
    x = _as_mono(audio)
    count = params.total_frames(x.size)
    if count == 0:
        return params.frames(x, 0, 0, 0)
    feats = params.frames(np.pad(x, params.pad, mode="reflect"), -params.pad, 0, count)
    return _RunningFloor(cfg).apply(feats)


def _as_mono(chunk: np.ndarray) -> np.ndarray:
    x = np.asarray(chunk)
    if x.ndim != 1:
        raise ValueError(f"expected a 1-D mono signal, got shape {x.shape}")
    if np.iscomplexobj(x):
        raise ValueError("expected a real-valued signal, got complex samples")
    # float64 as HF does before its FFT; it also makes the maths independent of input dtype.
    return x.astype(np.float64, copy=False)


@dataclass
class MelStreamState:
    """Per-stream state of :class:`StreamingLogMel`.

    ``buffer`` holds samples ``offset .. total - 1`` (absolute indices): only the tail that
    frames not yet emitted can still read, so it stays under ``n_fft + hop`` samples plus
    the latest chunk however long the stream runs.
    """

    buffer: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.float64))
    offset: int = 0
    total: int = 0
    frames_emitted: int = 0
    flushed: bool = False
    floor: _RunningFloor = field(kw_only=True)


class StreamingLogMel(Streaming):
    """Incremental :func:`log_mel`: chunks in, completed frames out.

    A frame comes out of :meth:`push` as soon as every sample of its window has arrived.
    The last few frames read the right-edge reflection, so they wait for :meth:`flush`.
    All pushes plus the flush, concatenated on the frame axis, equal :func:`log_mel` of the
    whole signal.
    """

    def __init__(self, cfg: FeatureConfig) -> None:
        self.cfg = cfg
        self._p = _Params.from_config(cfg)
        self.state = MelStreamState(floor=_RunningFloor(cfg))

    @property
    def frames_emitted(self) -> int:
        """Frames returned so far in this stream."""
        return self.state.frames_emitted

    def reset(self) -> None:
        """Forget the current stream; the next push starts a new one."""
        self.state = MelStreamState(floor=_RunningFloor(self.cfg))

    def push(self, chunk: np.ndarray) -> np.ndarray:
        """Add samples; return the frames they completed, float32 ``(n_mels, k)``, k >= 0."""
        st, p = self.state, self._p
        if st.flushed:
            raise RuntimeError("flush() ended this stream; call reset() before pushing again")
        x = _as_mono(chunk)
        if x.size:
            st.buffer = np.concatenate([st.buffer, x])
            st.total += x.size
        # One step per new frame, so this loop is as cheap as the frames it finds.
        t_end = st.frames_emitted
        while p.samples_needed(t_end) <= st.total:
            t_end += 1
        count = t_end - st.frames_emitted
        if count == 0:
            return p.frames(st.buffer, st.offset, 0, 0)
        if st.offset == 0:
            # Still at the start: build the left reflection; buffer has >= pad + 1 samples.
            ext = np.pad(st.buffer, (p.pad, 0), mode="reflect")
            out = p.frames(ext, -p.pad, st.frames_emitted, count)
        else:
            out = p.frames(st.buffer, st.offset, st.frames_emitted, count)
        st.frames_emitted = t_end
        self._trim()
        return self.state.floor.apply(out)

    def flush(self) -> np.ndarray:
        """End the stream and return the frames that needed the right-edge reflection."""
        st, p = self.state, self._p
        if st.flushed:
            return p.frames(st.buffer, st.offset, 0, 0)
        st.flushed = True
        count = p.total_frames(st.total) - st.frames_emitted
        if count <= 0:
            return p.frames(st.buffer, st.offset, 0, 0)
        if st.offset == 0:
            # Whole signal still here (short stream): numpy's padding, repeated reflection
            # of very short input included, is then exactly what log_mel does.
            ext = np.pad(st.buffer, p.pad, mode="reflect")
            out = p.frames(ext, -p.pad, st.frames_emitted, count)
        else:
            # The buffer is longer than pad (see _trim), so one reflection of it matches
            # np.pad on the whole signal.
            assert st.buffer.size > p.pad, "stream buffer trimmed too far"
            ext = np.concatenate([st.buffer, st.buffer[-2 : -p.pad - 2 : -1]])
            out = p.frames(ext, st.offset, st.frames_emitted, count)
        st.frames_emitted += count
        return self.state.floor.apply(out)

    def _trim(self) -> None:
        """Drop samples no future frame reads, so memory and cost per push stay bounded."""
        st, p = self.state, self._p
        # The next frame's window starts here. The right reflection at flush reads back to
        # x[N - 1 - pad], also kept: a frame t still due at flush has N >= (t + 1) * hop.
        keep_from = max(0, st.frames_emitted * p.hop - p.pad)
        keep_from = min(keep_from, st.total)
        if keep_from > st.offset:
            st.buffer = st.buffer[keep_from - st.offset :].copy()
            st.offset = keep_from
