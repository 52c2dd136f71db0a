"""Where the user's turn lies in the input, and when it is over.

The listener's voice events say where speech starts and stops; a turn is more than one
run of speech (people pause mid-sentence), so a stop only opens a wait: the turn ends when
the silence has lasted the endpoint, and speech within it carries the same turn on. What
the model hears starts a pre-roll before the first start, because a VAD confirms speech a
little after it began.

All positions are input samples; nothing here reads a clock.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class TurnSpan:
    """One finished user turn: input samples ``[start, end)``, pre-roll included."""

    start: int
    end: int


class Endpointer:
    """The open user turn: its first sample, how far the model has been fed, and the
    silence that may be ending it."""

    def __init__(self, endpoint: int, preroll: int) -> None:
        self.endpoint = endpoint  # samples of silence that end a turn
        self.preroll = preroll  # samples kept before the first confirmed start
        self.start: int | None = None
        self.fed = 0  # input sample up to which the turn went to the model
        self.silence_from: int | None = None  # speech stopped here; the turn may be ending

    def retune(self, endpoint: int, preroll: int) -> None:
        """New settings, from the next frame on (an open turn keeps its start)."""
        self.endpoint, self.preroll = endpoint, preroll

    @property
    def open(self) -> bool:
        return self.start is not None

    @property
    def in_speech(self) -> bool:
        """A turn is open and not in a silence that may end it."""
        return self.start is not None and self.silence_from is None

    def speech_started(self, sample: int, oldest: int) -> bool:
        """Speech confirmed from ``sample``; ``oldest`` is the first input sample still held.
        True when this opens a new turn (the model's front end starts afresh)."""
        self.silence_from = None
        if self.start is not None:
            return False
        self.start = self.fed = max(0, sample - self.preroll, oldest)
        return True

    def speech_stopped(self, sample: int) -> None:
        """Silence from ``sample``: the turn ends if it lasts the endpoint."""
        if self.start is not None:
            self.silence_from = sample

    def to_feed(self, now: int) -> tuple[int, int] | None:
        """The samples ``[begin, now)`` the model has not been given yet while the user
        speaks, marked as given; None when nothing is due."""
        if not self.in_speech or now <= self.fed:
            return None
        begin, self.fed = self.fed, now
        return begin, now

    def ended(self, now: int) -> bool:
        """The silence after the turn has lasted the endpoint by input sample ``now``."""
        return self.silence_from is not None and now - self.silence_from >= self.endpoint

    def close(self) -> TurnSpan:
        """The turn is over: its span; the endpointer waits for the next."""
        if self.start is None or self.silence_from is None:
            raise RuntimeError("no user turn has ended")
        span = TurnSpan(self.start, self.silence_from)
        self.drop()
        return span

    def drop(self) -> None:
        """Forget the open turn (a short sound that was no turn at all)."""
        self.start = self.silence_from = None
