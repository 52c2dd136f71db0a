"""What a duplex session tells the world: its states and its events.

Every event carries the clock time ``t`` (seconds) and the ``epoch`` it was made in. The
epoch is bumped on every real interruption; consumers drop anything older than the
current epoch, so nothing of a cancelled reply can leak out after the bump.

Sample positions: ``input_sample`` counts microphone samples since the session started;
``output_sample`` counts samples handed to the speaker since the session started (silence
included); ``position`` counts samples of one reply's own audio. All at 16 kHz.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, ClassVar


class AgentState(StrEnum):
    """Where the conversation stands."""

    LISTENING = "listening"  # nobody from our side is talking; the user may be
    THINKING = "thinking"  # a reply is being generated, nothing audible yet
    SPEAKING = "speaking"  # reply audio is playing
    PAUSED = "paused"  # user audio over our speech: output paused, not yet decided
    INTERRUPTED = "interrupted"  # the user took the turn; the reply is being torn down


@dataclass(frozen=True, kw_only=True)
class Event:
    """Base of all session events."""

    type: ClassVar[str] = "event"
    t: float
    epoch: int

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict with a ``type`` key."""
        data = {"type": self.type}
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            data[f.name] = value.value if isinstance(value, StrEnum) else value
        return data


@dataclass(frozen=True, kw_only=True)
class StateChanged(Event):
    type: ClassVar[str] = "state_changed"
    old: AgentState
    new: AgentState
    reason: str


@dataclass(frozen=True, kw_only=True)
class UserSpeechStarted(Event):
    type: ClassVar[str] = "user_speech_started"
    input_sample: int  # the VAD's estimate of where speech began


@dataclass(frozen=True, kw_only=True)
class UserSpeechEnded(Event):
    type: ClassVar[str] = "user_speech_ended"
    input_sample: int  # where the silence began


@dataclass(frozen=True, kw_only=True)
class UserTurnEnded(Event):
    """The user's turn is over: its silence lasted ``endpoint_silence`` (server_vad), or
    the end-of-turn detector or the words said so sooner or later (semantic_vad)."""

    type: ClassVar[str] = "user_turn_ended"
    input_sample: int  # where the user's speech ended
    audio_s: float  # length of the user's turn that goes to the model
    # The input sample at which the turn was called over: what the turn detection chose to
    # wait is ``decided_sample - input_sample``, so a reply's latency beyond it is the
    # pipeline's. None where it is not known (a record rebuilt from a wire client's view).
    decided_sample: int | None = None


@dataclass(frozen=True, kw_only=True)
class ReplyStarted(Event):
    type: ClassVar[str] = "reply_started"
    reply_id: int


@dataclass(frozen=True, kw_only=True)
class TextDelta(Event):
    type: ClassVar[str] = "text_delta"
    reply_id: int
    text: str


@dataclass(frozen=True, kw_only=True)
class FirstAudio(Event):
    """The reply's first sample went to the speaker."""

    type: ClassVar[str] = "first_audio"
    reply_id: int
    output_sample: int
    compute_ms: float = 0.0  # LM and vocoder time the reply took to its first audio
    # A reply started ahead of the turn's end began this long before it: that much of its
    # compute ran in the user's silence, off the response's path.
    ahead_ms: float = 0.0
    # Input samples processed when it happened: output runs ahead of input by what the
    # device holds, so figures against user speech are taken on the input timeline.
    input_sample: int | None = None


@dataclass(frozen=True, kw_only=True)
class AudioPlayed(Event):
    """Reply samples ``[start, end)`` went to the speaker, from ``output_sample`` on."""

    type: ClassVar[str] = "audio_played"
    reply_id: int
    start: int
    end: int
    output_sample: int


@dataclass(frozen=True, kw_only=True)
class AudioRewound(Event):
    """Reply samples from ``position`` on never reached the speaker (a device dropped them
    on a pause); they will play again from there."""

    type: ClassVar[str] = "audio_rewound"
    reply_id: int
    position: int


@dataclass(frozen=True, kw_only=True)
class PlaybackPaused(Event):
    type: ClassVar[str] = "playback_paused"
    reply_id: int
    position: int  # reply samples played when output stopped
    output_sample: int
    onset_sample: int  # input sample where the (possible) user speech began
    input_sample: int | None = None  # input samples processed when output paused


@dataclass(frozen=True, kw_only=True)
class PlaybackResumed(Event):
    type: ClassVar[str] = "playback_resumed"
    reply_id: int
    position: int  # reply sample playback resumes from
    output_sample: int


@dataclass(frozen=True, kw_only=True)
class Interrupted(Event):
    """The user took the turn; the reply is cut at ``played`` samples."""

    type: ClassVar[str] = "interrupted"
    reply_id: int
    played: int  # reply samples the user heard
    heard_text: str  # the reply's text aligned to what was heard
    output_sample: int


@dataclass(frozen=True, kw_only=True)
class ReplyEnded(Event):
    type: ClassVar[str] = "reply_ended"
    reply_id: int
    status: str  # "completed", "interrupted" or "failed"
    played: int
    text: str  # what stays in the conversation history


@dataclass
class HistoryItem:
    """One turn as the conversation remembers it."""

    role: str  # "user" or "assistant"
    audio_s: float = 0.0
    text: str = ""
    status: str = "completed"  # assistant: completed, interrupted, failed
