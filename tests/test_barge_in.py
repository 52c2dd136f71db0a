"""The barge-in rules on their own: moves from states and samples, no session."""

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
