"""The speaker side of a duplex session: handing out reply audio, taking back what a device
dropped.

:class:`PlaybackSide` is a part of :class:`~parley.agent.session.DuplexSession`, kept apart
because it is the one path the audio device drives: ``pull_output`` for every block the
speaker needs, ``rewind_output`` when a device buffer was cleared before it played.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from typing import TYPE_CHECKING

import numpy as np

from parley.agent.events import AgentState, AudioPlayed, AudioRewound, Event, FirstAudio
from parley.agent.state import Signal

if TYPE_CHECKING:
    from parley.agent.clock import Clock
    from parley.agent.input import InputStage
    from parley.agent.reply import Reply


class PlaybackSide:
    """Output methods of :class:`~parley.agent.session.DuplexSession` (it holds the state:
    the reply, the clock, the output sample counter, the recent pulls)."""

    # The session's state this side reads and moves, all set by DuplexSession.__init__.
    clock: Clock
    input: InputStage
    state: AgentState
    input_sample: int
    output_sample: int
    _reply: Reply | None
    _max_ahead: int
    _recent_pulls: deque[tuple[int, int, int]]  # (n, reply_id, reply samples in it)
    _emit: Callable[[Event], None]

    def _signal(self, signal: Signal, reason: str) -> None:
        raise NotImplementedError

    def _finish_reply(self, reply: Reply) -> None:
        raise NotImplementedError

    def pull_output(self, n: int) -> np.ndarray:
        """The next ``n`` samples to play; silence when nothing is playing."""
        out = np.zeros(n, dtype=np.float32)
        reply, k = self._reply, 0
        if reply is not None and self.state in (AgentState.THINKING, AgentState.SPEAKING):
            k = min(n, reply.buffered)
            if k > 0:
                if not reply.audio_started:
                    reply.audio_started = True
                    self._signal(Signal.AUDIO_STARTED, "first reply audio")
                    self._emit(
                        FirstAudio(
                            t=self.clock.now(),
                            epoch=reply.epoch,
                            reply_id=reply.id,
                            output_sample=self.output_sample,
                            compute_ms=1000.0 * (reply.first_audio_compute_s or 0.0),
                            input_sample=self.input_sample,
                        )
                    )
                out[:k] = reply.audio[reply.position : reply.position + k]
                self._emit(
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
                if reply.buffered <= self._max_ahead and not reply.space.is_set():
                    # Wake the producer, and mark it busy now, so settle() waits for it.
                    reply.idle.clear()
                    reply.space.set()
            if reply.finished_playing and self.state in (AgentState.THINKING, AgentState.SPEAKING):
                self._finish_reply(reply)
        self._recent_pulls.append((n, reply.id if reply is not None and k else 0, k))
        self.input.played(out, self.output_sample)
        self.output_sample += n
        return out

    def rewind_output(self, n: int) -> None:
        """The last ``n`` pulled samples never reached the speaker (a device buffer was cleared)."""
        while n > 0 and self._recent_pulls:
            size, reply_id, k = self._recent_pulls.pop()
            take = min(size, n)
            reply = self._reply
            # Only the reply samples at the tail of the dropped span go back to the reply.
            back = max(0, k - (size - take))
            if reply is not None and reply.id == reply_id and back:
                reply.position -= back
                self._emit(
                    AudioRewound(
                        t=self.clock.now(),
                        epoch=reply.epoch,
                        reply_id=reply.id,
                        position=reply.position,
                    )
                )
            self.output_sample -= take
            self.input.unplayed(take)
            if take < size:
                self._recent_pulls.append((size - take, reply_id, k - back))
            n -= take
