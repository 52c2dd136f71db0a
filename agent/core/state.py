"""The session's state machine as one pure function.

The session feeds it signals; whatever the signal, the function names the next state, so
every change can be published as an event and a scripted conversation checked as a whole
sequence. A signal that means nothing in a state leaves the state as it is.
"""

from __future__ import annotations

from enum import StrEnum

from parley.agent.core.events import AgentState

L, T, S, P, X = (
    AgentState.LISTENING,
    AgentState.THINKING,
    AgentState.SPEAKING,
    AgentState.PAUSED,
    AgentState.INTERRUPTED,
)


class Signal(StrEnum):
    """What happened."""

    TURN_ENDED = "turn_ended"  # the user's turn is over: a reply starts
    AUDIO_STARTED = "audio_started"  # the reply's first audio is ready to play
    REPLY_FINISHED = "reply_finished"  # every sample of the reply has been played
    USER_ONSET = "user_onset"  # user speech over our reply
    USER_YIELDED = "user_yielded"  # ... stopped short of an interruption: backchannel, noise
    INTERRUPT = "interrupt"  # an explicit interrupt from the application
    REPLY_FAILED = "reply_failed"  # generation broke off: the reply ends, nothing was cut
    TORN_DOWN = "torn_down"  # the cut reply is gone; listening again


_TABLE: dict[tuple[AgentState, Signal], AgentState] = {
    (L, Signal.TURN_ENDED): T,
    (T, Signal.AUDIO_STARTED): S,
    (T, Signal.REPLY_FINISHED): L,
    (S, Signal.REPLY_FINISHED): L,
    (T, Signal.USER_ONSET): P,
    (S, Signal.USER_ONSET): P,
    (T, Signal.INTERRUPT): X,
    (S, Signal.INTERRUPT): X,
    (P, Signal.INTERRUPT): X,
    (X, Signal.TORN_DOWN): L,
    (T, Signal.REPLY_FAILED): L,
    (S, Signal.REPLY_FAILED): L,
    (P, Signal.REPLY_FAILED): L,
}


def transition(state: AgentState, signal: Signal, *, audio_started: bool = False) -> AgentState:
    """The state after ``signal`` in ``state``.

    ``audio_started`` says whether the current reply has played any audio yet: a pause the
    user yields from goes back to speaking if so, else back to thinking.
    """
    if state is P and signal is Signal.USER_YIELDED:
        return S if audio_started else T
    return _TABLE.get((state, signal), state)
