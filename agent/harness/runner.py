"""Playing a scenario through a duplex session in virtual time, and recording everything.

Steps placed ``at`` a time are mixed into the user channel up front; steps placed
``after_reply_start`` are mixed in when the reply they follow starts to play. The echo
path, if the scenario has one, feeds what the agent played back into its microphone.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from parley.agent.core.clock import VirtualClock
from parley.agent.core.events import FirstAudio
from parley.agent.core.model import AgentModel
from parley.agent.core.session import DuplexSession
from parley.agent.harness.drive import drive
from parley.agent.harness.record import RunRecord, UserSegment
from parley.agent.harness.render import StepAudio, render_step
from parley.agent.harness.scenario import Scenario, Step
from parley.config import AgentConfig, validate
from parley.speech_io.audio import SAMPLE_RATE as SR
from parley.speech_io.echo_path import EchoPath
from parley.speech_io.sources import VirtualRoom

# Room left for replies when a scenario places steps relative to them and gives no duration.
REPLY_ALLOWANCE_S = 10.0


@dataclass
class _Pending:
    index: int
    step: Step
    audio: StepAudio
    after: int | None  # end sample of the step before it, once that one is placed


class _Timeline:
    """The user channel and its ground truth, filled in as the run goes."""

    def __init__(self, n: int) -> None:
        self.user = np.zeros(n, dtype=np.float32)
        self.segments: list[UserSegment] = []

    def place(self, index: int, step: Step, audio: StepAudio, at: int) -> None:
        end = min(len(self.user), at + len(audio.samples))
        if end > at:
            # Mixed, not overwritten: a clip's trailing silence may overlap the next clip.
            self.user[at:end] += audio.samples[: end - at]
        role = step.effective_role
        if role is not None and audio.offset > audio.onset:
            self.segments.append(UserSegment(index, role, at + audio.onset, at + audio.offset))


def agent_config_for(base: AgentConfig, scenario: Scenario) -> AgentConfig:
    """``base`` with the scenario's settings and reply bounds applied."""
    return validate({**base.model_dump(), **scenario.agent_overrides()}, AgentConfig, scenario.name)


class ScenarioScript:
    """A scenario rendered and ready to play: the user channel and its ground truth.

    Steps placed ``at`` a time are in the channel from the start; the others are placed by
    :meth:`reply_started` when the reply they follow starts to play.
    """

    def __init__(self, scenario: Scenario, seed: int = 0) -> None:
        self.scenario = scenario
        self.seed = seed
        steps = scenario.timeline
        rendered = [render_step(s, scenario.directory, seed=seed + i) for i, s in enumerate(steps)]
        fixed_end = max(
            (s.at + a.duration_s for s, a in zip(steps, rendered, strict=True) if s.at is not None),
            default=0.0,
        )
        dynamic_s = sum(a.duration_s for s, a in zip(steps, rendered, strict=True) if s.at is None)
        allowance = REPLY_ALLOWANCE_S if dynamic_s else 0.0
        self.total = int(scenario.end_time(fixed_end + dynamic_s + allowance) * SR)
        self.timeline = _Timeline(self.total)
        self.waiting: list[_Pending] = []
        self.replies_started = 0
        previous_end: int | None = 0
        for i, (step, audio) in enumerate(zip(steps, rendered, strict=True)):
            if step.at is not None:
                at = int(step.at * SR)
                self.timeline.place(i, step, audio, at)
                # Where its content ends: a reply may start in the clip's trailing silence.
                previous_end = at + audio.offset
            else:
                self.waiting.append(_Pending(i, step, audio, previous_end))
                previous_end = None  # known once this step is placed

    @property
    def user(self) -> np.ndarray:
        return self.timeline.user

    def echo_path(self) -> EchoPath | None:
        e = self.scenario.echo
        if e is None:
            return None
        return EchoPath(
            e.delay_ms, e.gain_db, room_ms=e.room_ms, noise_db=e.noise_db, seed=self.seed
        )

    def reply_started(self, at_sample: int, earliest: int) -> None:
        """A reply's first audio sounded at ``at_sample``; place the steps that follow it,
        no earlier than ``earliest`` (what the microphone has already recorded)."""
        self.replies_started += 1
        for p in list(self.waiting):
            if p.step.reply is not None:
                follows = self.replies_started == p.step.reply
            else:  # the next reply to start after the step before this one
                follows = p.after is not None and at_sample >= p.after
            if not follows:
                continue
            assert p.step.after_reply_start is not None  # the steps without `at` wait here
            at = max(at_sample + int(p.step.after_reply_start * SR), earliest)
            self.timeline.place(p.index, p.step, p.audio, at)
            self.waiting.remove(p)
            for q in self.waiting:
                if q.index == p.index + 1:
                    q.after = at + p.audio.offset

    def record(self, **kw) -> RunRecord:
        """The run's record, with this script's channel and ground truth."""
        return RunRecord(
            scenario=self.scenario,
            sample_rate=SR,
            input=self.timeline.user,
            segments=sorted(self.timeline.segments, key=lambda s: s.onset_sample),
            **kw,
        )


async def run_scenario(
    model: AgentModel, scenario: Scenario, base: AgentConfig, seed: int = 0
) -> RunRecord:
    """Run ``scenario`` in virtual time and return everything it produced."""
    script = ScenarioScript(scenario, seed)
    config = agent_config_for(base, scenario)
    clock = VirtualClock()
    session = DuplexSession(model, config, clock=clock)
    events: list[dict] = []
    session.subscribe(lambda e: events.append(e.to_dict()))
    session.subscribe(
        lambda e: (
            script.reply_started(e.output_sample, session.input_sample)
            if isinstance(e, FirstAudio)
            else None
        )
    )
    room = VirtualRoom(script.user, script.echo_path())
    try:
        await drive(session, clock, room, room, script.total)
    finally:
        await session.aclose()
    return script.record(
        mic=room.mic,
        output=room.played,
        events=events,
        endpoint_silence_ms=float(config.endpoint_silence_ms),
        model_compute_s=session.compute_s,
        realtime=False,
    )
