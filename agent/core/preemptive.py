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

from dataclasses import dataclass, field

from parley.agent.core.endpoint import Endpointer
from parley.agent.core.reply import Reply


@dataclass
class HeldReply:
    """A reply running ahead of the turn's end."""

    reply: Reply
    point: object  # the LM context before the utterance was added (to roll back to)
    silence: int  # input sample where the silence it was started in began
    started: int  # input sample when it was started
    text: list[str] = field(default_factory=list)  # pieces kept back until the turn ends


class Preemption:
    """When to start a reply ahead, and what became of those started."""

    def __init__(self) -> None:
        self.after: int | None = None  # samples of silence; None: never
        self.used = 0  # held replies that became the reply
        self.dropped = 0  # held replies thrown away
        self._tried: int | None = None  # the silence a reply was last started (or tried) in

    def due(self, turn: Endpointer, now: int) -> int | None:
        """The silence (its first sample) a reply should start ahead in now, or None."""
        since = turn.silent_since
        if self.after is None or since is None or since == self._tried:
            return None
        if now - since < self.after:
            return None
        self._tried = since  # one try per silence, whatever comes of it
        return since
