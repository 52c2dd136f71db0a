"""The conversation as the chat app shows it, built from the session's events only.

Pure bookkeeping, no UI: :meth:`Conversation.apply` is the session listener, called
synchronously on every event, so it only appends and counts; the app renders the result
on its own timer. Latencies are measured in session samples (16 kHz), not clock time:
``input_sample`` and ``output_sample`` count from the same start at the same rate, so the
figures mean the same on devices and in virtual time.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from parley.agent.chat.stats import LatencyStats, level_db
from parley.agent.core.events import (
    AgentState,
    Event,
    FirstAudio,
    Interrupted,
    PlaybackPaused,
    ReplyEnded,
    ReplyStarted,
    StateChanged,
    TextDelta,
    UserSpeechStarted,
    UserTurnEnded,
)
from parley.speech_io.audio import SAMPLE_RATE as SR


@dataclass
class UserTurn:
    """One user turn as the model received it."""

    index: int
    duration_s: float
    level_db: float


@dataclass
class AgentTurn:
    """One reply: its streamed text and how it ended."""

    index: int
    reply_id: int
    text: str = ""
    status: str = "streaming"  # then "completed", "interrupted" or "failed"
    heard_text: str | None = None  # what the user heard, for an interrupted reply
    latency_ms: float | None = None  # end of the user's speech to the reply's first audio
    stop_ms: float | None = None  # barge-in onset to the output going silent

    @property
    def unheard_text(self) -> str:
        """The part of the reply the user never heard (empty unless interrupted)."""
        if self.heard_text is None:
            return ""
        if self.text.startswith(self.heard_text):
            return self.text[len(self.heard_text) :]
        # The heard text is re-detokenized from a token prefix and may not be a string
        # prefix of the streamed text; then all of the streamed text is shown as cut.
        return self.text


Turn = UserTurn | AgentTurn


@dataclass
class Conversation:
    """Turns, agent state and latency figures, from session events."""

    mic_audio: Callable[[int, int], np.ndarray] | None = None  # input samples [a, b)
    turns: list[Turn] = field(default_factory=list)
    state: AgentState = AgentState.LISTENING
    response: LatencyStats = field(default_factory=LatencyStats)
    barge_in: LatencyStats = field(default_factory=LatencyStats)
    interruptions: int = 0
    version: int = 0  # bumped on every visible change, so the UI redraws only then
    _replies: dict[int, AgentTurn] = field(default_factory=dict)
    _speech_end: int | None = None  # input sample where the last user turn's speech ended
    _onset: int | None = None  # input sample of the latest user speech onset
    _paused_at: int | None = None  # input sample at which playback last paused
    # What the sound devices add between the session and the air (input + output
    # buffers); the figures are taken on the input timeline, then this is added.
    device_latency_ms: float = 0.0

    def _interrupted(self, turn: AgentTurn, event: Interrupted) -> None:
        turn.heard_text = event.heard_text
        self.interruptions += 1
        if self._onset is not None:
            # Output went silent at the pause (or now, when nothing paused it first).
            silent = self._paused_at if self._paused_at is not None else event.output_sample
            turn.stop_ms = self._ms_after(self._onset, silent)
            self.barge_in.add(turn.stop_ms)
        self._onset = None

    def _ms_after(self, since: int, at: int) -> float:
        return 1000.0 * max(0, at - since) / SR + self.device_latency_ms

    def apply(self, event: Event) -> None:
        """The session listener: cheap, never blocks."""
        turn: AgentTurn | None
        match event:
            case StateChanged():
                self.state = event.new
                if event.new is AgentState.LISTENING:
                    self._paused_at = None
            case UserSpeechStarted():
                self._onset = event.input_sample
                return  # nothing visible yet
            case UserTurnEnded():
                self._speech_end = event.input_sample
                start = event.input_sample - round(event.audio_s * SR)
                audio = self.mic_audio(start, event.input_sample) if self.mic_audio else None
                level = level_db(audio) if audio is not None else -100.0
                self.turns.append(UserTurn(len(self.turns), event.audio_s, level))
            case ReplyStarted():
                turn = AgentTurn(len(self.turns), event.reply_id)
                # Only speech that starts over this reply is a barge-in on it.
                self._onset = self._paused_at = None
                self._replies[event.reply_id] = turn
                self.turns.append(turn)
            case TextDelta():
                if (turn := self._replies.get(event.reply_id)) is None:
                    return
                turn.text += event.text
            case FirstAudio():
                turn = self._replies.get(event.reply_id)
                if turn is None or self._speech_end is None:
                    return
                at = event.input_sample if event.input_sample is not None else event.output_sample
                turn.latency_ms = self._ms_after(self._speech_end, at)
                self.response.add(turn.latency_ms)
            case PlaybackPaused():
                # The pause's own onset: a tentative pause comes before the confirmed start.
                at = event.input_sample if event.input_sample is not None else event.output_sample
                self._paused_at, self._onset = at, event.onset_sample
                return
            case Interrupted():
                if (turn := self._replies.get(event.reply_id)) is None:
                    return
                self._interrupted(turn, event)
            case ReplyEnded():
                if (turn := self._replies.pop(event.reply_id, None)) is None:
                    return
                turn.status = event.status
                if event.status == "interrupted" and turn.heard_text is None:
                    turn.heard_text = event.text
            case _:
                return
        self.version += 1
