"""The listening front on its own: what the detector hears, its tentative stage, the echo
reference kept in step with playback, and the residual audio kept for an utterance."""

from __future__ import annotations

import numpy as np
import pytest

from parley.agent.core.input import InputStage
from parley.config import AgentConfig
from tests.scripted import ScriptedDetector

FRAME = 160


def stage(detector: ScriptedDetector, echo: bool = False) -> InputStage:
    return InputStage(AgentConfig(echo_cancellation=echo), detector, FRAME)


def test_detector_events_and_the_residual_it_heard() -> None:
    listener = stage(ScriptedDetector([(320, 960)], onset_delay=160, stop_delay=320))
    events = []
    for i in range(10):
        events += [
            (e.kind, e.sample) for e in listener.process(np.full(FRAME, i, np.float32), i * FRAME)
        ]
    assert events == [("start", 320), ("stop", 960)]
    # Echo handling off: the residual is the microphone, kept for the utterance.
    assert listener.recent(320, 480).tolist() == [2.0] * FRAME
    assert listener.oldest == 0


def test_tentative_onset_only_while_the_detector_leans_towards_speech() -> None:
    listener = stage(ScriptedDetector([], tentative_spans=[(320, 640)]))
    onsets = []
    for i in range(6):
        listener.process(np.zeros(FRAME, np.float32), i * FRAME)
        onsets.append(listener.tentative_onset)
    # The scripted detector has counted i + 1 frames after frame i.
    assert onsets == [None, 320, 320, None, None, None]
    assert listener.starting is False


def test_the_echo_reference_must_stay_in_step_with_playback() -> None:
    listener = stage(ScriptedDetector([]), echo=True)
    listener.played(np.ones(FRAME, np.float32), 0)
    with pytest.raises(ValueError, match="out of step"):
        listener.played(np.ones(FRAME, np.float32), 2 * FRAME)
    listener.unplayed(FRAME // 2)  # a device dropped half of it
    listener.played(np.ones(FRAME, np.float32), FRAME // 2)
    assert listener.echo is not None
    listener.set_echo_cancellation(False)
    assert listener.echo is None
