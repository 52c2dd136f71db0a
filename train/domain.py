"""The spoken-dialogue domain the default model learns: text only, pure Python, seeded.

Small sums (plus, minus, times on 0..12), counting (the number, weekday or month before or
after one), five kinds of small talk, follow-ups that work on the previous answer ("and
times two"), and one polite refusal for everything else. Every answer needs the question
understood: the reply repeats the question's operands and ends with the result, and the
result is spelled in words, never digits.

Each intent has training and held-out phrasings (:mod:`parley.train.phrasings`); the
held-out ones (and a held-out part of the out-of-domain sentences) are produced only with
``heldout_phrasing=True``, so an evaluation can ask questions worded as no training
question was.
"""

from __future__ import annotations

import random
from collections.abc import Mapping
from dataclasses import dataclass
from functools import cache
from pathlib import Path

from parley.train.phrasings import LEAD_INS, PHRASINGS, TAILS

REFUSAL = "sorry i can only help with sums numbers days and months"

DAYS = ("monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday")
MONTHS = (
    "january", "february", "march", "april", "may", "june", "july",
    "august", "september", "october", "november", "december",
)  # fmt: skip

ARITHMETIC = ("plus", "minus", "times")
SEQUENCES = (
    "number_after", "number_before", "day_after", "day_before", "month_after", "month_before",
)  # fmt: skip
SMALL_TALK = ("hello", "thanks", "who", "hear", "goodbye")
INTENTS = (*ARITHMETIC, *SEQUENCES, *SMALL_TALK, "followup", "refuse")

# Share of dialogues per category; each category's share is split evenly over its intents.
DEFAULT_MIX: Mapping[str, float] = {
    "arithmetic": 0.50,
    "sequence": 0.20,
    "small_talk": 0.08,
    "followup": 0.15,
    "refuse": 0.07,
}
_CATEGORY = {
    "arithmetic": ARITHMETIC,
    "sequence": SEQUENCES,
    "small_talk": SMALL_TALK,
    "followup": ("followup",),
    "refuse": ("refuse",),
}

MAX_OPERAND = 12
MAX_RESULT = 9999
FILLERS = ("um", "uh", "so", "let me think", "okay", "hmm", "er")
FILLER_P = 0.25  # a filler before the question
HESITATION_P = 0.08  # "what is seven uh times eight"
LEAD_IN_P = 0.2  # "can you tell me what is seven times eight" (training questions only)
TAIL_P = 0.15  # "what is seven times eight please"

_SMALL_TALK_REPLY = {
    "hello": ("hello there how can i help", "how can i help"),
    "thanks": ("you are welcome", "you are welcome"),
    # "a little voice helper" was heard as "the little boys helper" even in joe's own voice.
    "who": ("i am parley your voice assistant", "voice assistant"),
    "hear": ("yes i can hear you", "i can hear you"),
    "goodbye": ("goodbye talk to you soon", "talk to you soon"),
}
_REFUSAL_KEY = "i can only help"


@dataclass(frozen=True)
class Turn:
    """One user question and the agent's reply."""

    intent: str
    """One of ``INTENTS``; a follow-up turn is ``"followup"`` whatever it asks."""
    question: str
    """What the user says: lowercase words, fillers allowed ("um, what's three plus four")."""
    answer: str
    """The agent's reply: lowercase words, no digits or punctuation, ending with the answer."""
    key: str
    """Words that must be heard for the reply to count: the result, or a distinctive phrase
    of a fixed reply."""
    phrasing: int
    """Index of the question template within its intent (held-out ones come after the
    training ones; for refusals, the index of the sentence in ``ood_sentences.txt``)."""


@dataclass(frozen=True)
class Dialogue:
    """A short conversation: one turn, or two when the second is a follow-up."""

    turns: tuple[Turn, ...]


_ONES = (
    "zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten",
    "eleven", "twelve", "thirteen", "fourteen", "fifteen", "sixteen", "seventeen",
    "eighteen", "nineteen",
)  # fmt: skip
_TENS = ("", "", "twenty", "thirty", "forty", "fifty", "sixty", "seventy", "eighty", "ninety")


def number_words(n: int) -> str:
    """Spell 0..9999 in words: 56 -> "fifty six", 112 -> "one hundred twelve" (no "and")."""
    if not 0 <= n <= MAX_RESULT:
        raise ValueError(f"number_words covers 0..{MAX_RESULT}, got {n}")
    if n < 20:
        return _ONES[n]
    words: list[str] = []
    if n >= 1000:
        words += [_ONES[n // 1000], "thousand"]
        n %= 1000
    if n >= 100:
        words += [_ONES[n // 100], "hundred"]
        n %= 100
    if n >= 20:
        words.append(_TENS[n // 10])
        n %= 10
        if n:
            words.append(_ONES[n])
    elif n:
        words.append(_ONES[n])
    return " ".join(words)


def _apply(op: str, a: int, b: int) -> int:
    return a + b if op == "plus" else a - b if op == "minus" else a * b


def _arith_reply(op: str, a: int, b: int) -> tuple[str, str]:
    result = number_words(_apply(op, a, b))
    return f"{number_words(a)} {op} {number_words(b)} is {result}", result


def _seq_reply(kind: str, direction: str, item: str, result: str) -> tuple[str, str]:
    return f"the {kind} {direction} {item} is {result}", result


@cache
def _ood_sentences() -> tuple[tuple[str, ...], frozenset[int]]:
    """The out-of-domain sentences and the indices held out of training (every fifth)."""
    sentences = sentence_list(Path(__file__).with_name("ood_sentences.txt"))
    return sentences, frozenset(range(4, len(sentences), 5))


def sentence_list(path: Path) -> tuple[str, ...]:
    """The sentences of a list file: one per line, ``#`` lines and blank lines skipped."""
    lines = (line.strip() for line in path.read_text(encoding="utf-8").splitlines())
    return tuple(s for s in lines if s and not s.startswith("#"))


def ood_sentences(heldout: bool) -> list[str]:
    """The out-of-domain questions used for refusals: the training or the held-out part."""
    sentences, held = _ood_sentences()
    return [s for i, s in enumerate(sentences) if (i in held) == heldout]


def refusal_turn(sentence: str) -> Turn:
    """The turn an out-of-domain ``sentence`` of ``ood_sentences.txt`` makes, asked plainly."""
    sentences, _ = _ood_sentences()
    if sentence not in sentences:
        raise ValueError(f"not an out-of-domain sentence of the domain: {sentence!r}")
    return Turn("refuse", sentence, REFUSAL, _REFUSAL_KEY, sentences.index(sentence))


def _n_train(name: str) -> int:
    if name == "followup":
        return len(PHRASINGS["followup_arith"][0]) + len(PHRASINGS["followup_seq"][0])
    return len(PHRASINGS[name][0])


def is_heldout_phrasing(turn: Turn) -> bool:
    """Whether ``turn`` was worded with a held-out phrasing or out-of-domain sentence."""
    if turn.intent == "refuse":
        return turn.phrasing in _ood_sentences()[1]
    return turn.phrasing >= _n_train(turn.intent)


def _pick_template(rng: random.Random, name: str, heldout: bool) -> tuple[int, str]:
    """A template and its phrasing index: training ones first, then the held-out ones.

    The two follow-up families share one numbering under the intent "followup":
    arithmetic training, sequence training, arithmetic held-out, sequence held-out.
    """
    train, held = PHRASINGS[name]
    i = rng.randrange(len(held) if heldout else len(train))
    offset = len(train) if heldout else 0
    if name == "followup_seq":
        arith_train, arith_held = PHRASINGS["followup_arith"]
        offset += len(arith_held) + len(arith_train) if heldout else len(arith_train)
    elif name == "followup_arith" and heldout:
        offset = _n_train("followup")
    return offset + i, (held if heldout else train)[i]


def wrap(rng: random.Random, text: str, heldout: bool) -> str:
    """Put a training question in a lead-in or a tail now and then; held-out questions
    stay as their phrasing has them, so the held-out set is the same whatever the wraps."""
    if heldout:
        return text
    if rng.random() < LEAD_IN_P:
        text = f"{rng.choice(LEAD_INS)} {text}"
    if rng.random() < TAIL_P:
        text = f"{text} {rng.choice(TAILS)}"
    return text


def _say(rng: random.Random, text: str, fillers: bool = True) -> str:
    """Add the hesitations people use: a filler in front, or an "uh" inside."""
    if not fillers:
        return text
    words = text.split()
    if len(words) >= 4 and rng.random() < HESITATION_P:
        at = rng.randrange(1, len(words) - 1)
        words.insert(at, rng.choice(("uh", "um")))
        text = " ".join(words)
    if rng.random() < FILLER_P:
        text = f"{rng.choice(FILLERS)}, {text}"
    return text


def _base_turn(rng: random.Random, intent: str, heldout: bool) -> tuple[Turn, object]:
    """One turn for ``intent`` and the value a follow-up would work on (int, day or month)."""
    if intent in ARITHMETIC:
        a, b = rng.randint(0, MAX_OPERAND), rng.randint(0, MAX_OPERAND)
        if intent == "minus" and b > a:
            a, b = b, a
        idx, tpl = _pick_template(rng, intent, heldout)
        q = wrap(rng, tpl.format(a=number_words(a), b=number_words(b)), heldout)
        answer, key = _arith_reply(intent, a, b)
        return Turn(intent, _say(rng, q), answer, key, idx), _apply(intent, a, b)
    if intent in SEQUENCES:
        kind, direction = intent.split("_")
        step = 1 if direction == "after" else -1
        idx, tpl = _pick_template(rng, intent, heldout)
        if kind == "number":
            n = rng.randint(1, 99)
            item, result = number_words(n), number_words(n + step)
            value: object = n + step
        else:
            names = DAYS if kind == "day" else MONTHS
            i = rng.randrange(len(names))
            item = names[i]
            value = result = names[(i + step) % len(names)]
        answer, key = _seq_reply(kind, direction, item, result)
        q = wrap(rng, tpl.format(x=item), heldout)
        return Turn(intent, _say(rng, q), answer, key, idx), value
    if intent in SMALL_TALK:
        idx, q = _pick_template(rng, intent, heldout)
        answer, key = _SMALL_TALK_REPLY[intent]
        return Turn(intent, _say(rng, q, fillers=intent != "hello"), answer, key, idx), None
    if intent == "refuse":
        sentences, held = _ood_sentences()
        idx = rng.choice(sorted(i for i in range(len(sentences)) if (i in held) == heldout))
        return Turn("refuse", _say(rng, sentences[idx]), REFUSAL, _REFUSAL_KEY, idx), None
    raise ValueError(f"unknown intent {intent!r}; known: {', '.join(INTENTS)}")


def _followup(rng: random.Random, value: object, heldout: bool) -> Turn:
    """A turn that works on ``value``, the previous answer."""
    if isinstance(value, int) and rng.random() < 0.75:
        choices = [
            (op, k)
            for op in ARITHMETIC
            for k in range(1, MAX_OPERAND + 1)
            if 0 <= _apply(op, value, k) <= MAX_RESULT
        ]
        op, k = rng.choice(choices)
        idx, tpl = _pick_template(rng, "followup_arith", heldout)
        answer, key = _arith_reply(op, value, k)
        return Turn("followup", _say(rng, tpl.format(op=op, k=number_words(k))), answer, key, idx)
    directions = ["after", "before"] if value != 0 else ["after"]
    direction = rng.choice(directions)
    idx, tpl = _pick_template(rng, "followup_seq", heldout)
    answer, key = _next_in_sequence(value, direction)
    return Turn("followup", _say(rng, tpl.format(dir=direction)), answer, key, idx)


def followup_answer(value: object, move: tuple) -> str | None:
    """The reply to a follow-up ``move`` on ``value`` (the result an earlier answer ended
    on: a number, a day or a month), or None where the corpus would never ask it.

    A move is ``(op, k)`` for arithmetic ("and times two": ``("times", 2)``) or
    ``(direction,)`` for the next item ("what about the one after that": ``("after",)``).
    """
    if len(move) == 2:
        op, k = move
        if not isinstance(value, int) or not 0 <= _apply(op, value, k) <= MAX_RESULT:
            return None
        return _arith_reply(op, value, k)[0]
    (direction,) = move
    if value is None:
        return None
    if (
        isinstance(value, int)
        and not 0 <= value + (1 if direction == "after" else -1) <= MAX_RESULT
    ):
        return None
    return _next_in_sequence(value, direction)[0]


def _next_in_sequence(value: object, direction: str) -> tuple[str, str]:
    step = 1 if direction == "after" else -1
    if isinstance(value, int):
        return _seq_reply("number", direction, number_words(value), number_words(value + step))
    names = DAYS if value in DAYS else MONTHS
    kind = "day" if value in DAYS else "month"
    i = names.index(str(value))
    return _seq_reply(kind, direction, str(value), names[(i + step) % len(names)])


def _intent_weights(mix: Mapping[str, float], intents: set[str] | None) -> dict[str, float]:
    unknown = set(mix) - set(_CATEGORY)
    if unknown:
        raise ValueError(f"unknown mix categories {sorted(unknown)}; known: {sorted(_CATEGORY)}")
    weights = {}
    for cat, share in mix.items():
        for intent in _CATEGORY[cat]:
            if intents is None or intent in intents:
                weights[intent] = share / len(_CATEGORY[cat])
    if intents is not None and set(intents) - set(INTENTS):
        raise ValueError(f"unknown intents {sorted(set(intents) - set(INTENTS))}")
    if not weights or sum(weights.values()) <= 0:
        raise ValueError("no intent left to draw from: check intents and mix")
    return weights


_FOLLOWABLE = (*ARITHMETIC, *SEQUENCES)


def make_dialogue(
    rng: random.Random,
    *,
    heldout_phrasing: bool = False,
    intents: set[str] | None = None,
    mix: Mapping[str, float] = DEFAULT_MIX,
) -> Dialogue:
    """Draw one dialogue.

    ``heldout_phrasing`` words every question with held-out templates (and held-out
    out-of-domain sentences) only; otherwise only training ones are used. ``intents``
    restricts the first turn's intent (``"followup"`` allows two-turn follow-up dialogues);
    ``mix`` gives each category's share (keys of ``DEFAULT_MIX``).
    """
    weights = _intent_weights(mix, intents)
    names = list(weights)
    intent = rng.choices(names, weights=[weights[n] for n in names])[0]
    if intent != "followup":
        return Dialogue((_base_turn(rng, intent, heldout_phrasing)[0],))
    base = [i for i in _FOLLOWABLE if intents is None or i in intents] or list(_FOLLOWABLE)
    first, value = _base_turn(rng, rng.choice(base), heldout_phrasing)
    return Dialogue((first, _followup(rng, value, heldout_phrasing)))


def question_templates(intent: str, heldout: bool = False) -> list[str]:
    """The question templates of an intent ("followup_arith" and "followup_seq" for follow-ups)."""
    if intent == "refuse":
        return ood_sentences(heldout)
    return list(PHRASINGS[intent][1 if heldout else 0])


@cache
def _all_answers() -> tuple[str, ...]:
    replies = {REFUSAL, *(r for r, _ in _SMALL_TALK_REPLY.values())}
    first_values: set[object] = set()
    for op in ARITHMETIC:
        for a in range(MAX_OPERAND + 1):
            for b in range(MAX_OPERAND + 1):
                if _apply(op, a, b) >= 0:
                    replies.add(_arith_reply(op, a, b)[0])
                    first_values.add(_apply(op, a, b))
    for n in range(1, 100):
        for direction in ("after", "before"):
            replies.add(_next_in_sequence(n, direction)[0])
            first_values.add(n + (1 if direction == "after" else -1))
    for names in (DAYS, MONTHS):
        for item in names:
            for direction in ("after", "before"):
                answer = _next_in_sequence(item, direction)
                replies.add(answer[0])
                first_values.add(answer[1])
    for value in first_values:
        for direction in ("after", "before"):
            if value != 0 or direction == "after":
                replies.add(_next_in_sequence(value, direction)[0])
        if isinstance(value, int):
            for op in ARITHMETIC:
                for k in range(1, MAX_OPERAND + 1):
                    if 0 <= _apply(op, value, k) <= MAX_RESULT:
                        replies.add(_arith_reply(op, value, k)[0])
    return tuple(sorted(replies))


def all_answers() -> list[str]:
    """Every distinct reply text ``make_dialogue`` can produce, sorted."""
    return list(_all_answers())


ANSWER_FAMILIES = ("arithmetic", "number", "day", "month", "fixed")


def answer_family(answer: str) -> str | None:
    """Which kind of reply ``answer`` is (one of ``ANSWER_FAMILIES``), or None when
    ``make_dialogue`` never says it. The families differ a hundredfold in size: there are
    six fixed replies and thousands of sums."""
    if answer not in _answer_set():
        return None
    if answer == REFUSAL or answer in {r for r, _ in _SMALL_TALK_REPLY.values()}:
        return "fixed"
    for kind in ("number", "day", "month"):
        if answer.startswith(f"the {kind} "):
            return kind
    return "arithmetic"


@cache
def _answer_set() -> frozenset[str]:
    return frozenset(_all_answers())
