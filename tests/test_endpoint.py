"""The endpointer on its own: turns from voice events, in input samples."""

import pytest

from parley.agent.core.endpoint import Endpointer, TurnSpan


def test_a_turn_spans_its_pauses_and_ends_after_the_endpoint():
    turn = Endpointer(endpoint=8000, preroll=1600)
    assert not turn.open and turn.to_feed(100) is None
    assert turn.speech_started(5000, oldest=0)  # a new turn: the front end starts afresh
    assert turn.start == 3400 and turn.in_speech
    assert turn.to_feed(6000) == (3400, 6000) and turn.to_feed(6000) is None
    turn.speech_stopped(9000)
    assert turn.to_feed(9600) is None  # nothing goes to the model during the silence
    assert not turn.ended(16999)
    # Speech again within the endpoint: the same turn, and the gap goes to the model.
    assert not turn.speech_started(12000, oldest=0)
    assert turn.to_feed(12320) == (6000, 12320)
    turn.speech_stopped(20000)
    assert not turn.ended(27999) and turn.ended(28000)
    assert turn.close() == TurnSpan(3400, 20000)
    assert not turn.open and not turn.ended(40000)


def test_pre_roll_stops_at_the_oldest_sample_held_and_at_zero():
    turn = Endpointer(endpoint=100, preroll=1600)
    turn.speech_started(5000, oldest=4000)
    assert turn.start == 4000
    turn.drop()
    turn.speech_started(800, oldest=0)
    assert turn.start == 0


def test_a_stop_without_a_turn_and_a_dropped_turn_end_nothing():
    turn = Endpointer(endpoint=100, preroll=0)
    turn.speech_stopped(50)
    assert not turn.ended(10_000)
    turn.speech_started(200, oldest=0)
    turn.speech_stopped(300)
    turn.drop()
    assert not turn.ended(10_000)
    with pytest.raises(RuntimeError, match="no user turn"):
        turn.close()


def test_retuning_takes_effect_on_the_open_turn():
    turn = Endpointer(endpoint=8000, preroll=0)
    turn.speech_started(0, oldest=0)
    turn.speech_stopped(1000)
    assert not turn.ended(5000)
    turn.retune(endpoint=3200, preroll=0)
    assert turn.ended(5000)


@pytest.mark.parametrize("eagerness", [None, "medium"])
def test_words_that_were_a_whole_turn_end_it_at_their_stop(eagerness):
    from parley.agent.core.endpoint import semantic_policy

    turn = Endpointer(endpoint=8000, preroll=0)
    if eagerness:
        turn.policy = semantic_policy(eagerness, 16000, 500)
    turn.speech_started(1000, oldest=0)
    turn.speech_stopped(7000, said_all=True)  # "stop", over a reply, which it cut
    assert turn.ended(7000 + 5120)  # the VAD calls the stop 320 ms in: no more wait
    assert turn.close() == TurnSpan(1000, 7000)
    # Speech again before the turn was closed: what follows is the turn too, and it
    # waits as any other.
    turn.speech_started(20000, oldest=0)
    turn.speech_stopped(26000, said_all=True)
    turn.speech_started(30000, oldest=0)
    turn.speech_stopped(36000)
    assert not turn.ended(36000 + 5120)
