"""The session's listening front: echo handling, then voice activity, frame by frame.

The agent knows exactly what it played. Each microphone frame is matched with the output
samples played at the same sample times; an adaptive echo canceller removes the agent's own
voice, and a reference-aware gate refuses to count a frame as user speech while what is
left can be explained by echo the canceller has not removed. Until the canceller has learnt
the path that gate assumes the worst coupling; what the microphone has already shown about
each lag of the path (:mod:`parley.agent.core.echo_evidence`) lets through, meanwhile, frames
that hold more than the echo can possibly be. The VAD runs on the residual.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Literal, Protocol, cast

import numpy as np

from parley.agent.core.endpoint import Endpointer
from parley.config import AgentConfig
from parley.speech_io.audio import SAMPLE_RATE
from parley.speech_io.ring import SampleRing

if TYPE_CHECKING:
    from parley.speech_io.echo import EchoCanceller

HISTORY_S = 4  # residual audio kept for pre-roll and the gap inside a user turn


class VoiceEvent(Protocol):
    @property
    def kind(self) -> str:
        """Either "start" or "stop"."""
        ...

    @property
    def sample(self) -> int:
        """Where the speech began (start) or the silence after it began (stop)."""
        ...


class SpeechDetector(Protocol):
    """A streaming voice activity detector over residual microphone audio.

    Besides confirmed starts and stops it reports a tentative stage (speech that may be
    starting, not confirmed yet), on which a speaking agent pauses before it decides.
    """

    def push(self, samples: np.ndarray, allow: bool | np.ndarray = True) -> Sequence[VoiceEvent]:
        """Feed samples; ``allow`` False (per call or per sample) means not user speech."""
        ...

    @property
    def speaking(self) -> bool:
        """True while speech is going on (not in its closing silence)."""
        ...

    @property
    def is_speech(self) -> bool:
        """True from a confirmed start until its stop (closing silence included)."""
        ...

    @property
    def starting(self) -> bool:
        """An unconfirmed run is open: speech may be starting."""
        ...

    @property
    def tentative(self) -> bool:
        """The open run leans towards speech enough for a speaking agent to pause."""
        ...

    @property
    def run_start(self) -> int:
        """First sample of the open run (where a start it confirms would say speech began)."""
        ...

    @property
    def closing_since(self) -> int | None:
        """First sample of the silence that may end the speech, while it is too short to
        call a stop; None otherwise."""
        ...

    def end_speech(self) -> VoiceEvent | None:
        """Call the speech over now, in its closing silence: the stop event it would have
        given later (None when no silence is open)."""
        ...

    def retune(
        self, confirm_threshold: float | None = None, min_level_db: float | None = None
    ) -> None:
        """Change how sure it must be, and how loud speech must be, from the next frame
        on; None leaves a setting as it is."""
        ...

    def reset(self) -> None: ...


def default_detector(frame_ms: int) -> SpeechDetector:
    """webrtcvad with hysteresis, confirmed by silero-vad."""
    from parley.speech_io.vad import StreamingVAD, VADOptions

    # VADOptions refuses a frame webrtcvad has no mode for.
    return StreamingVAD(VADOptions(frame_ms=cast(Literal[10, 20, 30], frame_ms)))


class InputStage:
    """The listener: echo cancellation, the near-end gate and the VAD, with the history
    they need, and the endpointer that turns voice events into user turns."""

    def __init__(self, config: AgentConfig, detector: SpeechDetector | None, frame: int) -> None:
        self.detector = detector if detector is not None else default_detector(config.frame_ms)
        self.residual = SampleRing(HISTORY_S * SAMPLE_RATE)
        self.reference = SampleRing(HISTORY_S * SAMPLE_RATE)
        self.echo: EchoCanceller | None = None
        self.turn = Endpointer(0, 0)
        self.reconfigure(config)

    def reconfigure(self, config: AgentConfig) -> None:
        """Echo handling and endpointing settings, from the next frame on."""
        ms = SAMPLE_RATE // 1000
        self.turn.retune(config.endpoint_silence_ms * ms, config.preroll_ms * ms)
        self.set_echo_cancellation(config.echo_cancellation)

    def set_echo_cancellation(self, on: bool) -> None:
        """Switch echo handling; switched on again it starts learning the path afresh."""
        if on and self.echo is None:
            from parley.agent.core.echo_evidence import EchoEvidence
            from parley.speech_io.echo import EchoCanceller
            from parley.speech_io.echo_gate import NearEndGate

            self.echo = EchoCanceller()
            self.gate = NearEndGate(self.echo)
            self.evidence = EchoEvidence(self.echo, self.gate.options)
        elif not on:
            self.echo = None

    def process(self, frame: np.ndarray, start: int) -> Sequence[VoiceEvent]:
        """Run one microphone frame that began at input sample ``start``."""
        allow: bool | np.ndarray = True
        residual = frame
        if self.echo is not None:
            ref = self.reference.read(start, start + len(frame))
            residual = self.echo.process(frame, ref)
            verdicts = self.gate.process(residual, ref) | self.evidence.process(frame, ref)
            # One verdict per 10 ms gate frame; spread them over the samples they judge.
            per = len(frame) // max(1, len(verdicts))
            if len(verdicts) and per * len(verdicts) == len(frame):
                allow = np.repeat(verdicts, per)
            else:
                allow = bool(np.all(verdicts))
        self.residual.append(residual)
        return self.detector.push(residual, allow)

    @property
    def speaking(self) -> bool:
        return self.detector.speaking

    @property
    def tentative_onset(self) -> int | None:
        """Where possible, not yet confirmed, user speech began; None when there is none."""
        return self.detector.run_start if self.detector.tentative else None

    @property
    def starting(self) -> bool:
        """The detector has an unconfirmed run open (it may still confirm it)."""
        return self.detector.tentative or self.detector.starting

    @property
    def closing_since(self) -> int | None:
        """Where the silence the detector has not yet called a stop began, if one is open."""
        return self.detector.closing_since

    def end_speech(self) -> VoiceEvent | None:
        """The detector's stop, now (the turn is known to be over)."""
        return self.detector.end_speech()

    @property
    def oldest(self) -> int:
        """The oldest input sample whose residual is still held."""
        return self.residual.start

    def recent(self, begin: int, stop: int) -> np.ndarray:
        """Residual input samples ``[begin, stop)``."""
        return self.residual.read(max(begin, self.oldest), stop)

    def played(self, samples: np.ndarray, output_sample: int) -> None:
        """Samples handed to the speaker starting at ``output_sample`` (the echo reference)."""
        if output_sample != self.reference.end:
            raise ValueError(f"reference out of step: {output_sample} != {self.reference.end}")
        self.reference.append(samples)

    def unplayed(self, n: int) -> None:
        """The newest ``n`` reference samples never reached the speaker."""
        self.reference.drop_newest(n)
