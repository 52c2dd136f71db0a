"""Driving a session through a timeline in virtual time, one frame at a time.

At each tick the frame just recorded goes in, background work settles, and the next frame
to play comes out; the virtual clock then stands at the end of the recorded frame. Nothing
here reads the wall clock, so the same timeline gives the same events on every run.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from parley.agent.clock import VirtualClock
from parley.agent.session import DuplexSession

# mic(start, n, played) -> the n microphone samples from input sample ``start``, given the
# n samples the speaker played over that same span.
MicFn = Callable[[int, int, np.ndarray], np.ndarray]


async def drive(
    session: DuplexSession,
    clock: VirtualClock,
    n_samples: int,
    mic: MicFn,
    frame: int | None = None,
) -> np.ndarray:
    """Run ``n_samples`` of conversation; returns what the speaker played, time-aligned."""
    frame = frame or session.config.frame_ms * session.sample_rate // 1000
    played = np.zeros(n_samples + frame, dtype=np.float32)
    # The first frame plays while the first is recorded: output sample j then sounds at
    # time j, aligned with input sample j, as on a device with zero latency.
    played[:frame] = session.pull_output(frame)
    for start in range(0, n_samples, frame):
        n = min(frame, n_samples - start)
        session.push_input(mic(start, n, played[start : start + n]))
        clock.set((start + n) / session.sample_rate)
        await session.settle()
        played[start + n : start + n + frame] = session.pull_output(frame)
    return played[:n_samples]
