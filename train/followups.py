"""Follow-ups recombined: the corpus's follow-up questions asked after other answers.

A follow-up ("and times six", "what about the one before that") works on the result the
answer before it ended on, and its audio never names that result. So any recorded
follow-up can follow any answer it applies to, and the reply is computed, not recorded:
the domain allows about 4000 (result, move) pairs, the 1472 training follow-ups of the
session-4 corpus met 630 of them, and recombining shows the LM all of them without
synthesizing a single user utterance. Only the new replies need the agent's voice
(:func:`parley.train.corpus.record_answer`).
"""

from __future__ import annotations

import random
import re
from collections.abc import Sequence
from functools import cache

from parley.train.domain import ARITHMETIC, DAYS, MAX_RESULT, MONTHS, followup_answer, number_words
from parley.train.lm_data import Dialogue, Turn

_ARITH = re.compile(rf"(.+) ({'|'.join(ARITHMETIC)}) (.+) is (.+)")
_SEQ = re.compile(r"the (number|day|month) (after|before) (.+) is (.+)")


@cache
def _numbers() -> dict[str, int]:
    return {number_words(n): n for n in range(MAX_RESULT + 1)}


def result_of(answer: str) -> int | str | None:
    """The number, day or month ``answer`` ends on (what a follow-up works on), or None."""
    match = _ARITH.fullmatch(answer) or _SEQ.fullmatch(answer)
    if match is None:
        return None
    last = match.group(4)
    if last in DAYS or last in MONTHS:
        return last
    return _numbers().get(last)


def move_of(answer: str) -> tuple | None:
    """The move a follow-up's ``answer`` made: ``(op, k)`` or ``(direction,)``."""
    if m := _SEQ.fullmatch(answer):
        return (m.group(2),)
    if m := _ARITH.fullmatch(answer):
        k = _numbers().get(m.group(3))
        return None if k is None else (m.group(2), k)
    return None


def recombine_followups(
    dialogues: Sequence[Dialogue], share: float, seed: int, text_only: bool = False
) -> list[Dialogue]:
    """``share`` as many two-turn dialogues as ``dialogues``: the first turn of one, then the
    follow-up of another that applies to its result, with the reply that follow-up gets
    (``text_only``: its text alone, a drill that needs no recording of it).

    Seeded (drills draw apart from the recorded ones). The follow-ups come from dialogues
    whose second turn the corpus marks as one. Pairs are dealt evenly over every (result,
    move) the dialogues allow, in a fresh shuffle each round, and only then is a dialogue
    drawn for each side: drawn by dialogue, the small results the corpus asks most took
    the draws (5000 drills met 1188 of 4025 pairs, none of "seventy nine times ten").
    A move that does not apply to a result (a sum past the domain's range, the number
    before zero, arithmetic on a day) is never dealt; a corpus where nothing applies is
    refused.
    """
    rng = random.Random(f"followups:{seed}" + (":text" if text_only else ""))
    by_value: dict[object, list[Dialogue]] = {}
    for d in dialogues:
        if (value := result_of(d.turns[0].answer)) is not None:
            by_value.setdefault(value, []).append(d)
    by_move: dict[tuple, list[Dialogue]] = {}
    for d in dialogues:
        if (
            len(d.turns) == 2
            and d.meta.get("turns", [{}, {}])[1].get("intent") == "followup"
            and (move := move_of(d.turns[1].answer)) is not None
        ):
            by_move.setdefault(move, []).append(d)
    wanted = round(share * len(dialogues))
    if not by_value or not by_move or wanted == 0:
        return []
    pairs = sorted(
        (
            (value, move, answer)
            for value in by_value
            for move in by_move
            if (answer := followup_answer(value, move)) is not None
        ),
        key=repr,
    )
    if not pairs:
        raise ValueError(
            f"recombining follow-ups: none of {len(by_move)} moves applies to any of "
            f"{len(by_value)} results; the corpus's follow-ups do not fit its answers"
        )
    out: list[Dialogue] = []
    deck: list[tuple] = []
    while len(out) < wanted:
        if not deck:
            deck = pairs.copy()
            rng.shuffle(deck)
        value, move, answer = deck.pop()
        first, second = rng.choice(by_value[value]), rng.choice(by_move[move])
        turns = [first.turns[0], Turn(second.turns[1].audio, answer, text_only=text_only)]
        out.append(Dialogue(f"{first.id}>{second.id}", first.split, turns, {}))
    return out
