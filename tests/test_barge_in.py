"""The barge-in rules on their own: moves from states and samples, no session."""

import pytest

from parley.agent.core.barge_in import Action, BargeIn, Move
from parley.agent.core.events import AgentState as S


def rules() -> BargeIn:
    return BargeIn(tentative_hold=1600, min_interruption=3200)


def test_confirmed_speech_pauses_then_cuts_after_min_interruption():
    b = rules()
    assert b.speech_started(S.SPEAKING, 1000) == Move(
        Action.PAUSE, "user speech over the reply", 1000
    )
    assert b.due(S.PAUSED, 4199, speaking=True) is None
    assert b.due(S.PAUSED, 4200, speaking=False) is None  # in its closing silence: not yet
    assert b.due(S.PAUSED, 4200, speaking=True) == Move(Action.INTERRUPT, "user kept speaking")
    assert b.onset is None and b.due(S.PAUSED, 9000, speaking=True) is None


def test_short_sound_resumes_the_reply():
    b = rules()
    b.speech_started(S.THINKING, 500)
    move = b.speech_stopped(S.PAUSED)
    assert move is not None and move.action is Action.RESUME
    assert b.speech_stopped(S.PAUSED) is None  # nothing left to resume


def test_speech_while_listening_touches_no_reply():
    b = rules()
    assert b.speech_started(S.LISTENING, 500) is None
    assert b.onset is None and b.speech_stopped(S.LISTENING) is None


def test_tentative_onset_pauses_and_unconfirmed_resumes_after_the_hold():
    b = rules()
    assert b.frame(S.THINKING, 100, tentative_onset=80, starting=True) is None  # no audio yet
    move = b.frame(S.SPEAKING, 2000, tentative_onset=1900, starting=True)
    assert move == Move(Action.PAUSE, "possible user speech over the reply", 1900)
    # Held while the detector may still confirm it, and for the hold in any case.
    assert b.frame(S.PAUSED, 5000, tentative_onset=None, starting=True) is None
    assert b.frame(S.PAUSED, 3599, tentative_onset=None, starting=False) is None
    assert b.frame(S.PAUSED, 3600, tentative_onset=None, starting=False) == Move(
        Action.RESUME, "not speech after all"
    )
    assert b.onset is None


def test_a_tentative_pause_confirmed_takes_the_confirmed_onset():
    b = rules()
    b.frame(S.SPEAKING, 2000, tentative_onset=1900, starting=True)
    assert b.speech_started(S.PAUSED, 1950) is None  # already paused
    assert b.onset == 1950 and b.tentative_since is None
    assert b.due(S.PAUSED, 1950 + 3200, speaking=True) is not None


def test_leaving_pause_by_other_means_clears_the_tentative_mark():
    b = rules()
    b.frame(S.SPEAKING, 2000, tentative_onset=1900, starting=True)
    b.forget()
    assert b.frame(S.INTERRUPTED, 2100, tentative_onset=None, starting=False) is None
    assert b.tentative_since is None and b.onset is None


def words_rules() -> BargeIn:
    return BargeIn(tentative_hold=1600, min_interruption=9600, words_from=4000)


def test_words_that_take_the_turn_cut_before_min_interruption():
    b = words_rules()
    b.speech_started(S.SPEAKING, 1000)
    assert not b.asks(S.PAUSED, 4999, speaking=True)  # not enough heard to judge
    assert b.asks(S.PAUSED, 5000, speaking=True) and not b.asks(S.PAUSED, 5000, speaking=False)
    b.judged(0.99)
    assert b.due(S.PAUSED, 5000, speaking=True) is None  # sure once: not yet
    b.judged(0.5)
    assert b.due(S.PAUSED, 5800, speaking=True) is None  # then unsure: wait
    b.judged(0.95)
    assert b.due(S.PAUSED, 6600, speaking=True) is None
    b.judged(0.92)
    assert b.due(S.PAUSED, 7400, speaking=True) == Move(Action.INTERRUPT, "the words take the turn")
    # A new onset starts its judgments afresh.
    b.speech_started(S.SPEAKING, 20000)
    assert b.judgments == []


def test_a_short_command_cuts_where_a_short_sound_resumes():
    b = words_rules()
    b.speech_started(S.SPEAKING, 1000)
    assert b.speech_stopped(S.PAUSED, takes=0.95) == Move(
        Action.INTERRUPT, "short words that take the turn"
    )
    b.speech_started(S.SPEAKING, 20000)
    assert b.speech_stopped(S.PAUSED, takes=0.3).action is Action.RESUME
    b.speech_started(S.SPEAKING, 30000)
    assert b.speech_stopped(S.PAUSED).action is Action.RESUME  # no detector: by length


def test_words_that_acknowledge_may_run_past_min_interruption():
    b = words_rules()
    b.speech_started(S.SPEAKING, 1000)
    at_min = 1000 + 9600
    b.judged(0.1)
    assert b.due(S.PAUSED, at_min, speaking=True) is not None  # judged once: by length
    b.speech_started(S.SPEAKING, 15000)
    for p in (0.1, 0.5, 0.6):
        b.judged(p)
    assert b.due(S.PAUSED, 15000 + 9600, speaking=True) is not None  # unsure: by length
    b.speech_started(S.SPEAKING, 20000)
    for p in (0.1, 0.05, 0.02, 0.6):  # "yeah yeah right"; the word's end may jump
        b.judged(p)
    assert b.due(S.PAUSED, 20000 + 9600, speaking=True) is None
    # Up to twice min_interruption: a user who goes on that long has the turn.
    assert b.due(S.PAUSED, 20000 + 2 * 9600 - 1, speaking=True) is None
    assert b.due(S.PAUSED, 20000 + 2 * 9600, speaking=True) == Move(
        Action.INTERRUPT, "user kept speaking"
    )
    b.speech_started(S.SPEAKING, 90000)
    assert b.speech_stopped(S.PAUSED, takes=0.1).action is Action.RESUME  # then it resumes


def test_the_latest_words_decide_whether_they_only_acknowledge():
    # "exactly" (flite rms, over a reply): unsure a syllable in, sure it acknowledges once
    # the word is out. The median of all six (0.267) would take the turn.
    b = words_rules()
    b.speech_started(S.SPEAKING, 1000)
    for p in (0.695, 0.441, 0.267, 0.067, 0.058, 0.131):
        b.judged(p)
    assert b.due(S.PAUSED, 1000 + 9600, speaking=True) is None
    # ... and words that end unsure are still taken by their length.
    b.speech_started(S.SPEAKING, 30000)
    for p in (0.05, 0.02, 0.1, 0.4, 0.5):
        b.judged(p)
    assert b.due(S.PAUSED, 30000 + 9600, speaking=True) == Move(
        Action.INTERRUPT, "user kept speaking"
    )


class _Words:
    """A cut-in detector with one answer, that counts the questions."""

    def __init__(self, p: float) -> None:
        from parley.llm.turn_detector import TurnDetectorConfig

        self.p, self.asked = p, 0
        self.cfg = TurnDetectorConfig(d_model=0, frames=100)

    def probability(self, frames) -> float:
        self.asked += 1
        return self.p


async def _over_a_reply(tiny_model, p: float, cut_in: tuple[float, float], **cfg):
    import dataclasses

    from tests.test_session import run

    words = _Words(p)
    model = dataclasses.replace(tiny_model, cut_in_detector=words)
    # The reply's audio starts about 1.91 s in; the user speaks over it at 3.0 s.
    _, events, _ = await run(model, [(0.2, 1.4), cut_in], 12.0, **cfg)
    return events, words


async def test_the_session_lets_the_words_decide(tiny_model):
    # "stop": 400 ms, shorter than min_interruption, cut as soon as the words are judged.
    events, words = await _over_a_reply(tiny_model, 0.95, (3.0, 3.4))
    cut = next(e for e in events if e.type == "interrupted")
    # Judged at 300 ms and again 50 ms later: sure twice, cut.
    assert cut.t == pytest.approx(3.0 + 0.35, abs=0.011) and words.asked == 2
    # "yeah yeah right": a second of speech over the reply, and the reply goes on.
    events, words = await _over_a_reply(tiny_model, 0.05, (3.0, 4.0))
    assert not [e for e in events if e.type == "interrupted"]
    assert [e.type for e in events if e.type.startswith("playback_")] == [
        "playback_paused",
        "playback_resumed",
    ]
    assert next(e for e in events if e.type == "reply_ended").status == "completed"
    # Judged every 50 ms while it lasts, not every frame.
    assert 10 <= words.asked <= 18


async def _words_with_a_slow_stop(tiny_model, p: float, cut_in: tuple[float, float]):
    """Words over the reply, with a VAD that calls its stop 320 ms into the silence (the
    shipped one's): what ends them sooner is the session, not the VAD."""
    import dataclasses

    from tests.test_session import run

    words = _Words(p)
    model = dataclasses.replace(tiny_model, cut_in_detector=words)
    _, events, _ = await run(model, [(0.2, 1.4), cut_in], 12.0, stop_delay=5120)
    return events, words


@pytest.mark.parametrize("length", [0.25, 0.4])
async def test_words_that_take_the_turn_end_it_200_ms_into_their_silence(tiny_model, length):
    # "stop" (250 ms: judged once, in its silence) or "no stop" (400 ms: cut while it is
    # said): the new turn ends 200 ms after the words, not at the VAD's stop at 320 ms.
    events, words = await _words_with_a_slow_stop(tiny_model, 0.95, (3.0, 3.0 + length))
    assert next(e for e in events if e.type == "interrupted")
    ended = [e for e in events if e.type == "user_turn_ended"]
    assert ended[1].t == pytest.approx(3.0 + length + 0.2, abs=0.011)
    # Words it does not take for a turn: the reply resumes at the VAD's stop, as before.
    events, words = await _words_with_a_slow_stop(tiny_model, 0.05, (3.0, 3.25))
    assert not [e for e in events if e.type == "interrupted"]
    resumed = next(e for e in events if e.type == "playback_resumed")
    assert resumed.t == pytest.approx(3.25 + 0.32, abs=0.011) and words.asked == 2


async def test_without_words_it_goes_by_length(tiny_model):
    events, words = await _over_a_reply(tiny_model, 0.05, (3.0, 4.0), cut_in_by_words=False)
    cut = next(e for e in events if e.type == "interrupted")
    assert cut.t == pytest.approx(3.0 + 0.6, abs=0.011) and words.asked == 0


def test_heads_judge_the_words_every_50_ms_and_only_when_asked_to():
    from types import SimpleNamespace

    import numpy as np
    import torch

    from parley.agent.core.heads import Heads

    words = _Words(0.95)
    model = SimpleNamespace(cut_in_detector=words, turn_detector=None)
    heard = []
    listener = SimpleNamespace(recent=lambda a, b: heard.append((a, b)) or np.zeros(b - a))
    turn = SimpleNamespace(fed=1000, ask_due=lambda now: True)
    frontend = SimpleNamespace(peek=lambda pcm, keep: torch.zeros(keep, 4))
    heads = Heads(model, listener, turn, frontend)
    barge = words_rules()
    for now in range(5000, 7000, 160):  # a 10 ms frame at a time, for 130 ms
        heads.judge_words(now, barge)
    assert barge.judgments == [0.95] * 3 and heard[0] == (1000, 5000)  # at 0, 50, 100 ms
    assert heads.finished(7000) is None  # no end-of-turn detector: no answer
    heads.words = False
    assert heads.takes_turn(7000) is None and words.asked == 3
    heads.new_onset()
    heads.words = True
    heads.judge_words(7010, barge)  # a new onset is judged at once
    assert len(barge.judgments) == 4


def test_only_short_words_that_took_the_turn_said_all():
    b = words_rules()
    # Cut at the stop by a sure judgment, 400 ms of speech: a whole turn.
    b.speech_started(S.SPEAKING, 1000)
    assert b.speech_stopped(S.PAUSED, takes=0.95).action is Action.INTERRUPT
    assert b.said_all(1000 + 6400) and not b.said_all(1000 + 6400)  # asked once
    # Cut while speaking by the words, and the speech went on past min_interruption: the
    # start of a longer turn ("wait, what is seven ... times eight").
    b.speech_started(S.SPEAKING, 30000)
    b.judged(0.95)
    b.judged(0.97)
    assert b.due(S.PAUSED, 30000 + 5600, speaking=True).reason == "the words take the turn"
    assert not b.said_all(30000 + 16000)
    # ... and the same cut with the speech over soon after: a whole turn.
    b.speech_started(S.SPEAKING, 60000)
    b.judged(0.95)
    b.judged(0.97)
    assert b.due(S.PAUSED, 60000 + 5600, speaking=True) is not None
    assert b.said_all(60000 + 7000)
    # Cut by its length: never.
    b.speech_started(S.SPEAKING, 90000)
    assert b.due(S.PAUSED, 90000 + 9600, speaking=True).reason == "user kept speaking"
    assert not b.said_all(90000 + 9700)


async def test_a_command_over_the_reply_is_a_whole_turn(tiny_model):
    # "stop" cut the reply by its words: its turn ends as the VAD calls the stop, where a
    # turn of a question waits out the endpoint's silence after it.
    events, _ = await _over_a_reply(tiny_model, 0.95, (3.0, 3.4))
    stops = [e.t for e in events if e.type == "user_speech_ended"]
    ends = [e.t for e in events if e.type == "user_turn_ended"]
    assert len(stops) == len(ends) == 2
    assert ends[0] - stops[0] >= 0.29  # the endpoint's silence
    assert ends[1] - stops[1] == pytest.approx(0.0, abs=0.011)
    # Words that only acknowledge it start no turn at all.
    events, _ = await _over_a_reply(tiny_model, 0.05, (3.0, 3.4))
    assert len([e for e in events if e.type == "user_turn_ended"]) == 1
