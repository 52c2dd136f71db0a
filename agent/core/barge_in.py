"""What user sound over a reply does to it: pause it, resume it, or cut it.

Pause-then-decide: the reply pauses the moment the listener suspects speech over it (a
tentative onset) or confirms it; it resumes when the sound ends, or is never confirmed,
before ``min_interruption``; it is cut once the user has spoken that long. Pausing first
is what makes the stop fast, deciding later is what lets "uh-huh" and a cough pass.

Where the checkpoint has a cut-in detector, the words decide as well (its probability
that the speech takes the turn, judged every few tens of ms while the user speaks and once
when they stop): "wait", "stop" or a new question cut the reply once the detector is sure
twice in a row, or at the end of speech shorter than ``min_interruption``; words it
mostly judged to acknowledge (the median of its latest judgments; one may jump as a word ends)
may run on past it, up to ``longest_backchannel``, and still resume the reply
("yeah yeah right").

The rules read the session's state and the listener's view and return the move to make;
the session makes it. All times are input samples.
"""

from __future__ import annotations

import enum
from collections.abc import Callable
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


TAKES = 0.9
"""The cut-in detector's probability above which the words take the turn."""
ACKNOWLEDGES = 0.25
"""... and at or below which (the median of its latest judgments) they only acknowledge it."""
ACKNOWLEDGED_OVER = 3
"""How many of the latest judgments that median is of."""
WORDS_OVER_MS = 200
"""Short words over the paused reply that the detector is sure take the turn ("stop", "no
stop") are over after this much silence, before the VAD calls its stop (320 ms): the new
turn is answered that much sooner."""


class BargeIn:
    """The onset of user sound over the reply, and the rules above."""

    def __init__(self, tentative_hold: int, min_interruption: int, words_from: int = 0) -> None:
        # A pause on unconfirmed speech is held this long before it may be undone, so a
        # flickering onset does not stutter the output.
        self.tentative_hold = tentative_hold
        self.min_interruption = min_interruption
        self.words_from = words_from  # speech heard before the words are asked about
        self.onset: int | None = None  # user sound over the reply began here
        self.tentative_since: int | None = None  # paused on possible speech, at this sample
        self.judgments: list[float] = []  # the detector's, on the speech since the onset
        self.words_took: int | None = None  # the onset of speech whose words cut the reply

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
                self.judgments = []
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
            self.judgments = []
            move = Move(Action.PAUSE, "user speech over the reply", sample)
        elif self.tentative_since is not None:  # already paused on it: now it is speech
            self.onset = sample
        self.tentative_since = None
        return move

    def speech_stopped(self, state: AgentState, takes: float | None = None) -> Move | None:
        """The speech ended; paused on it, it was too short to take the turn by its
        length, unless its words take it."""
        self.tentative_since = None
        if state is AgentState.PAUSED and self.onset is not None:
            onset, self.onset = self.onset, None
            if takes is not None and takes >= TAKES:
                self.words_took = onset
                return Move(Action.INTERRUPT, "short words that take the turn")
            return Move(Action.RESUME, "short user sound: backchannel or noise")
        return None

    def asks(self, state: AgentState, now: int, speaking: bool) -> bool:
        """Whether the words of the speech over the paused reply are worth judging now."""
        return (
            state is AgentState.PAUSED
            and self.onset is not None
            and speaking
            and now - self.onset >= self.words_from
        )

    def judged(self, takes: float) -> None:
        """The detector's probability that the speech so far takes the turn."""
        self.judgments.append(takes)

    def _sure(self, holds: Callable[[float], bool]) -> bool:
        last = self.judgments[-2:]
        return len(last) == 2 and all(holds(p) for p in last)

    def _acknowledging(self) -> bool:
        # The latest judgments, which heard the most of the words: the first come a syllable
        # in ("exactly" starts out as likely to take the turn as not, 0.7 then 0.44, and
        # ends at 0.06-0.13). The upper median of three: one may jump as a word ends, and
        # with two judgments as likely as not, the speech takes the turn.
        said = sorted(self.judgments[-ACKNOWLEDGED_OVER:])
        return len(said) >= 2 and said[len(said) // 2] <= ACKNOWLEDGES

    @property
    def longest_backchannel(self) -> int:
        return 2 * self.min_interruption

    def due(self, state: AgentState, now: int, speaking: bool) -> Move | None:
        """Cut the paused reply once the user has kept speaking ``min_interruption``, or
        sooner when the words take the turn; let words that only acknowledge run on."""
        if state is not AgentState.PAUSED or self.onset is None or not speaking:
            return None
        spoken = now - self.onset
        if spoken >= self.words_from and self._sure(lambda p: p >= TAKES):
            self.words_took, self.onset = self.onset, None
            return Move(Action.INTERRUPT, "the words take the turn")
        if spoken < self.min_interruption:
            return None
        if spoken < self.longest_backchannel and self._acknowledging():
            return None
        self.onset = None
        return Move(Action.INTERRUPT, "user kept speaking")

    def said_all(self, stop: int) -> bool:
        """Whether the speech that stopped at ``stop`` was short words that took the turn:
        a whole turn ("stop", "wait what"), not the start of a longer one, which a pause
        may split. Asked once per stop."""
        whole = self.words_were_a_turn(stop)
        self.words_took = None
        return whole

    def words_were_a_turn(self, stop: int) -> bool:
        """Whether speech stopping at ``stop`` would be short words that took the turn."""
        return self.words_took is not None and stop - self.words_took < self.min_interruption

    def forget(self) -> None:
        """The reply is gone by other means (failed, cut by the application)."""
        self.onset = self.words_took = None
