"""A reply started before the user's turn is known to be over.

Turn-taking waits in the user's silence (the endpoint, or the end-of-turn detector making
sure), and a reply's first audio costs compute (the LM's prefill and first tokens, the
vocoder's first chunk). A preemptive reply spends that compute in the wait: once the
silence has lasted ``preemptive_reply_ms`` the session hands the utterance heard so far to
the LM and lets the reply run, its audio held (nothing plays while the session listens)
and its text kept back. When the turn ends, the held reply becomes the reply, its audio
ready. When the user goes on instead, it is thrown away: the producer is stopped and the
LM context rolled back to before the utterance, so nothing of it stays in the history or
the KV cache, and the user's words go on into the same utterance as if it had never been.
"""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from parley.agent.core.endpoint import Endpointer
from parley.agent.core.reply import Reply
from parley.llm.engine import LMContext
from parley.llm.frontend import StreamingFrontEnd, UtteranceTooShortError
from parley.tokenizers.vocoder import StreamingVocoder

log = logging.getLogger(__name__)


@dataclass
class HeldReply:
    """A reply running ahead of the turn's end."""

    reply: Reply
    point: object  # the LM context before the utterance was added (to roll back to)
    silence: int  # input sample where the silence it was started in began
    started: int  # input sample when it was started
    text: list[str] = field(default_factory=list)  # pieces kept back until the turn ends


def _words(text: str) -> str:
    return " ".join(re.sub(r"[^a-z' ]", " ", text.lower()).split())


class Preemption:
    """The session's reply started ahead, if any: when to start one, holding it, and
    throwing it away. The session owns the turn-taking; this part owns the held reply
    and the roll back of the LM context it needs."""

    def __init__(
        self,
        frontend: StreamingFrontEnd,
        context: LMContext,
        vocoder: StreamingVocoder,
        new_reply: Callable[[], Reply],
        spawn: Callable[[Coroutine[Any, Any, None]], asyncio.Task[None]],
        recheck: Callable[[], None],
    ) -> None:
        self.frontend, self.context, self.vocoder = frontend, context, vocoder
        self._new_reply, self._spawn, self._recheck = new_reply, spawn, recheck
        self.after: int | None = None  # samples of silence; None: never
        self.used = 0  # held replies that became the reply
        self.dropped = 0  # held replies thrown away
        self.compute_s = 0.0  # LM and vocoder time the thrown-away ones took
        self.held: HeldReply | None = None
        self._rolling_back: asyncio.Task[None] | None = None
        self._tried: int | None = None  # the silence a reply was last started (or tried) in

    @property
    def rolling_back(self) -> bool:
        """A thrown-away reply is still being rolled back (turn-taking waits for it)."""
        return self._rolling_back is not None

    def holds(self, reply: Reply) -> bool:
        return self.held is not None and reply is self.held.reply

    def due(self, turn: Endpointer, now: int) -> int | None:
        """The silence (its first sample) a reply should start ahead in now, or None."""
        since = turn.silent_since
        if self.after is None or since is None or since == self._tried:
            return None
        if now - since < self.after:
            return None
        self._tried = since  # one try per silence, whatever comes of it
        return since

    def start(self, silence: int, now: int, top_up: np.ndarray | None = None) -> None:
        """Start a reply on the utterance heard up to ``now`` (then ``top_up``), held."""
        try:
            embeddings = self.frontend.peek_utterance(top_up)
        except UtteranceTooShortError:
            return  # nothing to answer yet; the turn's end will say
        point = self.context.save_point()
        self.context.add_user_audio(embeddings)
        self.held = HeldReply(self._new_reply(), point, silence, now)

    def within_domain(self, beyond_reply: str | None) -> bool:
        """The reply started ahead has begun to answer, and not with ``beyond_reply`` (the
        model's refusal): the words are of its domain as the LM reads them. False with no
        reply ahead, no text of it yet, or no refusal to tell it by."""
        if self.held is None or beyond_reply is None:
            return False
        said, refusal = _words("".join(self.held.text)), _words(beyond_reply)
        return bool(said) and not (refusal.startswith(said) or said.startswith(refusal))

    def keep_text(self, reply: Reply, piece: str) -> bool:
        """Keep ``piece`` back if ``reply`` is held (it is said only if the turn ends)."""
        if not self.holds(reply):
            return False
        assert self.held is not None
        self.held.text.append(piece)
        return True

    def take(self) -> HeldReply | None:
        """The held reply, now the turn's reply (None when none is held)."""
        held, self.held = self.held, None
        if held is not None:
            self.used += 1
        return held

    def check(self, turn: Endpointer) -> None:
        """Throw the held reply away once the user goes on."""
        if self.held is not None and turn.silent_since is None:
            self.drop()

    def failed(self, reply: Reply, error: BaseException) -> bool:
        """A held reply whose generation failed is thrown away (the turn's end will start
        another); False when ``reply`` is not held."""
        if not self.holds(reply):
            return False
        log.warning("reply started ahead failed: %r", error)
        self.drop()
        return True

    def drop(self, recheck: bool = True) -> None:
        """Throw the held reply away; the roll back runs in the background, after which
        turn-taking is looked at again (``recheck``)."""
        held, self.held = self.held, None
        if held is None:
            return
        self.dropped += 1
        self._rolling_back = self._spawn(self._roll_back(held, recheck))

    async def _roll_back(self, held: HeldReply, recheck: bool) -> None:
        try:
            await held.reply.stop()
            await self.context.abort()  # no forward of it may still be writing the cache
            self.vocoder.reset()
            self.context.roll_back(held.point)
            self.compute_s += held.reply.compute_s
        finally:
            self._rolling_back = None
        if recheck:
            self._recheck()  # turn-taking waited while we rolled back

    async def rolled_back(self) -> None:
        """Return once a thrown-away reply is rolled back."""
        if self._rolling_back is not None:
            await self._rolling_back

    async def discard(self) -> None:
        """Throw the held reply away, if any, and return once it is rolled back; the
        turn-taking looks again from the next frame on."""
        self.drop(recheck=False)
        await self.rolled_back()
