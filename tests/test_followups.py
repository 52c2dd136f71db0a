"""Recombined follow-ups: a recorded follow-up asked after another dialogue's answer gets the
reply the domain gives it, and replies the corpus never recorded are recorded like its own."""

from __future__ import annotations

import random
from collections import Counter

import numpy as np
import pytest

from parley.errors import AudioInputError
from parley.speech_io.audio import load_audio
from parley.train import domain
from parley.train.corpus import answer_path, record_answer
from parley.train.followups import move_of, recombine_followups, result_of
from parley.train.lm_data import Dialogue, Turn, reply_audio
from parley.train.voices import agent_voice, missing_engines


def _as_lm_dialogues(n: int, seed: int) -> list[Dialogue]:
    """Domain dialogues shaped as read_dialogues gives them (audio ids stand in for files)."""
    rng = random.Random(seed)
    out = []
    for i in range(n):
        d = domain.make_dialogue(rng)
        turns = [Turn(f"u{i}_{j}", t.answer) for j, t in enumerate(d.turns)]
        meta = {"turns": [{"intent": t.intent, "answer": t.answer} for t in d.turns]}
        out.append(Dialogue(f"d{i}", "train", turns, meta))
    return out


def test_a_followups_move_and_its_answers_result_give_back_its_reply():
    # Over the domain's own follow-up dialogues: reading the result off the first answer
    # and the move off the follow-up's, the domain gives back exactly the follow-up's reply.
    rng = random.Random(3)
    seen = {"arith": 0, "seq": 0}
    for _ in range(400):
        d = domain.make_dialogue(rng, intents={"followup"})
        first, second = d.turns
        value, move = result_of(first.answer), move_of(second.answer)
        assert value is not None and move is not None, (first.answer, second.answer)
        assert domain.followup_answer(value, move) == second.answer
        seen["arith" if len(move) == 2 else "seq"] += 1
    assert min(seen.values()) > 50
    for fixed in ("hello there how can i help", domain.REFUSAL):
        assert result_of(fixed) is None and move_of(fixed) is None


def test_followup_answer_refuses_what_the_corpus_never_asks():
    assert domain.followup_answer("monday", ("times", 2)) is None
    assert domain.followup_answer(0, ("before",)) is None
    assert domain.followup_answer(9999, ("plus", 1)) is None
    assert domain.followup_answer(3, ("minus", 5)) is None
    assert domain.followup_answer("march", ("after",)) == "the month after march is april"
    assert domain.followup_answer(56, ("times", 2)) == "fifty six times two is one hundred twelve"


def test_recombined_followups_pair_any_answer_with_a_recorded_followup():
    dialogues = _as_lm_dialogues(300, seed=1)
    followups = {d.turns[1].audio: d for d in dialogues if len(d.turns) == 2}
    firsts = {d.turns[0].audio: d for d in dialogues}
    out = recombine_followups(dialogues, share=2.0, seed=0)
    assert len(out) == 600
    answers = set(domain.all_answers())
    pairs = set()
    for d in out:
        first, second = d.turns
        assert first.audio in firsts and second.audio in followups  # nothing new to synthesize
        source = followups[second.audio]
        expected = domain.followup_answer(
            result_of(firsts[first.audio].turns[0].answer), move_of(source.turns[1].answer)
        )
        assert second.answer == expected and second.answer in answers
        pairs.add((first.audio, second.audio))
    # Far more (answer, follow-up) pairs than the corpus recorded.
    assert len(pairs) > 5 * len(followups)
    again = recombine_followups(dialogues, share=2.0, seed=0)
    assert [(d.id, d.turns[1].answer) for d in again] == [(d.id, d.turns[1].answer) for d in out]
    assert recombine_followups(dialogues, share=0.0, seed=0) == []
    # Drills: the same kind of pairs, drawn apart, whose reply is laid out as text alone.
    drills = recombine_followups(dialogues, share=1.0, seed=0, text_only=True)
    assert len(drills) == 300 and all(d.turns[1].text_only for d in drills)
    assert not any(t.text_only for d in out for t in d.turns)
    assert [d.id for d in drills] != [d.id for d in out[:300]]
    assert recombine_followups([d for d in dialogues if len(d.turns) == 1], 1.0, 0) == []
    # Follow-ups that fit no answer (arithmetic after days only) are refused, not retried
    # for ever.
    days = [d for d in dialogues if result_of(d.turns[0].answer) in domain.DAYS]
    arith = [d for d in dialogues if len(d.turns) == 2 and len(move_of(d.turns[1].answer)) == 2]
    assert days and arith
    after_days = [Dialogue(d.id, d.split, [days[0].turns[0], d.turns[1]], d.meta) for d in arith]
    with pytest.raises(ValueError, match="do not fit"):
        recombine_followups(after_days, share=1.0, seed=0)


def test_drills_deal_every_pair_the_dialogues_allow_evenly():
    # Drawn by dialogue, the small results the corpus asks most took the draws and most
    # (result, move) pairs were never drilled; dealt by pair, each comes round once a round.
    dialogues = _as_lm_dialogues(300, seed=1)
    values = {result_of(d.turns[0].answer) for d in dialogues} - {None}
    moves = {move_of(d.turns[1].answer) for d in dialogues if len(d.turns) == 2}
    allowed = {domain.followup_answer(v, m) for v in values for m in moves} - {None}
    assert len(allowed) > 3 * len(dialogues)
    for rounds in (1, 2):
        share = rounds * len(allowed) / len(dialogues)
        drills = recombine_followups(dialogues, share=share, seed=0, text_only=True)
        counts = Counter(d.turns[1].answer for d in drills)
        assert set(counts) == allowed and set(counts.values()) == {rounds}


def test_a_reply_the_corpus_lacks_is_recorded_as_the_corpus_records_it(tmp_path):
    if not agent_voice().available():
        pytest.skip(f"needs Piper joe: {missing_engines()}")
    corpus, extra = tmp_path / "corpus", tmp_path / "extra"
    answer = "fifty six times two is one hundred twelve"
    made = record_answer(answer, corpus)
    assert made == corpus / answer_path(answer)
    before = made.stat().st_mtime_ns
    assert record_answer(answer, corpus) == made and made.stat().st_mtime_ns == before  # kept
    record_answer(answer, extra)
    np.testing.assert_array_equal(
        load_audio(made, 16000), load_audio(extra / answer_path(answer), 16000)
    )
    # The LM's reply audio comes from the corpus, else from the extra folder.
    made.unlink()
    assert reply_audio(corpus, answer, extra).size > 16000 // 2
    with pytest.raises(AudioInputError, match="not found"):
        reply_audio(corpus, answer)
