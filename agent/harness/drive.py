"""Driving a session from a source to a sink in virtual time, one frame at a time.

At each tick the frame just recorded goes in, background work settles, and the next frame
to play comes out; the virtual clock then stands at the end of the recorded frame. Nothing
here reads the wall clock, so the same input gives the same events on every run.
"""

from __future__ import annotations

from parley.agent.core.clock import VirtualClock
from parley.agent.core.session import DuplexSession
from parley.speech_io.sources import AudioSink, AudioSource


async def drive(
    session: DuplexSession,
    clock: VirtualClock,
    source: AudioSource,
    sink: AudioSink,
    n_samples: int,
    frame: int | None = None,
) -> None:
    """Run ``n_samples`` of conversation; the sink receives ``n_samples`` played samples,
    time-aligned with the source (sample ``j`` of each sounds at the same instant)."""
    frame = frame or session.config.frame_ms * session.sample_rate // 1000
    # The first frame plays while the first is recorded, as on a device with no latency.
    sink.write(session.pull_output(frame))
    for start in range(0, n_samples, frame):
        n = min(frame, n_samples - start)
        session.push_input(source.read(n))
        clock.set((start + n) / session.sample_rate)
        await session.settle()
        if start + n < n_samples:
            sink.write(session.pull_output(min(frame, n_samples - start - n)))
