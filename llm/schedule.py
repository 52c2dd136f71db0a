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


def interleave(
    text: list[int], speech: list[int], schedule: ScheduleConfig
) -> list[tuple[TokenClass, int]]:
    """A whole reply laid out as the schedule orders it: the training-side twin of
    :func:`allowed_next`.

    ``text`` and ``speech`` are the reply's token ids (speech as LM ids, not codes). Text
    fills the text slots until it runs out, then ``TEXT_END`` closes it; speech fills the
    rest; ``EOT`` ends the reply. Returns ``(class, id)`` pairs with ``-1`` as the id of
    ``TEXT_END`` and ``EOT`` (the caller's vocabulary names them). Raises ValueError when
    the schedule cannot carry the reply (its speech runs out while text is still due, or it
    exceeds ``max_speech_tokens``): such a reply would be cut at inference too.
    """
    if len(speech) > schedule.max_speech_tokens:
        raise ValueError(
            f"{len(speech)} speech tokens exceed max_speech_tokens={schedule.max_speech_tokens}"
        )
    out: list[tuple[TokenClass, int]] = []
    state = ScheduleState()
    t = s = 0
    while not state.done:
        allowed = allowed_next(state, schedule)
        if TokenClass.TEXT in allowed:
            cls, tok = (TokenClass.TEXT, text[t]) if t < len(text) else (TokenClass.TEXT_END, -1)
            t += cls is TokenClass.TEXT
        elif s < len(speech) and TokenClass.SPEECH in allowed:
            cls, tok = TokenClass.SPEECH, speech[s]
            s += 1
        elif TokenClass.EOT in allowed and s == len(speech):
            cls, tok = TokenClass.EOT, -1
        elif allowed == {TokenClass.TEXT_END}:
            raise ValueError("the reply's speech ends the schedule before its text is out")
        else:
            raise ValueError(
                f"the schedule wants {sorted(c.name for c in allowed)} after {s} of "
                f"{len(speech)} speech and {t} of {len(text)} text tokens"
            )
        out.append((cls, tok))
        state = advance(state, cls, schedule)
    return out
