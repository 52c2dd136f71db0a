"""The audio clock of a served session.

A duplex session advances by input frames: each recorded frame goes in and one frame to
play comes out. Over the wire the client's microphone stream is that clock while it
streams; when it stops (a clip sent, then nothing) the server fills silence in real time,
so turns still end and replies still play out. Client audio is held back to real time,
which bounds both the CPU a session takes and the audio it may queue.
"""

from __future__ import annotations

from collections import deque

import numpy as np

from parley.agent.core.clock import Clock
from parley.speech_io.audio import SAMPLE_RATE

# A first chunk longer than this is taken as recorded over this much time only: a client
# cannot buy a head start on real time by sending seconds at once.
MAX_BACKDATE_S = 0.1
# Looks at the clock further apart than this mean the loop stalled (it runs every 20 ms).
STALL_S = 0.1


class BufferFullError(Exception):
    """Audio beyond the session's bound on queued input."""


class InputPacer:
    """Client audio in, frames out at real time; silence once the client is idle.

    The timeline starts with the first audio, taken as just recorded (up to
    ``MAX_BACKDATE_S`` of it is due on arrival). A frame is due once the clock has passed
    its end. A due frame takes queued client audio; with none queued it waits while the
    client appended within ``hold_s`` (its next chunk is on the way), and is silence
    after that. Only time in which the server looked counts towards the hold: across a
    gap between looks longer than ``STALL_S`` (an overloaded loop) the client's next chunk
    may be sitting unread in the socket, so silence there would cut into its speech.
    """

    def __init__(
        self, clock: Clock, frame: int, max_buffered: int, hold_s: float, max_catch_up: int
    ) -> None:
        self.clock = clock
        self.frame = frame
        self.max_buffered = max_buffered
        self.hold_s = hold_s
        self.max_catch_up = max_catch_up
        self.timeline = 0  # samples that went into the session
        self.origin: float | None = None  # clock time of timeline sample 0
        self._queue: deque[np.ndarray] = deque()
        self.buffered = 0
        self._quiet_s = np.inf  # client silence the server looked at, since its last append
        self._last_look: float | None = None

    @property
    def started(self) -> bool:
        return self.origin is not None

    def start(self) -> None:
        if self.origin is None:
            self.origin = self.clock.now()

    def append(self, samples: np.ndarray) -> None:
        """Queue 16 kHz client audio; raises :class:`BufferFullError` past the bound."""
        if self.buffered + len(samples) > self.max_buffered:
            raise BufferFullError(
                f"{self.buffered / SAMPLE_RATE:.2f} s of audio already wait to be heard "
                f"(at most {self.max_buffered / SAMPLE_RATE:.1f} s); send audio at real time"
            )
        if self.origin is None:
            # The first chunk was recorded by the time it arrived: its samples are due at
            # once, not one chunk later (which would delay every frame of the session).
            backdate = min(len(samples), round(MAX_BACKDATE_S * SAMPLE_RATE))
            self.origin = self.clock.now() - backdate / SAMPLE_RATE
        if len(samples):
            self._queue.append(np.asarray(samples, dtype=np.float32))
            self.buffered += len(samples)
        self._quiet_s = 0.0

    def clear(self) -> int:
        """Drop queued audio not heard yet; returns how many samples."""
        dropped, self.buffered = self.buffered, 0
        self._queue.clear()
        return dropped

    def took(self, n: int) -> None:
        """``n`` samples went in outside the clock (a committed clip taken at once): move
        the clock's origin back so real-time pacing goes on from after them."""
        self.start()
        assert self.origin is not None
        self.timeline += n
        self.origin -= n / SAMPLE_RATE

    def due_frames(self) -> list[np.ndarray]:
        """The frames whose time has come, in order."""
        if self.origin is None:
            return []
        now = self.clock.now()
        if self._last_look is not None and now - self._last_look <= STALL_S:
            self._quiet_s += now - self._last_look
        self._last_look = now
        due = round((now - self.origin) * SAMPLE_RATE)
        if due - self.timeline > self.max_catch_up:
            # A stall: skip the time beyond the catch-up bound rather than burst it out.
            self.origin += (due - self.timeline - self.max_catch_up) / SAMPLE_RATE
            due = self.timeline + self.max_catch_up
        idle = self._quiet_s >= self.hold_s
        frames = []
        while self.timeline + self.frame <= due:
            if self.buffered >= self.frame:
                frames.append(self._take(self.frame))
            elif idle:
                frame = np.zeros(self.frame, dtype=np.float32)
                rest = self._take(self.buffered)
                frame[: len(rest)] = rest
                frames.append(frame)
            else:
                break
            self.timeline += self.frame
        return frames

    def _take(self, n: int) -> np.ndarray:
        parts, need = [], n
        while need > 0:
            head = self._queue[0]
            if len(head) <= need:
                parts.append(self._queue.popleft())
                need -= len(head)
            else:
                parts.append(head[:need])
                self._queue[0] = head[need:]
                need = 0
        self.buffered -= n
        return np.concatenate(parts) if parts else np.zeros(0, dtype=np.float32)
