"""What the checkpoint's small heads make of the user's speech so far: whether the turn is
finished (the end-of-turn detector) and whether speech over a reply takes the turn (the
cut-in detector). Both read the streaming front end's frames of the open utterance plus
what has been heard since it was last fed, without disturbing the stream.
"""

from __future__ import annotations

from parley.agent.core.barge_in import BargeIn
from parley.agent.core.endpoint import Endpointer
from parley.agent.core.input import InputStage
from parley.agent.core.model import AgentModel
from parley.config import AgentConfig
from parley.llm.frontend import StreamingFrontEnd
from parley.llm.turn_detector import TurnDetector
from parley.speech_io.audio import SAMPLE_RATE

# The words of speech over a reply are judged once this much of it is heard (a syllable
# or two), then again every CUT_IN_EVERY_MS while it goes on.
CUT_IN_FROM_MS = 300
CUT_IN_EVERY_MS = 50


class Heads:
    """The session's view of its model's heads (absent heads answer None)."""

    def __init__(
        self, model: AgentModel, input: InputStage, turn: Endpointer, frontend: StreamingFrontEnd
    ) -> None:
        self.model = model
        self.input = input
        self.turn = turn
        self.frontend = frontend
        self.words = True  # agent.cut_in_by_words
        self._judged_at: int | None = None  # when the words over a reply were last judged

    def configure(self, config: AgentConfig) -> None:
        self.words = config.cut_in_by_words

    def _ask(self, detector: TurnDetector, now: int) -> float:
        pending = self.input.recent(self.turn.fed, now)
        return detector.probability(self.frontend.peek(pending, keep=detector.cfg.frames))

    def finished(self, now: int) -> float | None:
        """P(the user's turn is finished), when the endpointer wants to ask."""
        detector = self.model.turn_detector
        if detector is None or not self.turn.ask_due(now):
            return None
        return self._ask(detector, now)

    def takes_turn(self, now: int) -> float | None:
        """P(the speech over the reply takes the turn); None without a cut-in detector or
        with the words switched off."""
        detector = self.model.cut_in_detector
        if detector is None or not self.words:
            return None
        return self._ask(detector, now)

    def new_onset(self) -> None:
        self._judged_at = None

    def judge_words(self, now: int, barge: BargeIn) -> None:
        """Every ``CUT_IN_EVERY_MS``, the cut-in detector's word for the barge-in rules."""
        last = self._judged_at
        if last is not None and now - last < CUT_IN_EVERY_MS * SAMPLE_RATE // 1000:
            return
        takes = self.takes_turn(now)
        if takes is not None:
            self._judged_at = now
            barge.judged(takes)
