"""The reply side of a duplex session: starting replies, cutting them, and ending them.

:class:`Replies` is a part of :class:`~parley.agent.core.session.DuplexSession`. A reply
is started (its producer running) before it has an id: a reply started ahead of the
turn's end (:class:`~parley.agent.core.preemptive.Preemption`, owned here) may be thrown
away unseen. It is numbered when it answers a turn, and from then on every way it can be
over (played to the end, cut, failed) goes through :meth:`Replies._end`, which accounts it
in the history and says so once. What it needs of the session is :class:`ReplyOwner`: the
state machine stays there.
"""

from __future__ import annotations

import asyncio
import logging
import math
from collections.abc import Callable, Coroutine
from typing import Any, Protocol

from parley.agent.core.barge_in import BargeIn
from parley.agent.core.bus import EventBus
from parley.agent.core.clock import Clock
from parley.agent.core.events import (
    AgentState,
    HistoryItem,
    Interrupted,
    ReplyEnded,
    ReplyStarted,
    TextDelta,
)
from parley.agent.core.model import AgentModel
from parley.agent.core.preemptive import HeldReply, Preemption
from parley.agent.core.reply import Reply, produce
from parley.agent.core.state import Signal
from parley.agent.core.text import IncrementalDetokenizer, text_of
from parley.llm.engine import LMContext, ReplyParams
from parley.llm.frontend import StreamingFrontEnd
from parley.llm.schedule import heard_prefix
from parley.speech_io.audio import SAMPLE_RATE
from parley.tokenizers.vocoder import StreamingVocoder

log = logging.getLogger(__name__)

Spawn = Callable[[Coroutine[Any, Any, None]], "asyncio.Task[None]"]


class ReplyOwner(Protocol):
    """What :class:`Replies` asks of the session it answers for."""

    @property
    def state(self) -> AgentState: ...

    @property
    def output_sample(self) -> int: ...

    def signal(self, signal: Signal, reason: str) -> None:
        """Move the state machine on."""
        ...

    def recheck(self) -> None:
        """Look at turn-taking again (it waited while a reply was torn down)."""
        ...


class Replies:
    """The session's current reply and the ones started ahead of a turn's end."""

    def __init__(
        self,
        owner: ReplyOwner,
        model: AgentModel,
        frontend: StreamingFrontEnd,
        context: LMContext,
        vocoder: StreamingVocoder,
        bus: EventBus,
        clock: Clock,
        barge: BargeIn,
        history: list[HistoryItem],
        spawn: Spawn,
    ) -> None:
        self._owner, self._model, self._context, self._vocoder = owner, model, context, vocoder
        self._bus, self._clock, self._barge, self._history = bus, clock, barge, history
        self._spawn = spawn
        self.preemption = Preemption(frontend, context, vocoder, self.new, spawn, owner.recheck)
        self.current: Reply | None = None
        self.params: ReplyParams | None = None
        self.chunk_tokens = 1
        self.max_ahead = 0  # samples a producer may run ahead of playback
        self._next_id = 1
        self._compute_s = 0.0  # LM and vocoder time spent on replies that ended
        self._open: set[Reply] = set()  # begun and not over yet (a cut one until torn down)

    @property
    def compute_s(self) -> float:
        """LM and vocoder time spent on replies so far (those thrown away included)."""
        return self._compute_s + self.preemption.compute_s

    def new(self) -> Reply:
        """A reply to what the context holds, its producer running; it has no id (and no
        events) until :meth:`begin`."""
        reply = Reply(
            id=0,
            epoch=self._bus.epoch,
            detokenizer=IncrementalDetokenizer(self._model.checkpoint.tokenizer),
        )
        task = self._spawn(
            produce(
                reply,
                self._context,
                self._vocoder,
                self._model.checkpoint.manifest.vocab,
                self.params,
                self.chunk_tokens,
                self.max_ahead,
                self._on_text,
                self._on_audio,
            )
        )
        reply.task = task
        task.add_done_callback(lambda task: self._on_producer_done(reply, task))
        return reply

    def begin(self, reply: Reply) -> None:
        """``reply`` answers the turn that just ended: it may play from now on."""
        reply.id, reply.epoch = self._next_id, self._bus.epoch
        self._next_id += 1
        self.current = reply
        self._open.add(reply)
        self._owner.signal(Signal.TURN_ENDED, "user turn ended")
        self._bus.emit(ReplyStarted(t=self._clock.now(), epoch=reply.epoch, reply_id=reply.id))

    def begin_held(self, held: HeldReply, now: int) -> None:
        """The reply started ahead answers the turn: what it said so far is said now."""
        held.reply.ahead_s = (now - held.started) / SAMPLE_RATE
        self.begin(held.reply)
        for piece in held.text:
            self._on_text(held.reply, piece)
        self._on_audio(held.reply)  # a reply over before the turn, without audio

    def finish(self, reply: Reply) -> None:
        """Every sample of ``reply`` was played."""
        self.current = None
        self._end(reply, "completed", reply.detokenizer.text)
        self._owner.signal(Signal.REPLY_FINISHED, "reply played to the end")

    def cut(self, reason: str) -> None:
        """Interrupt the current reply: only what was heard of it stays. Its events stop
        at once (the epoch fence); the producer is torn down in the background."""
        reply = self.current
        if reply is None:
            return
        tokenizer = self._model.checkpoint.tokenizer
        spt = self._model.samples_per_token
        keep = heard_prefix(reply.classes, math.ceil(reply.position / spt))
        heard = text_of(tokenizer, reply.tokens[:keep], reply.classes[:keep])
        self._bus.emit(
            Interrupted(
                t=self._clock.now(),
                epoch=self._bus.epoch,
                reply_id=reply.id,
                played=reply.position,
                heard_text=heard,
                output_sample=self._owner.output_sample,
            )
        )
        self._bus.fence()
        self.current = None
        self._owner.signal(Signal.INTERRUPT, reason)
        self._spawn(self._tear_down(reply, keep, heard))

    async def _tear_down(self, reply: Reply, keep: int, heard: str) -> None:
        await reply.stop()
        self._vocoder.reset()
        self._context.truncate_reply(min(keep, len(reply.tokens)))
        self._end(reply, "interrupted", heard)
        self._owner.signal(Signal.TORN_DOWN, "reply torn down")
        self._owner.recheck()  # the user's turn may have ended while we tore down

    def close(self) -> None:
        """The session closed: a reply not over yet is over now, as "closed" (no event: the
        session says nothing more), so nobody waits for its playout in vain."""
        for reply in self._open:
            reply.status = "closed"
            reply.over.set()
        self._open.clear()
        self.current = None

    def _on_producer_done(self, reply: Reply, task: asyncio.Task[None]) -> None:
        """A reply whose generation failed ends as failed; the conversation goes on. A held
        one is thrown away: the turn's end will start another."""
        error = None if task.cancelled() else task.exception()
        if error is None or self.preemption.failed(reply, error) or reply is not self.current:
            return
        log.error("reply %d failed: %r", reply.id, error)
        self.current = None
        self._barge.forget()
        self._end(reply, "failed", "")
        self._owner.signal(Signal.REPLY_FAILED, "reply failed")

    def _on_text(self, reply: Reply, piece: str) -> None:
        if self.preemption.keep_text(reply, piece):
            return
        self._bus.emit(
            TextDelta(t=self._clock.now(), epoch=reply.epoch, reply_id=reply.id, text=piece)
        )

    def _on_audio(self, reply: Reply) -> None:
        thinking = self._owner.state is AgentState.THINKING
        if reply is self.current and reply.finished_playing and thinking:
            self.finish(reply)  # a reply without a single sample of audio

    def _end(self, reply: Reply, status: str, text: str) -> None:
        """Account a reply that is over, remember what of it stays, and say so."""
        self._compute_s += reply.compute_s
        self._open.discard(reply)
        reply.status = status
        reply.over.set()
        self._history.append(HistoryItem(role="assistant", text=text, status=status))
        self._bus.emit(
            ReplyEnded(
                t=self._clock.now(),
                epoch=self._bus.epoch,
                reply_id=reply.id,
                status=status,
                played=reply.position,
                text=text,
            )
        )
