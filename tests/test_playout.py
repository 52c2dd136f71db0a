"""Playout on its own: reply audio out, silence around it, rewinds, the echo reference."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from parley.agent.core.clock import VirtualClock
from parley.agent.core.events import AudioPlayed, AudioRewound
from parley.agent.core.playback import Playout
from parley.agent.core.reply import Reply
from parley.agent.core.text import IncrementalDetokenizer


@dataclass
class Owner:
    reply: Reply | None = None
    playing: bool = True
    started: list[int] = field(default_factory=list)  # output samples of first audio
    finished: list[int] = field(default_factory=list)

    def audio_started(self, reply: Reply, output_sample: int) -> None:
        self.started.append(output_sample)

    def played_out(self, reply: Reply) -> None:
        self.finished.append(reply.id)


@dataclass
class Echo:
    reference: list[float] = field(default_factory=list)

    def played(self, samples: np.ndarray, output_sample: int) -> None:
        assert output_sample == len(self.reference)  # in step, as the real one insists
        self.reference += samples.tolist()

    def unplayed(self, n: int) -> None:
        del self.reference[len(self.reference) - n :]


def reply_with(samples: int, done: bool = True) -> Reply:
    reply = Reply(id=7, epoch=0, detokenizer=IncrementalDetokenizer(None))
    reply.audio = np.arange(1, samples + 1, dtype=np.float32)
    reply.generation_done = done
    return reply


def make(reply: Reply | None = None, max_ahead: int = 0):
    owner, echo, events = Owner(reply), Echo(), []
    return Playout(owner, echo, VirtualClock(), events.append, max_ahead), owner, echo, events


def test_reply_audio_between_silences_and_every_sample_in_the_reference() -> None:
    playout, owner, echo, events = make()
    assert not playout.pull(4).any()  # nothing in flight: silence
    owner.reply = reply_with(6)
    out = playout.pull(4)
    assert out.tolist() == [1, 2, 3, 4] and owner.started == [4]
    out = playout.pull(4)  # the last two, then silence; the reply is played out
    assert out.tolist() == [5, 6, 0, 0] and owner.finished == [7]
    assert playout.output_sample == 12 and echo.reference[4:10] == [1, 2, 3, 4, 5, 6]
    assert [(e.start, e.end) for e in events if isinstance(e, AudioPlayed)] == [(0, 4), (4, 6)]


def test_nothing_goes_out_while_not_playing() -> None:
    playout, owner, _, events = make(reply_with(6))
    owner.playing = False  # paused over user speech
    assert not playout.pull(4).any() and owner.reply.position == 0 and events == []
    owner.playing = True
    assert playout.pull(2).tolist() == [1, 2]


def test_rewind_gives_the_reply_back_only_its_own_samples() -> None:
    playout, owner, echo, events = make()
    playout.pull(3)  # silence
    owner.reply = reply_with(10, done=False)
    playout.pull(4)
    playout.pull(4)
    playout.rewind(6)  # a device dropped the last six: two of one pull, four of the other
    assert owner.reply.position == 2 and playout.output_sample == 5
    assert len(echo.reference) == 5
    assert [e.position for e in events if isinstance(e, AudioRewound)] == [4, 2]
    assert playout.pull(3).tolist() == [3, 4, 5]  # played again, in order
    playout.rewind(100)  # more than was ever pulled: back to the start, no further
    assert playout.output_sample == 0 and owner.reply.position == 0 and echo.reference == []


def test_the_producer_is_woken_when_little_is_left() -> None:
    reply = reply_with(10, done=False)
    playout, *_ = make(reply, max_ahead=4)
    playout.pull(4)  # 6 left: enough
    assert not reply.space.is_set()
    playout.pull(2)  # 4 left: make more, and the producer counts as busy until it waits
    assert reply.space.is_set() and not reply.idle.is_set()


def test_silence_the_device_played_moves_the_timeline_and_takes_no_reply_audio() -> None:
    playout, owner, echo, events = make(reply_with(10, done=False))
    assert playout.pull(3).tolist() == [1, 2, 3]
    playout.silence(5)  # the device ran dry for 5 samples (say, after a clear)
    assert playout.output_sample == 8 and echo.reference == [1, 2, 3, 0, 0, 0, 0, 0]
    assert playout.pull(2).tolist() == [4, 5]  # the reply goes on from where it was
    assert echo.reference[-2:] == [4, 5] and owner.reply.position == 5
    assert not [e for e in events if isinstance(e, AudioRewound)]
