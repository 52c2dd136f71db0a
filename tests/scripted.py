"""Test helpers: a scripted speech detector and the shared tiny model."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


@dataclass
class Event:
    kind: str
    sample: int


@dataclass
class ScriptedDetector:
    """Says the user speaks over the given sample spans, with fixed detection delays."""

    spans: list[tuple[int, int]]
    # Spans of possible speech that is never confirmed (a VAD's tentative stage).
    tentative_spans: list[tuple[int, int]] = field(default_factory=list)
    onset_delay: int = 480  # 30 ms to confirm speech
    stop_delay: int = 3200  # 200 ms of silence to call it over
    pos: int = 0
    confirm_threshold: float = 0.3  # what retune() was last told, for tests to read
    min_level_db: float = -50.0
    _started: set[int] = field(default_factory=set)
    _stopped: set[int] = field(default_factory=set)

    def push(self, samples: np.ndarray, allow: bool = True) -> list[Event]:
        self.pos += len(samples)
        out = []
        for i, (a, b) in enumerate(self.spans):
            if i not in self._started and a + self.onset_delay <= self.pos:
                self._started.add(i)
                out.append(Event("start", a))
            if i in self._started and i not in self._stopped and b + self.stop_delay <= self.pos:
                self._stopped.add(i)
                out.append(Event("stop", b))
        return out

    @property
    def speaking(self) -> bool:
        return any(a + self.onset_delay <= self.pos < b for a, b in self.spans)

    @property
    def tentative(self) -> bool:
        return any(a <= self.pos < b for a, b in self.tentative_spans)

    @property
    def run_start(self) -> int:
        return next(a for a, b in self.tentative_spans if a <= self.pos < b)

    @property
    def is_speech(self) -> bool:
        return self.speaking or self.closing_since is not None

    @property
    def closing_since(self) -> int | None:
        return next(
            (
                b
                for i, (_a, b) in enumerate(self.spans)
                if i in self._started and i not in self._stopped and b <= self.pos
            ),
            None,
        )

    def end_speech(self) -> Event | None:
        for i, (_a, b) in enumerate(self.spans):
            if i in self._started and i not in self._stopped and b <= self.pos:
                self._stopped.add(i)
                return Event("stop", b)
        return None

    @property
    def starting(self) -> bool:
        return self.tentative

    def retune(
        self, confirm_threshold: float | None = None, min_level_db: float | None = None
    ) -> None:
        if confirm_threshold is not None:
            self.confirm_threshold = confirm_threshold
        if min_level_db is not None:
            self.min_level_db = min_level_db

    def reset(self) -> None:
        self.pos = 0
        self._started.clear()
        self._stopped.clear()
