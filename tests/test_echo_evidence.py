"""Echo evidence: the user is heard over the agent's first reply before the canceller has
learnt the echo path, and the agent's own echo is never vouched for.

The agent's voice here is full scale (espeak-ng en-us at -14 dBFS RMS, peaks above 0 dBFS,
as loud as the trained model speaks); the user's (en-gb, higher pitch) is 10 dB quieter.
"""

from __future__ import annotations

import numpy as np
import pytest

from parley.agent.core.echo_evidence import HOLD_FRAMES, EchoEvidence
from parley.agent.core.input import InputStage
from parley.config import AgentConfig
from parley.speech_io.echo import EchoCanceller
from parley.speech_io.echo_gate import NearEndGate
from parley.speech_io.echo_path import EchoPath
from tests.test_echo import FAR_TEXT, NEAR_TEXT, _espeak

RATE = 16000
FRAME = 160
AGENT_DB, USER_DB = -14.0, -24.0
LEAD = RATE  # a second of the room alone before the reply starts
NOISE_DB = -60.0


@pytest.fixture(scope="module")
def voices(tmp_path_factory: pytest.TempPathFactory) -> tuple[np.ndarray, np.ndarray]:
    """(agent, user) speech, trimmed to start at their first audible sample."""
    tmp = tmp_path_factory.mktemp("evidence")
    out = []
    for name, text, voice, level in (
        ("far", FAR_TEXT, ["-v", "en-us"], AGENT_DB),
        ("near", NEAR_TEXT, ["-v", "en-gb", "-p", "70"], USER_DB),
    ):
        x = _espeak(tmp / f"{name}.wav", text, *voice)
        x = x[np.flatnonzero(np.abs(x) > 1e-3)[0] :]
        out.append((x * 10 ** ((level - 10 * np.log10(np.mean(x**2))) / 20)).astype(np.float32))
    far, near = out
    return far[: 5 * RATE], near[: 2 * RATE]


def room(far: np.ndarray, near: np.ndarray | None = None, user_at: float = 0.0, echo=None):
    """(mic, reference): the reply starts after LEAD; the user ``user_at`` s into it."""
    n = LEAD + len(far)
    reference = np.zeros(n, np.float32)
    reference[LEAD:] = far
    rng = np.random.default_rng(0)
    mic = (10 ** (NOISE_DB / 20) * rng.standard_normal(n)).astype(np.float32)
    if echo is not None:
        mic += echo.process(reference)
    if near is not None:
        at = LEAD + int(user_at * RATE)
        mic[at : at + len(near)] += near[: n - at]
    return mic, reference


def frame_power(x: np.ndarray) -> np.ndarray:
    return np.mean(x[: len(x) // FRAME * FRAME].reshape(-1, FRAME) ** 2, axis=1)


def judge(mic: np.ndarray, reference: np.ndarray, chunk: int = 2 * FRAME):
    """(evidence verdicts, gate verdicts) per frame, fed as the session feeds them."""
    aec = EchoCanceller()
    gate = NearEndGate(aec)
    evidence = EchoEvidence(aec, gate.options)
    ours, theirs = [], []
    for i in range(0, len(mic) // chunk * chunk, chunk):
        m, r = mic[i : i + chunk], reference[i : i + chunk]
        theirs.append(gate.process(aec.process(m, r), r))
        ours.append(evidence.process(m, r))
    return np.concatenate(ours), np.concatenate(theirs)


def test_user_over_a_full_scale_reply_with_no_echo(voices):
    # Headphones, or a room where the speaker does not reach the microphone: after the
    # reply's first 0.3 s every lag has been heard quiet, so a user 10 dB under the agent
    # is heard at once. The gate alone, trusting no unlearnt path, refuses every frame.
    far, near = voices
    mic, reference = room(far, near, user_at=0.3)
    ours, theirs = judge(mic, reference)
    first = (LEAD + int(0.3 * RATE)) // FRAME
    # Its first half second (the output pauses long before; the reference plays on here).
    loud = np.flatnonzero(frame_power(near[: RATE // 2]) > 10 ** (-40 / 10)) + first
    assert ours[loud].mean() >= 0.9 and ours[loud[:3]].all()
    assert not theirs[loud].any()


def test_lags_not_heard_yet_keep_the_prior(voices):
    # The user starts with the reply: nothing is known about any lag yet, so nothing can
    # be ruled out and the first frames are not vouched for.
    far, near = voices
    mic, reference = room(far, near, user_at=0.0)
    ours, _ = judge(mic, reference)
    first = LEAD // FRAME
    assert not ours[first + 1 : first + 10].any()


@pytest.mark.parametrize("gain_db", [0, -10, -20])
@pytest.mark.parametrize("delay_ms", [20, 60, 120])
def test_echo_alone_is_never_vouched_for(voices, delay_ms, gain_db):
    far, _ = voices
    echo = EchoPath(delay_ms, gain_db, room_ms=60, noise_db=-55)
    mic, reference = room(far, echo=echo)
    ours, _ = judge(mic, reference)
    tail = int(0.25 * RATE) // FRAME + 1
    playing = np.convolve(frame_power(reference) > 0, np.ones(tail))[: len(ours)] > 0
    assert playing.sum() > 4 * RATE // FRAME
    assert not ours[playing].any()


@pytest.mark.parametrize("user_at, echo", [(0.3, None), (1.5, (60, -6))])
def test_the_session_front_hears_the_user_at_once(voices, user_at, echo):
    # The whole listening front (canceller, gate, evidence, VAD) as the session drives it:
    # the output must pause within 100 ms of the onset (it pauses on a tentative onset).
    far, near = voices
    path = EchoPath(*echo, room_ms=60, noise_db=-55) if echo else None
    mic, reference = room(far, near, user_at=user_at, echo=path)
    onset = LEAD + int(user_at * RATE)
    stage = InputStage(AgentConfig(), None, FRAME)
    heard = None
    for i in range(0, onset + RATE // 2, FRAME):
        stage.played(reference[i : i + FRAME], i)
        events = stage.process(mic[i : i + FRAME], i)
        if stage.tentative_onset is not None or any(e.kind == "start" for e in events):
            heard = i + FRAME
            break
    assert heard is not None and onset <= heard <= onset + RATE // 10


@pytest.mark.parametrize("delay_ms, gain_db", [(20, 0), (60, -6), (120, -20)])
def test_the_session_front_never_hears_the_echo_alone(voices, delay_ms, gain_db):
    far, _ = voices
    mic, reference = room(far, echo=EchoPath(delay_ms, gain_db, room_ms=60, noise_db=-55))
    stage = InputStage(AgentConfig(), None, FRAME)
    for i in range(0, len(mic) // FRAME * FRAME, FRAME):
        stage.played(reference[i : i + FRAME], i)
        assert not stage.process(mic[i : i + FRAME], i)
        assert stage.tentative_onset is None


@pytest.mark.parametrize("click_at, early", [(0.1, True), (1.5, False)])
def test_a_proven_frame_holds_the_next_only_while_lags_are_unheard(voices, click_at, early):
    # A click over the echo (10 ms of noise 20 dB above the loudest reference frame of the
    # tail) is proven at once. Early in the reply some lags have not been heard, so the
    # frames after it are held open, as a user's onset would go on; a second and more in,
    # every lag has been heard and nothing is held.
    far, _ = voices
    mic, reference = room(far, echo=EchoPath(60, -6, room_ms=60, noise_db=-55))
    at = LEAD + int(click_at * RATE) // FRAME * FRAME
    loudest = frame_power(reference[at - RATE // 4 : at]).max()
    click = np.random.default_rng(1).standard_normal(FRAME) * np.sqrt(100 * loudest)
    mic[at : at + FRAME] += click.astype(np.float32)
    ours, _ = judge(mic, reference)
    frame = at // FRAME
    held = HOLD_FRAMES if early else 0
    assert HOLD_FRAMES >= 4  # silero confirms a voiced onset 16-60 ms in
    assert ours[frame] and ours[frame + 1 : frame + 1 + held].all()
    assert not ours[frame + 1 + held :].any() and not ours[:frame].any()


def test_chunking_and_reset(voices):
    far, near = voices
    mic, reference = room(far, near, user_at=0.3)
    assert np.array_equal(judge(mic, reference, FRAME)[0], judge(mic, reference, 3 * FRAME)[0])
    evidence = EchoEvidence(EchoCanceller())
    half = len(mic) // 2 // FRAME * FRAME
    first = evidence.process(mic[:half], reference[:half])
    evidence.reset()
    assert np.array_equal(evidence.process(mic[:half], reference[:half]), first)
    with pytest.raises(ValueError):
        evidence.process(mic[:100], reference[:100])
