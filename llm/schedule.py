"""The interleave schedule: which token class may come next in a reply.

One pure function, :func:`allowed_next`, decides it from a small immutable state; both
engines' logits processors call it, so even an untrained checkpoint emits well-formed
streams: ``n`` text tokens then ``m`` speech tokens, repeating; once ``<|text_end|>`` is
out, speech only; ``<|eot|>`` only after text has ended and at least
``min_speech_tokens`` speech tokens; at ``max_speech_tokens`` the reply is closed (text end
then end of turn are forced).
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from parley.config import ScheduleConfig
from parley.tokenizers.vocab import TokenClass

_TEXT_SLOT = frozenset({TokenClass.TEXT, TokenClass.TEXT_END})
_SPEECH = frozenset({TokenClass.SPEECH})
_SPEECH_OR_END = frozenset({TokenClass.SPEECH, TokenClass.EOT})
_ONLY_TEXT_END = frozenset({TokenClass.TEXT_END})
_ONLY_EOT = frozenset({TokenClass.EOT})
_NOTHING: frozenset[TokenClass] = frozenset()


@dataclass(frozen=True)
class ScheduleState:
    """How far a reply has come; advance it with :func:`advance`."""

    text: int = 0
    speech: int = 0
    text_ended: bool = False
    done: bool = False


def allowed_next(state: ScheduleState, schedule: ScheduleConfig) -> frozenset[TokenClass]:
    """The token classes the next token of a reply may have (empty once it has ended)."""
    if state.done:
        return _NOTHING
    if state.speech >= schedule.max_speech_tokens:
        return _ONLY_EOT if state.text_ended else _ONLY_TEXT_END
    if state.text_ended:
        return _SPEECH_OR_END if state.speech >= schedule.min_speech_tokens else _SPEECH
    cycle = schedule.text_tokens + schedule.speech_tokens
    in_text_slot = (state.text + state.speech) % cycle < schedule.text_tokens
    return _TEXT_SLOT if in_text_slot else _SPEECH


def advance(state: ScheduleState, cls: TokenClass, schedule: ScheduleConfig) -> ScheduleState:
    """The state after a token of class ``cls``; raises ValueError if it was not allowed."""
    if cls not in allowed_next(state, schedule):
        raise ValueError(f"{cls.name} not allowed after {state}")
    if cls is TokenClass.TEXT:
        return replace(state, text=state.text + 1)
    if cls is TokenClass.SPEECH:
        return replace(state, speech=state.speech + 1)
    if cls is TokenClass.TEXT_END:
        return replace(state, text_ended=True)
    return replace(state, done=True)


def max_reply_tokens(schedule: ScheduleConfig) -> int:
    """An upper bound on a reply's length under ``schedule``, end of turn included."""
    text_slots = schedule.max_speech_tokens // schedule.speech_tokens + 2
    return schedule.max_speech_tokens + text_slots * schedule.text_tokens + 2


def heard_prefix(classes: list[TokenClass], speech_heard: int) -> int:
    """How many of a reply's tokens to keep when only ``speech_heard`` speech tokens played.

    The prefix ends at the last speech token heard, so it holds the text of every cycle
    whose speech began to play and nothing written for speech never heard.
    """
    if speech_heard <= 0:
        return 0
    seen = 0
    for i, cls in enumerate(classes):
        if cls is TokenClass.SPEECH:
            seen += 1
            if seen == speech_heard:
                return i + 1
    return len(classes)
