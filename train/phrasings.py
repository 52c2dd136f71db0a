"""How users ask each intent of the domain: question templates, training and held out.

Each entry is (training phrasings, held-out phrasings). The held-out ones are never used
to make training dialogues (``make_dialogue(heldout_phrasing=True)`` is the only way to
them), so ``eval`` can ask questions worded as no training question was. Adding training
phrasings changes which dialogues a seed makes: bump ``corpus.FORMAT`` with them.

Beyond the listed sentences, the sums are also asked as parts put together: a way to say
the sum (``SUM_FORMS``) inside a way to ask (``ASK_FRAMES``). A small model that has seen
each operand in only a dozen sentence shapes learns the shapes; one that has seen it in a
hundred has to find the numbers. Training questions may also come wrapped in a lead-in or
a tail (``LEAD_INS``, ``TAILS``: see ``domain.wrap``).
"""

from __future__ import annotations

# Ways to ask for a sum ``{e}``; none of them is in, or holds, a held-out phrasing.
ASK_FRAMES = (
    "what is {e}", "what's {e}", "how much is {e}", "{e}", "tell me {e}", "work out {e}",
    "calculate {e}", "give me {e}", "i want {e}", "solve {e}", "what is the answer to {e}",
    "{e} is what", "{e} makes what", "quick one {e}", "do the sum {e}", "say {e}",
    "figure out {e}", "find {e}", "let's do {e}", "and {e} is",
)  # fmt: skip
SUM_FORMS = {
    "plus": (
        "{a} plus {b}", "{a} add {b}", "{a} and {b} added together", "{b} added to {a}",
        "the sum of {a} and {b}", "{a} plus another {b}",
    ),
    "minus": (
        "{a} minus {b}", "{a} take away {b}", "{b} subtracted from {a}", "{a} less {b}",
        "{a} subtract {b}", "{a} with {b} taken off",
    ),
    "times": (
        "{a} times {b}", "{a} multiplied by {b}", "the product of {a} and {b}",
        "{a} lots of {b}", "{a} groups of {b}", "{a} multiplied with {b}",
    ),
}  # fmt: skip
# Words around a training question that change nothing it asks.
LEAD_INS = (
    "can you tell me", "do you know", "quick question", "i want to know", "hey parley",
    "i would like to know", "excuse me", "question for you", "i was wondering",
    "could you tell me", "help me out", "right so", "okay parley", "now then",
)  # fmt: skip
TAILS = ("please", "for me", "thanks", "if you can", "right now", "quickly", "do you know")

# (training phrasings, held-out phrasings). {a} {b} are operands, {x} the item asked about.
PHRASINGS: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    "plus": (
        (
            "what is {a} plus {b}",
            "what's {a} plus {b}",
            "{a} plus {b}",
            "how much is {a} plus {b}",
            "can you tell me what {a} plus {b} is",
            "add {a} and {b}",
            "what is the sum of {a} and {b}",
            "please add {b} to {a}",
            "could you work out {a} plus {b}",
            "tell me {a} plus {b}",
            "what would {a} plus {b} be",
            "{a} plus {b} equals what",
            "what do {a} and {b} make together",
            "if you add {b} to {a} what do you get",
            "{a} and {b} added together",
            "i need {a} plus {b}",
        ),
        ("what does {a} plus {b} come to", "if i have {a} and add {b} how many is that"),
    ),
    "minus": (
        (
            "what is {a} minus {b}",
            "what's {a} minus {b}",
            "{a} minus {b}",
            "how much is {a} minus {b}",
            "take {b} away from {a}",
            "subtract {b} from {a}",
            "what is {a} take away {b}",
            "{a} take away {b}",
            "what is the difference between {a} and {b}",
            "could you work out {a} minus {b}",
            "tell me {a} minus {b}",
            "what would {a} minus {b} be",
            "{a} minus {b} equals what",
            "if you subtract {b} from {a} what do you get",
            "how many remain when {b} goes from {a}",
            "i need {a} minus {b}",
        ),
        ("what does {a} minus {b} come to", "what is left if you take {b} from {a}"),
    ),
    "times": (
        (
            "what is {a} times {b}",
            "what's {a} times {b}",
            "{a} times {b}",
            "how much is {a} times {b}",
            "multiply {a} by {b}",
            "what is {a} multiplied by {b}",
            "what is the product of {a} and {b}",
            "{a} multiplied by {b}",
            "could you work out {a} times {b}",
            "tell me {a} times {b}",
            "what would {a} times {b} be",
            "{a} times {b} equals what",
            "what do {a} lots of {b} make",
            "if you multiply {a} and {b} what is the answer",
            "{a} groups of {b} is how many",
            "i need {a} times {b}",
        ),
        ("what does {a} times {b} come to", "what do you get when you multiply {a} by {b}"),
    ),
    "number_after": (
        (
            "what number comes after {x}",
            "what comes after {x}",
            "what's the number after {x}",
            "which number follows {x}",
            "what is one more than {x}",
            "which number comes after {x}",
            "what is the next number after {x}",
            "what number follows {x}",
            "what number is right after {x}",
            "say the number after {x}",
            "which number is one higher than {x}",
            "after {x} which number is next",
            "what do you say after {x} when counting",
        ),
        ("if you count up from {x} what comes next", "tell me the number that follows {x}"),
    ),
    "number_before": (
        (
            "what number comes before {x}",
            "what comes before {x}",
            "what's the number before {x}",
            "which number is just before {x}",
            "what is one less than {x}",
            "which number comes before {x}",
            "what is the number just below {x}",
            "what number precedes {x}",
            "what number is right before {x}",
            "say the number before {x}",
            "which number is one lower than {x}",
            "before {x} which number is there",
            "what do you say before {x} when counting",
        ),
        ("if you count down from {x} what comes next", "tell me the number that precedes {x}"),
    ),
    "day_after": (
        (
            "what day comes after {x}",
            "what's the day after {x}",
            "which day follows {x}",
            "if today is {x} what day is tomorrow",
            "what day is after {x}",
            "which day comes after {x}",
            "what day follows {x}",
            "what is the next day after {x}",
            "what day is right after {x}",
            "name the day after {x}",
            "what weekday comes after {x}",
            "the day following {x} is what",
            "after {x} which day is next",
        ),
        ("tell me the day that follows {x}", "the day after {x} is which day"),
    ),
    "day_before": (
        (
            "what day comes before {x}",
            "what's the day before {x}",
            "which day is before {x}",
            "if today is {x} what day was yesterday",
            "what day is just before {x}",
            "which day comes before {x}",
            "what day precedes {x}",
            "what is the day just before {x}",
            "what day is right before {x}",
            "name the day before {x}",
            "what weekday comes before {x}",
            "the day preceding {x} is what",
            "before {x} which day is there",
        ),
        ("tell me the day that precedes {x}", "the day before {x} is which day"),
    ),
    "month_after": (
        (
            "what month comes after {x}",
            "what's the month after {x}",
            "which month follows {x}",
            "if this month is {x} what is next month",
            "what month is after {x}",
            "which month comes after {x}",
            "what month follows {x}",
            "what is the next month after {x}",
            "what month is right after {x}",
            "name the month after {x}",
            "after {x} which month is next",
            "the month following {x} is what",
            "what is the month that comes after {x}",
        ),
        ("tell me the month that follows {x}", "the month after {x} is which month"),
    ),
    "month_before": (
        (
            "what month comes before {x}",
            "what's the month before {x}",
            "which month is before {x}",
            "if this month is {x} what was last month",
            "what month is just before {x}",
            "which month comes before {x}",
            "what month precedes {x}",
            "what is the month just before {x}",
            "what month is right before {x}",
            "name the month before {x}",
            "before {x} which month is there",
            "the month preceding {x} is what",
            "what is the month that comes before {x}",
        ),
        ("tell me the month that precedes {x}", "the month before {x} is which month"),
    ),
    "hello": (
        (
            "hello",
            "hi there",
            "hey",
            "good morning",
            "hi how are you",
            "hello there",
            "hi",
            "good afternoon",
            "hiya",
            "hey how is it going",
        ),
        ("hey there good evening", "well hello"),
    ),
    "thanks": (
        (
            "thank you",
            "thanks",
            "thanks a lot",
            "thank you very much",
            "cheers thanks",
            "thank you so much",
            "great thanks",
            "thanks for your help",
            "much appreciated",
            "that helps thank you",
        ),
        ("that was helpful thank you", "many thanks"),
    ),
    "who": (
        (
            "who are you",
            "what is your name",
            "what are you",
            "who am i talking to",
            "tell me who you are",
            "what's your name",
            "who is this",
            "what do you do",
            "can you tell me your name",
            "are you a robot",
        ),
        ("what should i call you", "introduce yourself"),
    ),  # fmt: skip
    "hear": (
        (
            "can you hear me",
            "are you there",
            "hello can you hear me",
            "is this thing on",
            "do you hear me",
            "can you hear me okay",
            "hello is anyone there",
            "are you with me",
            "testing testing can you hear me",
            "is anybody there",
        ),
        ("are you listening", "can you hear what i am saying"),
    ),  # fmt: skip
    "goodbye": (
        (
            "goodbye",
            "bye",
            "bye bye",
            "see you later",
            "i have to go now bye",
            "goodbye for now",
            "see you",
            "okay bye now",
            "catch you later",
            "good night",
        ),
        ("that is all for today goodbye", "talk to you later"),
    ),  # fmt: skip
    # Follow-ups on a number: {op} is plus, minus or times, {k} the operand.
    "followup_arith": (
        (
            "and {op} {k}",
            "now {op} {k}",
            "what about {op} {k}",
            "then {op} {k}",
            "okay and {op} {k}",
            "{op} {k}",
            "and then {op} {k}",
            "how about {op} {k}",
            "now do {op} {k}",
            "and that {op} {k}",
        ),
        ("take that and {op} {k}", "and what is that {op} {k}"),
    ),  # fmt: skip
    # Follow-ups on a number, day or month: {dir} is after or before.
    "followup_seq": (
        (
            "and the one {dir} that",
            "what comes {dir} that",
            "and {dir} that",
            "what about the one {dir} that",
            "now the one {dir} that",
            "which one comes {dir} that",
            "how about the one {dir} that",
            "then {dir} that",
            "and what comes {dir} it",
            "the one {dir} that please",
        ),
        ("and what is {dir} that one", "then the one {dir} it"),
    ),  # fmt: skip
}


def _with_composed(listed: tuple[str, ...], op: str) -> tuple[str, ...]:
    """The listed training phrasings of ``op`` and then every frame-and-form pair not
    among them, in a fixed order (a phrasing's index names it in the manifest)."""
    composed = [f.format(e=e) for f in ASK_FRAMES for e in SUM_FORMS[op]]
    return listed + tuple(dict.fromkeys(c for c in composed if c not in listed))


for _op in SUM_FORMS:
    _train, _held = PHRASINGS[_op]
    PHRASINGS[_op] = (_with_composed(_train, _op), _held)
