"""Text side of judging: recognizer output in our words, key matching, word accuracy.

Our answers are lowercase words with numbers spelled out ("fifty six", "one hundred
twelve"); recognizers write "56.", "112", "1,000" or "9th". :func:`normalize` maps both
onto the same words. :func:`answer_heard` then compares numbers as numbers, so
"sixteen" never matches "sixty" and "fifty" never matches "fifty six".
"""

from __future__ import annotations

import re
from collections.abc import Sequence

__all__ = ["answer_heard", "key_heard", "normalize", "spell_number", "word_accuracy"]

_UNITS = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"]
_TEENS = [
    "ten",
    "eleven",
    "twelve",
    "thirteen",
    "fourteen",
    "fifteen",
    "sixteen",
    "seventeen",
    "eighteen",
    "nineteen",
]
_TENS = ["_", "_", "twenty", "thirty", "forty", "fifty", "sixty", "seventy", "eighty", "ninety"]
_SCALES = ((1_000_000_000, "billion"), (1_000_000, "million"), (1000, "thousand"))

_ORDINAL_WORDS = {
    "one": "first", "two": "second", "three": "third", "five": "fifth",
    "eight": "eighth", "nine": "ninth", "twelve": "twelfth",
}  # fmt: skip

_WORD_VALUE = {w: i for i, w in enumerate(_UNITS)} | {w: 10 + i for i, w in enumerate(_TEENS)}
_WORD_VALUE |= {w: 10 * i for i, w in enumerate(_TENS) if w != "_"}


def spell_number(n: int) -> str:
    """``n`` in words, without "and" or hyphens: 56 -> "fifty six", 112 -> "one hundred twelve"."""
    if n < 0:
        return "minus " + spell_number(-n)
    if n < 10:
        return _UNITS[n]
    if n < 20:
        return _TEENS[n - 10]
    if n < 100:
        tens, unit = divmod(n, 10)
        return _TENS[tens] + ("" if unit == 0 else " " + _UNITS[unit])
    if n < 1000:
        hundreds, rest = divmod(n, 100)
        return _UNITS[hundreds] + " hundred" + ("" if rest == 0 else " " + spell_number(rest))
    for scale, name in _SCALES:
        if n >= scale:
            high, rest = divmod(n, scale)
            return spell_number(high) + " " + name + ("" if rest == 0 else " " + spell_number(rest))
    raise AssertionError("unreachable")


def _spell_ordinal(n: int) -> str:
    words = spell_number(n).split()
    last = words[-1]
    if last in _ORDINAL_WORDS:
        last = _ORDINAL_WORDS[last]
    elif last.endswith("y"):
        last = last[:-1] + "ieth"
    else:
        last += "th"
    return " ".join([*words[:-1], last])


_ORDINAL_VALUE = {_spell_ordinal(n).split()[-1]: n for n in (*range(1, 20), *range(20, 100, 10))}
_ORDINAL_VALUE |= {"hundredth": 100, "thousandth": 1000}

# Contractions a recognizer writes where our texts have the words apart.
_CONTRACTIONS = {
    "i'm": "i am", "it's": "it is", "that's": "that is", "what's": "what is",
    "you're": "you are", "we're": "we are", "they're": "they are", "i've": "i have",
    "i'll": "i will", "can't": "cannot", "don't": "do not", "doesn't": "does not",
    "isn't": "is not", "let's": "let us", "there's": "there is", "here's": "here is",
    "i'd": "i would", "won't": "will not", "didn't": "did not",
}  # fmt: skip

_NUMERAL = re.compile(
    r"(?P<sign>−)?(?P<int>\d{1,3}(?:,\d{3})+|\d+)(?:\.(?P<frac>\d+))?"
    r"(?P<ord>st|nd|rd|th)?(?P<pct>%)?"
)


def _numeral_words(m: re.Match[str]) -> str:
    value = int(m["int"].replace(",", ""))
    if m["ord"] and not m["frac"]:
        words = _spell_ordinal(value) if value else "zeroth"
    else:
        words = spell_number(value)
    if m["frac"]:
        words += " point " + " ".join(_UNITS[int(d)] for d in m["frac"])
    if m["sign"]:
        words = "minus " + words
    if m["pct"]:
        words += " percent"
    return f" {words} "


def normalize(text: str) -> str:
    """Lowercase words separated by single spaces; numerals spelled out, punctuation gone.

    "Twelve times twelve is 144." -> "twelve times twelve is one hundred forty four";
    "It's the 9th" -> "it is the ninth"; "fifty-six" -> "fifty six"; "200-8" -> "two
    hundred eight"; "-3" -> "minus three".
    """
    text = text.lower().replace("’", "'")
    # A minus sign only before a number standing on its own ("-3"). Between digits a
    # hyphen joins the parts of one number: Whisper writes "two hundred eight" as "200-8".
    text = re.sub(r"(?<![\w])-(?=\d)", " −", text)
    text = _NUMERAL.sub(_numeral_words, text)
    words = []
    for raw in re.split(r"[\s\-–—/]+", text):
        word = re.sub(r"[^a-z0-9'−]", "", raw).strip("'")
        word = _CONTRACTIONS.get(word, word).replace("'", "").replace("−", "minus")
        if word:
            words.append(word)
    return " ".join(words)


def _tokens(words: Sequence[str]) -> list[str]:
    """Words with each spelled-out number folded into one token ``#56`` (``#21st`` for ordinals).

    A run of number words splits where it could not continue one number: "five six" is
    two numbers, "fifty six" one, "one hundred fifty six" one (156).
    """
    out: list[str] = []
    total = group = 0  # value above the current group of thousands; the group itself
    last: str | None = None  # class of the previous number word, None outside a number

    def close(ordinal: bool = False) -> None:
        nonlocal total, group, last
        if last is not None:
            out.append(f"#{total + group}" + ("st" if ordinal else ""))
        total = group = 0
        last = None

    for word in words:
        if word in _WORD_VALUE or word in _ORDINAL_VALUE:
            ordinal = word in _ORDINAL_VALUE
            value = _ORDINAL_VALUE[word] if ordinal else _WORD_VALUE[word]
            kind = "unit" if value < 10 else "teen" if value < 20 else "tens"
            if value >= 100:
                kind = "scale"
            fits = last in (None, "hundred", "thousand") or (
                last == "tens" and kind == "unit" and value > 0
            )
            if kind == "scale" and last in ("unit", "teen", "tens"):
                fits = True  # "one hundredth"
            if not fits or (value == 0 and last is not None):
                close()
            if kind == "scale":  # "hundredth" / "thousandth"
                group = max(group % value, 1) * value + (group // value) * value
            else:
                group += value
            last = kind
            if ordinal:
                close(ordinal=True)
        elif word in ("hundred", "thousand", "million", "billion") and last in (
            "unit",
            "teen",
            "tens",
        ):
            if word == "hundred":
                if group >= 100 or last == "hundred":
                    close()
                    out.append(word)
                    continue
                group *= 100
                last = "hundred"
            else:
                scale = {"thousand": 1000, "million": 1_000_000, "billion": 1_000_000_000}[word]
                total += group * scale
                group = 0
                last = "thousand"
        else:
            close()
            out.append(word)
    close()
    return out


def _count(haystack: Sequence[str], needle: Sequence[str]) -> int:
    n = len(needle)
    if n == 0:
        return 0
    return sum(list(haystack[i : i + n]) == list(needle) for i in range(len(haystack) - n + 1))


def key_heard(key: str, transcript: str, times: int = 1) -> bool:
    """Whether ``key``'s words occur (at least ``times`` times) as whole words in ``transcript``.

    Both are normalized here. Numbers compare as numbers: key "fifty six" is not heard in
    "fifty" nor in "one hundred fifty six", and "sixteen" is not "sixty".
    """
    needle = _tokens(normalize(key).split())
    return bool(needle) and _count(_tokens(normalize(transcript).split()), needle) >= times


def answer_heard(turn: object, transcript: str) -> bool:
    """Whether ``transcript`` says the turn's ``key`` (a domain ``Turn`` or a manifest dict).

    Where the expected answer says the key more than once ("five plus zero is five"), the
    transcript must say it as often, so an operand echoed from the question does not pass
    for the result ("five plus zero is six").
    """
    get = turn.get if isinstance(turn, dict) else lambda name: getattr(turn, name, None)
    key, answer = get("key"), get("answer")
    if not isinstance(key, str):
        raise TypeError(f"a turn needs its key words to be judged, got {key!r}")
    needle = _tokens(normalize(key).split())
    times = _count(_tokens(normalize(answer).split()), needle) if answer else 0
    return key_heard(key, transcript, max(1, times))


def _edit_distance(a: Sequence[str], b: Sequence[str]) -> int:
    prev = list(range(len(b) + 1))
    for i, x in enumerate(a, 1):
        cur = [i]
        for j, y in enumerate(b, 1):
            cur.append(min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (x != y)))
        prev = cur
    return prev[-1]


def word_accuracy(ref: str, hyp: str) -> float:
    """1 - word error rate of ``hyp`` against ``ref`` (both normalized), floored at 0.

    An empty reference scores 1 against an empty hypothesis and 0 against anything else.
    """
    r, h = normalize(ref).split(), normalize(hyp).split()
    if not r:
        return 1.0 if not h else 0.0
    return max(0.0, 1.0 - _edit_distance(r, h) / len(r))
