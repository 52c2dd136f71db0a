import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from parley.config import ScheduleConfig
from parley.llm.schedule import ScheduleState, advance, allowed_next, heard_prefix, interleave
from parley.tokenizers.vocab import TokenClass
from parley.tokenizers.vocab import TokenClass as C

T, S, TE, E = C.TEXT, C.SPEECH, C.TEXT_END, C.EOT


def _run(classes, sched):
    state = ScheduleState()
    for cls in classes:
        state = advance(state, cls, sched)
    return state


def test_cycle_of_n_text_then_m_speech():
    sched = ScheduleConfig(
        text_tokens=2, speech_tokens=3, min_speech_tokens=0, max_speech_tokens=50
    )
    state = ScheduleState()
    seen = []
    for _ in range(10):
        allowed = allowed_next(state, sched)
        cls = T if T in allowed else S
        seen.append(cls)
        state = advance(state, cls, sched)
    assert seen == [T, T, S, S, S, T, T, S, S, S]


def test_speech_only_after_text_end_and_eot_after_min():
    sched = ScheduleConfig(
        text_tokens=2, speech_tokens=2, min_speech_tokens=3, max_speech_tokens=50
    )
    state = _run([T, TE], sched)
    assert allowed_next(state, sched) == {S}
    state = _run([T, TE, S, S], sched)
    assert E not in allowed_next(state, sched)
    state = _run([T, TE, S, S, S], sched)
    assert allowed_next(state, sched) == {S, E}
    assert allowed_next(advance(state, E, sched), sched) == frozenset()


def test_max_forces_text_end_then_eot():
    sched = ScheduleConfig(text_tokens=1, speech_tokens=2, min_speech_tokens=0, max_speech_tokens=4)
    state = _run([T, S, S, T, S, S], sched)
    assert allowed_next(state, sched) == {TE}
    assert allowed_next(advance(state, TE, sched), sched) == {E}


def test_disallowed_token_raises():
    sched = ScheduleConfig(text_tokens=1, speech_tokens=1)
    with pytest.raises(ValueError, match="SPEECH not allowed"):
        advance(ScheduleState(), S, sched)
    with pytest.raises(ValueError, match="EOT"):
        advance(ScheduleState(), E, sched)


def test_heard_prefix_keeps_text_of_heard_cycles():
    classes = [T, T, S, S, S, T, T, S, S, S, TE, S, S, E]
    assert heard_prefix(classes, 0) == 0
    assert heard_prefix(classes, 1) == 3  # the first cycle's text and its first speech token
    assert heard_prefix(classes, 3) == 5
    assert heard_prefix(classes, 4) == 8  # second cycle's text comes with its speech
    assert heard_prefix(classes, 8) == 13
    assert heard_prefix(classes, 99) == 14


# An independent description of a well-formed reply: full cycles of n text + m speech, a
# text end in a text slot (or anywhere once the speech maximum is reached), speech, eot.
def well_formed(classes, n, m, lo, hi):
    s = "".join({T: "t", S: "s", TE: "e", E: "x"}[c] for c in classes)
    if s.count("e") != 1 or not re.fullmatch(r"[ts]*es*x", s):
        return False
    pre, post = s.split("e")
    if not re.fullmatch(rf"(t{{{n}}}s{{{m}}})*(t{{0,{n - 1}}}|t{{{n}}}s{{0,{m}}})", pre):
        return False
    in_text_slot = len(pre) % (n + m) < n
    at_max = pre.count("s") == hi
    total = s.count("s")
    return (in_text_slot or at_max) and (post == "x" or not at_max) and lo <= total <= hi


def test_checker_rejects_malformed():
    assert well_formed([T, S, TE, S, E], 1, 1, 0, 9)
    assert not well_formed([T, T, S, TE, S, E], 1, 1, 0, 9)  # two text in a row
    assert not well_formed([T, S, TE, E], 1, 1, 2, 9)  # too little speech
    assert not well_formed([T, TE, S, T, E], 1, 1, 0, 9)  # text after text end
    assert not well_formed([T, S, S], 1, 2, 0, 9)  # never ends


@settings(max_examples=300, deadline=None)
@given(
    n=st.integers(1, 5),
    m=st.integers(1, 6),
    lo=st.integers(0, 20),
    span=st.integers(0, 20),
    picks=st.lists(st.integers(0, 3), min_size=0, max_size=400),
)
def test_any_choice_sequence_is_well_formed(n, m, lo, span, picks):
    sched = ScheduleConfig(
        text_tokens=n, speech_tokens=m, min_speech_tokens=lo, max_speech_tokens=lo + span + 1
    )
    state, classes, i = ScheduleState(), [], 0
    while not state.done:
        options = sorted(allowed_next(state, sched))
        cls = options[picks[i] % len(options)] if i < len(picks) else options[-1]
        i += 1
        classes.append(cls)
        state = advance(state, cls, sched)
        assert len(classes) < 10_000
    assert well_formed(classes, n, m, lo, lo + span + 1), classes


@pytest.mark.parametrize(("n_text", "n_speech"), [(0, 5), (3, 40), (13, 26), (14, 60), (30, 100)])
def test_interleave_follows_the_schedule(n_text, n_speech):
    sched = ScheduleConfig(
        text_tokens=13, speech_tokens=26, min_speech_tokens=0, max_speech_tokens=200
    )
    text = list(range(100, 100 + n_text))
    speech = list(range(1000, 1000 + n_speech))
    laid = interleave(text, speech, sched)
    state = ScheduleState()
    for cls, _ in laid:  # advance raises on anything the schedule forbids
        state = advance(state, cls, sched)
    assert state.done
    assert [t for c, t in laid if c is TokenClass.TEXT] == text
    assert [t for c, t in laid if c is TokenClass.SPEECH] == speech
    kinds = [c for c, _ in laid]
    assert kinds.count(TokenClass.TEXT_END) == 1 and kinds[-1] is TokenClass.EOT


def test_interleave_refuses_what_inference_would_cut():
    sched = ScheduleConfig(
        text_tokens=2, speech_tokens=2, min_speech_tokens=0, max_speech_tokens=10
    )
    with pytest.raises(ValueError, match="max_speech_tokens"):
        interleave([1], list(range(11)), sched)
    with pytest.raises(ValueError, match="before its text"):
        interleave(list(range(20)), list(range(10)), sched)
