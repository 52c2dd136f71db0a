"""What one scenario run produced: the audio on both sides, the events, the user segments.

The runner fills a :class:`RunRecord`; :mod:`~parley.agent.harness.metrics` scores it and
:mod:`~parley.agent.harness.report` writes it out. All positions are sample indices on
one time base: sample ``i`` of ``input``, ``mic`` and ``output`` happened at
``i / sample_rate`` seconds after run start, the same clock as each event's ``t``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from parley.agent.harness.scenario import Scenario

__all__ = ["RunRecord", "UserSegment"]


@dataclass(frozen=True)
class UserSegment:
    """One user step's content, as absolute input sample indices ``[onset, offset)``.

    ``step`` is the step's index in the scenario timeline; ``role`` its effective role.
    """

    step: int
    role: str
    onset_sample: int
    offset_sample: int

    def __post_init__(self) -> None:
        if not 0 <= self.onset_sample <= self.offset_sample:
            raise ValueError(
                f"segment of step {self.step}: need 0 <= onset ({self.onset_sample}) "
                f"<= offset ({self.offset_sample})"
            )


@dataclass
class RunRecord:
    """Everything a scenario run leaves behind, for scoring and reports.

    ``input``: what the user said (no echo); ``mic``: what the microphone heard (user
    plus echo plus noise); ``output``: what the agent played, silence included, the same
    length as ``input``. ``events`` are ``Event.to_dict()`` in emission order.
    ``model_compute_s`` is the LM + vocoder compute time spent (informative only).
    """

    scenario: Scenario
    sample_rate: int
    input: np.ndarray
    mic: np.ndarray
    output: np.ndarray
    events: list[dict[str, Any]] = field(default_factory=list)
    segments: list[UserSegment] = field(default_factory=list)
    endpoint_silence_ms: float = 500.0
    model_compute_s: float = 0.0
    realtime: bool = False
    rig_latency_ms: float = 0.0  # real-time runs: the test rig's round trip, taken out of output

    def __post_init__(self) -> None:
        if self.sample_rate <= 0:
            raise ValueError(f"sample_rate must be positive, got {self.sample_rate}")
        for name in ("input", "mic", "output"):
            if np.asarray(getattr(self, name)).ndim != 1:
                raise ValueError(f"{name} must be mono, shape (samples,)")
        if len(self.output) != len(self.input):
            # Every metric compares positions across the two; a misaligned pair would
            # score silently wrong rather than fail.
            raise ValueError(
                f"output ({len(self.output)} samples) must be as long as input "
                f"({len(self.input)} samples) and time-aligned with it"
            )

    @property
    def duration_s(self) -> float:
        """Length of the run in seconds."""
        return len(self.input) / self.sample_rate

    @property
    def name(self) -> str:
        """The scenario's name."""
        return self.scenario.name
