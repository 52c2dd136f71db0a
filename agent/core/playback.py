"""The speaker side of a duplex session: handing out reply audio, taking back what a device
dropped, and keeping the echo reference in step with what was played.

:class:`Playout` is a part of :class:`~parley.agent.core.session.DuplexSession`, kept apart
because it is the one path the audio device drives: ``pull`` for every block the speaker
needs, ``rewind`` when a device buffer was cleared before it played. What it needs of the
session is :class:`PlayoutOwner`; it never changes the session's state itself.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from typing import Protocol

import numpy as np

from parley.agent.core.clock import Clock
from parley.agent.core.events import AudioPlayed, AudioRewound, Event
from parley.agent.core.reply import Reply

RECENT_PULLS = 64  # pulls a device may still drop (more than any device buffer holds)


class PlayoutOwner(Protocol):
    """What :class:`Playout` asks of the session it plays for."""

    @property
    def reply(self) -> Reply | None:
        """The reply in flight, if any (playing or not)."""
        ...

    @property
    def playing(self) -> bool:
        """Whether the reply's audio may go out now (not while paused or listening)."""
        ...

    def audio_started(self, reply: Reply, output_sample: int) -> None:
        """The reply's first sample goes out at ``output_sample``."""
        ...

    def played_out(self, reply: Reply) -> None:
        """Every sample of the reply has been handed out."""
        ...


class EchoReference(Protocol):
    """Where what the speaker plays is kept for the echo canceller."""

    def played(self, samples: np.ndarray, output_sample: int) -> None: ...

    def unplayed(self, n: int) -> None: ...


class Playout:
    """Hands reply audio to the speaker, silence around it, and counts output samples."""

    def __init__(
        self,
        owner: PlayoutOwner,
        echo: EchoReference,
        clock: Clock,
        emit: Callable[[Event], None],
        max_ahead: int,
    ) -> None:
        self.owner = owner
        self.echo = echo
        self.clock = clock
        self.emit = emit
        self.max_ahead = max_ahead
        """Unplayed samples below which the reply's producer is woken to make more."""
        self.output_sample = 0  # samples handed out so far, silence included
        # (n, reply_id, reply samples at the tail of the pull): what a rewind gives back.
        self._recent: deque[tuple[int, int, int]] = deque(maxlen=RECENT_PULLS)

    def pull(self, n: int) -> np.ndarray:
        """The next ``n`` samples to play; silence when nothing is playing."""
        out = np.zeros(n, dtype=np.float32)
        reply, k = self.owner.reply, 0
        if reply is not None and self.owner.playing:
            k = min(n, reply.buffered)
            if k > 0:
                if not reply.audio_started:
                    reply.audio_started = True
                    self.owner.audio_started(reply, self.output_sample)
                out[:k] = reply.audio[reply.position : reply.position + k]
                self.emit(
                    AudioPlayed(
                        t=self.clock.now(),
                        epoch=reply.epoch,
                        reply_id=reply.id,
                        start=reply.position,
                        end=reply.position + k,
                        output_sample=self.output_sample,
                    )
                )
                reply.position += k
                if reply.buffered <= self.max_ahead:
                    reply.make_room()
            if reply.finished_playing and self.owner.playing:
                self.owner.played_out(reply)
        self._recent.append((n, reply.id if reply is not None and k else 0, k))
        self.echo.played(out, self.output_sample)
        self.output_sample += n
        return out

    def silence(self, n: int) -> None:
        """The speaker played ``n`` samples of silence it was never handed: the output
        count and the echo reference move on past them, so what plays next stays where
        the echo canceller expects it. No reply audio is taken."""
        self.echo.played(np.zeros(n, dtype=np.float32), self.output_sample)
        self.output_sample += n

    def rewind(self, n: int) -> None:
        """The last ``n`` pulled samples never reached the speaker (a device buffer was
        cleared): the reply's share of them will play again, and the echo reference
        forgets them."""
        while n > 0 and self._recent:
            size, reply_id, k = self._recent.pop()
            take = min(size, n)
            reply = self.owner.reply
            # Only the reply samples at the tail of the dropped span go back to the reply.
            back = max(0, k - (size - take))
            if reply is not None and reply.id == reply_id and back:
                reply.position -= back
                self.emit(
                    AudioRewound(
                        t=self.clock.now(),
                        epoch=reply.epoch,
                        reply_id=reply.id,
                        position=reply.position,
                    )
                )
            self.output_sample -= take
            self.echo.unplayed(take)
            if take < size:
                self._recent.append((size - take, reply_id, k - back))
            n -= take
