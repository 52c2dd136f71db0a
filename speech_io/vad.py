"""Streaming two-stage voice activity detection for 16 kHz mono float32 audio.

Stage 1 is webrtcvad plus a level gate and the caller's gate: microseconds per frame
and fine in time, but it calls loud white or brown noise speech. Stage 2 is silero-vad,
which rejects that noise but only scores 512-sample chunks, and lags an onset. A frame
counts as speech when stage 1 says so *and* the latest silero probability reaches
``confirm_threshold``. Frames drive a frame-counted hysteresis (quiet → starting →
speaking → stopping, after pipecat's ``VADAnalyzer``) that emits ``start`` and ``stop``
events stamped in input samples; STARTING opens on stage 1 alone, so a start is dated
from the onset stage 1 heard, not from silero's later confirmation.

Silero is run in ``silero_phases`` interleaved streams (each a plain silero stream of
the same audio, offset by ``512 / phases`` samples) so that a fresh probability arrives
every 16 ms rather than every 32 ms: at speech onset that halves the confirmation lag.
"""

from __future__ import annotations

import threading
import warnings
from dataclasses import dataclass, field, replace
from enum import StrEnum
from typing import Literal

import numpy as np
import torch
import webrtcvad

from parley.speech_io.audio import SAMPLE_RATE
from parley.streaming import Streaming

__all__ = ["VADEvent", "VADOptions", "VADState", "StreamingVAD"]

_CHUNK = 512  # silero's fixed input at 16 kHz
_CONTEXT = 64  # samples of the previous audio silero prepends to each chunk


@dataclass(frozen=True)
class VADOptions:
    """Every threshold of :class:`StreamingVAD`; frame counts are in frames of ``frame_ms``.

    The defaults assume 10 ms frames; scale the frame counts if you change ``frame_ms``.
    """

    frame_ms: Literal[10, 20, 30] = 10
    """Frame length in ms, one of webrtcvad's sizes. 10 ms gives the finest decisions."""
    aggressiveness: Literal[0, 1, 2, 3] = 2
    """webrtcvad mode, 0 (lenient) to 3 (strict). Silero does the noise rejection, so
    stage 1 stays middling: strict modes drop soft onsets and word tails."""
    start_frames: int = 1
    """Confirmed speech frames needed to go STARTING → SPEAKING. One suffices: the silero
    probability behind it already integrates a 32 ms chunk, and a second frame rejected
    none of the noise, tones, clicks or key taps we tried while costing 10-35 ms of
    onset latency. Barge-in pauses first and decides later, so a rare false start is
    cheap and a slow true one is not."""
    start_window: int = 10
    """Frames (here 100 ms) silero gets to confirm what stage 1 heard. STARTING opens on
    stage 1 alone and restarts if ``start_frames`` are not confirmed within it, which
    bounds how far back the start estimate reaches while stage 1 fires on loud noise;
    a due stop waits up to this long on an unconfirmed stage-1 run, since that may be
    speech resuming. Silero's lag on voiced onsets (16-60 ms) must fit."""
    stop_frames: int = 32
    """Non-speech frames (here 320 ms) needed to go STOPPING → QUIET. Longer than a
    300 ms pause between phrases, so one utterance stays one segment and barge-in
    logic does not see an interruption end mid-sentence; still well under the 500 ms
    turn endpoint, which is measured from the stop event's ``sample``."""
    min_level_db: float = -50.0
    """Frame RMS in dBFS below which a frame is never speech, whatever the models say:
    webrtcvad fires on faint hiss, and nothing this quiet is a user addressing us."""
    confirm_threshold: float = 0.3
    """Silero speech probability a frame needs. Noise alone stays under 0.1 at any level
    and voiced onsets pass 0.3 one or two chunks in; silero's own 0.5 costs about a
    chunk more on many onsets. Not lower, because in loud noise (-20 dBFS) right after
    speech silero lingers at 0.1-0.4 and a lower bar restarts speech on nothing."""
    tentative_threshold: float = 0.15
    """Silero probability at which an open stage-1 run counts as *possible* speech
    (:attr:`StreamingVAD.tentative`): enough for a speaking agent to pause its output, which
    it undoes exactly if the run is not confirmed, never enough to start a turn. Fricative
    onsets ("s", "h") hold silero at 0.15-0.3 for up to 90 ms before the vowel confirms
    them; noise stays under 0.1."""
    silero_phases: Literal[1, 2, 4] = 4
    """Interleaved silero streams: a new probability every ``32 / phases`` ms, at about
    ``phases`` × 0.2 ms of CPU per 32 ms of audio. 2 cuts median onset latency from
    ~42 to ~30 ms on espeak speech, 4 only ~4 ms more; but with 2 a fricative onset can
    fall between windows that each hear too little of it: the "s" of "stop please" over
    a reply was confirmed 70 ms late at one phase (a 118 ms barge-in, `interrupt-mid-reply`
    with the reply 180 ms sooner), 10 ms late with 4 (28 ms)."""

    def __post_init__(self) -> None:
        if self.frame_ms not in (10, 20, 30):
            raise ValueError(f"frame_ms must be 10, 20 or 30, got {self.frame_ms}")
        if self.aggressiveness not in (0, 1, 2, 3):
            raise ValueError(f"aggressiveness must be 0-3, got {self.aggressiveness}")
        if self.start_frames < 1 or self.stop_frames < 1:
            raise ValueError("start_frames and stop_frames must be at least 1")
        if self.start_window < self.start_frames:
            raise ValueError("start_window must be at least start_frames")
        if not 0.0 <= self.confirm_threshold <= 1.0:
            raise ValueError(f"confirm_threshold must be in [0, 1], got {self.confirm_threshold}")
        if not 0.0 <= self.tentative_threshold <= 1.0:
            raise ValueError(
                f"tentative_threshold must be in [0, 1], got {self.tentative_threshold}"
            )
        if self.silero_phases not in (1, 2, 4):
            raise ValueError(f"silero_phases must be 1, 2 or 4, got {self.silero_phases}")

    @property
    def frame_samples(self) -> int:
        """Samples per frame at 16 kHz."""
        return SAMPLE_RATE * self.frame_ms // 1000


class VADState(StrEnum):
    """Hysteresis state of a :class:`StreamingVAD`."""

    QUIET = "quiet"
    STARTING = "starting"  # stage 1 heard speech; silero has not confirmed enough yet
    SPEAKING = "speaking"
    STOPPING = "stopping"  # non-speech frames seen, not yet enough to call it silence


@dataclass(frozen=True)
class VADEvent:
    """A confirmed change between speech and silence, in input samples (16 kHz).

    ``sample``: for ``start`` the estimated first speech sample (where STARTING began,
    i.e. the first stage-1 frame of the run silero went on to confirm);
    for ``stop`` the first sample of the silence that ended speech. ``detected_at``: the
    input sample at which the decision was made (end of the frame that completed it), so
    ``detected_at - sample`` is the detector's own latency.
    """

    kind: Literal["start", "stop"]
    sample: int
    detected_at: int


_model_lock = threading.Lock()
_model: torch.jit.ScriptModule | None = None


def _silero() -> torch.jit.ScriptModule:
    """The process-wide silero 16 kHz network, loaded and warmed up on first use.

    The packaged JIT wrapper keeps its recurrent state inside the module, which would
    mix streams; its ``_model`` submodule is a pure ``(audio, state) -> (prob, state)``
    function, so one copy serves every stream and each stream carries its own state.
    """
    global _model
    with _model_lock:
        if _model is None:
            # Importing silero_vad calls torch.set_num_threads(1) for the whole process;
            # the rest of the agent (encoder, LM) must keep the threads it was given.
            threads = torch.get_num_threads()
            try:
                with warnings.catch_warnings():
                    # Its loader's importlib/jit deprecations are the package's business.
                    warnings.simplefilter("ignore", DeprecationWarning)
                    from silero_vad import load_silero_vad

                    net = load_silero_vad()._model
            finally:
                torch.set_num_threads(threads)
            with torch.inference_mode():
                # TorchScript profiles the first calls and optimises after; pay that here,
                # not on the user's first words.
                for _ in range(3):
                    net(torch.zeros(1, _CONTEXT + _CHUNK), torch.zeros(2, 1, 128))
            _model = net
        return _model


@dataclass
class _Stream:
    """Everything one audio stream accumulates; replaced wholesale by ``reset()``."""

    webrtc: webrtcvad.Vad
    phases: int
    # Unconsumed audio and its per-sample gate, starting at input sample `buf_start`.
    # It begins with silero's zero context at "sample -64", hence the negative start.
    buf: np.ndarray = field(default_factory=lambda: np.zeros(_CONTEXT, np.float32))
    allow: np.ndarray = field(default_factory=lambda: np.ones(_CONTEXT, bool))
    buf_start: int = -_CONTEXT
    frame_pos: int = 0  # first sample of the next frame to judge
    chunk_end: int = _CHUNK  # end sample of the next silero chunk (all phases interleaved)
    silero_state: list[torch.Tensor] = field(default_factory=list)
    prob: float = 0.0  # latest silero probability
    state: VADState = VADState.QUIET
    frame_is_speech: bool = False
    run_start: int = 0  # first sample of the current STARTING or STOPPING run
    run_frames: int = 0  # frames since that run began
    run_hits: int = 0  # frames in that run agreeing with where it is heading
    unconfirmed: int = 0  # trailing frames stage 1 called speech and silero did not (yet)

    def __post_init__(self) -> None:
        self.silero_state = [torch.zeros(2, 1, 128) for _ in range(self.phases)]


class StreamingVAD(Streaming):
    """Feed audio with :meth:`push`; get ``start``/``stop`` events as they are decided.

    Decisions depend only on the samples, never on how they were chunked. One instance
    handles one stream; the silero weights are shared across instances, state is not.
    """

    def __init__(self, options: VADOptions | None = None) -> None:
        self.options = options or VADOptions()
        self._net = _silero()  # load (once per process) before the first user frame
        self._s = self._new_stream()

    def _new_stream(self) -> _Stream:
        o = self.options
        return _Stream(webrtc=webrtcvad.Vad(o.aggressiveness), phases=o.silero_phases)

    @property
    def state(self) -> VADState:
        """Current hysteresis state."""
        return self._s.state

    @property
    def is_speech(self) -> bool:
        """True while speech is confirmed and not yet ended (SPEAKING or STOPPING)."""
        return self._s.state in (VADState.SPEAKING, VADState.STOPPING)

    @property
    def speaking(self) -> bool:
        """True while speech goes on, not yet in its closing silence (SPEAKING only)."""
        return self._s.state is VADState.SPEAKING

    @property
    def starting(self) -> bool:
        """An unconfirmed run is open (STARTING)."""
        return self._s.state is VADState.STARTING

    @property
    def closing_since(self) -> int | None:
        """First sample of the silence that may end the speech, while it is not yet long
        enough to call a stop (STOPPING); None otherwise."""
        s = self._s
        return s.run_start if s.state is VADState.STOPPING else None

    def end_speech(self) -> VADEvent | None:
        """Call the speech over now, in its closing silence (the listener knows the turn
        is done): the stop event :meth:`push` would have given later, or None when no
        silence is open."""
        s = self._s
        if s.state is not VADState.STOPPING:
            return None
        s.state = VADState.QUIET
        return VADEvent("stop", s.run_start, self.samples_seen)

    @property
    def tentative(self) -> bool:
        """True while a stage-1 run is open (STARTING, this frame voiced) and silero leans
        towards speech (:attr:`VADOptions.tentative_threshold`), before it confirms."""
        s = self._s
        return (
            s.state is VADState.STARTING
            and s.unconfirmed > 0
            and s.prob >= self.options.tentative_threshold
        )

    @property
    def run_start(self) -> int:
        """First sample of the open STARTING or STOPPING run (the onset a start would report)."""
        return self._s.run_start

    @property
    def frame_is_speech(self) -> bool:
        """Whether the last judged frame counted as speech (both stages, gate, level)."""
        return self._s.frame_is_speech

    @property
    def speech_probability(self) -> float:
        """The latest silero probability (for diagnostics and tuning)."""
        return self._s.prob

    @property
    def samples_seen(self) -> int:
        """Input samples pushed since the stream began."""
        return self._s.buf_start + len(self._s.buf)

    def retune(
        self, confirm_threshold: float | None = None, min_level_db: float | None = None
    ) -> None:
        """New thresholds from the next frame on (None: as they are); the stream goes on."""
        o = self.options
        self.options = replace(
            o,
            confirm_threshold=o.confirm_threshold
            if confirm_threshold is None
            else confirm_threshold,
            min_level_db=o.min_level_db if min_level_db is None else min_level_db,
        )

    def reset(self) -> None:
        """Forget the stream: state QUIET, sample counter back to 0, fresh model state."""
        self._s = self._new_stream()

    def push_gated(self, samples: np.ndarray, allow: bool) -> list[VADEvent]:
        """:meth:`push` with one gate value for all of ``samples``."""
        return self.push(samples, allow=allow)

    def push(self, samples: np.ndarray, allow: bool | np.ndarray = True) -> list[VADEvent]:
        """Append 16 kHz mono float samples (any length); return the events they complete.

        ``allow`` is a caller's gate, one bool for the chunk or one per sample: where it
        is False the audio cannot be near-end speech (say, it is our own echo), and any
        frame containing such a sample counts as non-speech.
        """
        x = np.asarray(samples, dtype=np.float32)
        if x.ndim != 1:
            raise ValueError(f"expected mono samples of shape (n,), got {x.shape}")
        gate = np.asarray(allow, dtype=bool)
        if gate.ndim and gate.shape != x.shape:
            raise ValueError(f"allow has shape {gate.shape}, samples {x.shape}")
        gate = np.broadcast_to(gate, x.shape)
        s = self._s
        s.buf = np.concatenate([s.buf, x])
        s.allow = np.concatenate([s.allow, gate])
        events: list[VADEvent] = []
        n = self.options.frame_samples
        end = s.buf_start + len(s.buf)
        while s.frame_pos + n <= end:
            event = self._judge_frame(s.frame_pos, s.frame_pos + n)
            if event is not None:
                events.append(event)
            s.frame_pos += n
        # Keep only what the next frame and the next silero chunk (with context) still need.
        keep = min(s.frame_pos, s.chunk_end - _CHUNK - _CONTEXT) - s.buf_start
        if keep > 0:
            s.buf, s.allow = s.buf[keep:], s.allow[keep:]
            s.buf_start += keep
        return events

    def _run_silero(self, upto: int) -> None:
        """Score every silero chunk that ends by sample ``upto``, in order."""
        s = self._s
        hop = _CHUNK // s.phases
        while s.chunk_end <= upto:
            lo = s.chunk_end - _CHUNK - _CONTEXT - s.buf_start
            audio = torch.from_numpy(s.buf[lo : lo + _CONTEXT + _CHUNK]).unsqueeze(0)
            phase = (s.chunk_end - _CHUNK) // hop % s.phases
            with torch.inference_mode():
                prob, s.silero_state[phase] = self._net(audio, s.silero_state[phase])
            s.prob = float(prob)
            s.chunk_end += hop

    def _judge_frame(self, start: int, stop: int) -> VADEvent | None:
        s, o = self._s, self.options
        self._run_silero(stop)
        frame = s.buf[start - s.buf_start : stop - s.buf_start]
        level_db = 10.0 * np.log10(float(np.dot(frame, frame)) / len(frame) + 1e-20)
        # webrtcvad adapts its noise model frame by frame, so it sees every frame.
        voiced = s.webrtc.is_speech(_to_pcm16(frame), SAMPLE_RATE)
        allowed = bool(s.allow[start - s.buf_start : stop - s.buf_start].all())
        stage1 = voiced and allowed and level_db >= o.min_level_db
        s.frame_is_speech = stage1 and s.prob >= o.confirm_threshold
        return self._advance(stage1, s.frame_is_speech, start, stop)

    def _advance(self, stage1: bool, speech: bool, start: int, stop: int) -> VADEvent | None:
        """One frame of hysteresis; returns the event if this frame completed one.

        Silero lags an onset by 16-60 ms, so stage 1 alone opens a question that silero
        gets ``start_window`` frames to answer. STARTING opens on a stage-1 frame (the
        start event's ``sample`` is the onset stage 1 heard) and only confirmed frames
        count towards ``start_frames``; a stop is not decided while such a question is
        open, so speech resuming right at the end of a pause is not cut in two.
        """
        s, o = self._s, self.options
        s.unconfirmed = s.unconfirmed + 1 if stage1 and not speech else 0
        if s.state is VADState.STARTING:
            s.run_frames += 1
            if not stage1:
                s.state = VADState.QUIET
            elif s.run_frames > o.start_window:
                # Stage 1 kept firing (loud noise does that) without enough confirmation:
                # restart the run here so the onset estimate never drifts far back.
                self._begin(VADState.STARTING, start, speech)
            else:
                s.run_hits += speech
        elif s.state is VADState.QUIET:
            if stage1:
                self._begin(VADState.STARTING, start, speech)
        elif s.state is VADState.SPEAKING:
            if not speech:
                self._begin(VADState.STOPPING, start, True)
        elif speech:  # STOPPING, and speech came back
            s.state = VADState.SPEAKING
        else:
            s.run_hits += 1
        if s.state is VADState.STARTING and s.run_hits >= o.start_frames:
            s.state = VADState.SPEAKING
            return VADEvent("start", s.run_start, stop)
        awaiting_silero = 0 < s.unconfirmed <= o.start_window
        if s.state is VADState.STOPPING and s.run_hits >= o.stop_frames and not awaiting_silero:
            s.state = VADState.QUIET
            return VADEvent("stop", s.run_start, stop)
        return None

    def _begin(self, state: VADState, start: int, hit: bool) -> None:
        s = self._s
        s.state, s.run_start, s.run_frames, s.run_hits = state, start, 1, int(hit)


def _to_pcm16(frame: np.ndarray) -> bytes:
    return (np.clip(frame, -1.0, 1.0) * 32767.0).astype(np.int16).tobytes()
