"""What user sound over a reply does to it: pause it, resume it, or cut it.

Pause-then-decide: the reply pauses the moment the listener suspects speech over it (a
tentative onset) or confirms it; it resumes when the sound ends, or is never confirmed,
before ``min_interruption``; it is cut once the user has spoken that long. Pausing first
is what makes the stop fast, deciding later is what lets "uh-huh" and a cough pass.

The rules read the session's state and the listener's view and return the move to make;
the session makes it. All times are input samples.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

from parley.agent.core.events import AgentState


class Action(enum.Enum):
    PAUSE = "pause"
    RESUME = "resume"
    INTERRUPT = "interrupt"


@dataclass(frozen=True)
class Move:
    action: Action
    reason: str
    onset: int = 0  # PAUSE: the input sample where the user's sound began


class BargeIn:
    """The onset of user sound over the reply, and the rules above."""

    def __init__(self, tentative_hold: int, min_interruption: int) -> None:
        # A pause on unconfirmed speech is held this long before it may be undone, so a
        # flickering onset does not stutter the output.
        self.tentative_hold = tentative_hold
        self.min_interruption = min_interruption
        self.onset: int | None = None  # user sound over the reply began here
        self.tentative_since: int | None = None  # paused on possible speech, at this sample

    def frame(
        self, state: AgentState, now: int, tentative_onset: int | None, starting: bool
    ) -> Move | None:
        """After each frame: pause at possible speech over a speaking reply, resume when
        it is never confirmed (``starting`` False) within the hold."""
        since = self.tentative_since
        if since is None:
            if state is AgentState.SPEAKING and tentative_onset is not None:
                self.tentative_since = now
                self.onset = tentative_onset
                return Move(Action.PAUSE, "possible user speech over the reply", tentative_onset)
        elif state is not AgentState.PAUSED:
            self.tentative_since = None
        elif not starting and now - since >= self.tentative_hold:
            self.tentative_since = None
            self.onset = None
            return Move(Action.RESUME, "not speech after all")
        return None

    def speech_started(self, state: AgentState, sample: int) -> Move | None:
        """Confirmed speech from ``sample``."""
        move = None
        if state in (AgentState.THINKING, AgentState.SPEAKING):
            self.onset = sample
            move = Move(Action.PAUSE, "user speech over the reply", sample)
        elif self.tentative_since is not None:  # already paused on it: now it is speech
            self.onset = sample
        self.tentative_since = None
        return move

    def speech_stopped(self, state: AgentState) -> Move | None:
        """The speech ended; paused on it, it was too short to take the turn."""
        self.tentative_since = None
        if state is AgentState.PAUSED and self.onset is not None:
            self.onset = None
            return Move(Action.RESUME, "short user sound: backchannel or noise")
        return None

    def due(self, state: AgentState, now: int, speaking: bool) -> Move | None:
        """Cut the paused reply once the user has kept speaking ``min_interruption``."""
        if (
            state is AgentState.PAUSED
            and self.onset is not None
            and speaking
            and now - self.onset >= self.min_interruption
        ):
            self.onset = None
            return Move(Action.INTERRUPT, "user kept speaking")
        return None

    def forget(self) -> None:
        """The reply is gone by other means (failed, cut by the application)."""
        self.onset = None
