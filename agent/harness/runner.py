"""Playing a scenario through a duplex session in virtual time, and recording everything.

Steps placed ``at`` a time are mixed into the user channel up front; steps placed
``after_reply_start`` are mixed in when the reply they follow starts to play. The echo
path, if the scenario has one, feeds what the agent played back into its microphone.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from parley.agent.clock import VirtualClock
from parley.agent.harness.drive import drive
from parley.agent.harness.record import RunRecord, UserSegment
from parley.agent.harness.render import StepAudio, render_step
from parley.agent.harness.scenario import Scenario, Step
from parley.agent.model import AgentModel
from parley.agent.session import DuplexSession
from parley.config import AgentConfig, validate
from parley.speech_io.echo_path import EchoPath
from parley.speech_io.sources import VirtualRoom

SR = 16000
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


async def run_scenario(
    model: AgentModel, scenario: Scenario, base: AgentConfig, seed: int = 0
) -> RunRecord:
    """Run ``scenario`` in virtual time and return everything it produced."""
    rendered = [
        render_step(s, scenario.directory, seed=seed + i) for i, s in enumerate(scenario.timeline)
    ]
    fixed_end = max(
        (
            s.at + a.duration_s
            for s, a in zip(scenario.timeline, rendered, strict=True)
            if s.at is not None
        ),
        default=0.0,
    )
    dynamic_s = sum(
        a.duration_s for s, a in zip(scenario.timeline, rendered, strict=True) if s.at is None
    )
    allowance = REPLY_ALLOWANCE_S if dynamic_s else 0.0
    total = int(scenario.end_time(fixed_end + dynamic_s + allowance) * SR)

    config = agent_config_for(base, scenario)
    clock = VirtualClock()
    session = DuplexSession(model, config, clock=clock)
    events: list[dict] = []
    session.subscribe(lambda e: events.append(e.to_dict()))
    timeline = _Timeline(total)
    waiting: list[_Pending] = []
    previous_end: int | None = 0
    for i, (step, audio) in enumerate(zip(scenario.timeline, rendered, strict=True)):
        if step.at is not None:
            at = int(step.at * SR)
            timeline.place(i, step, audio, at)
            previous_end = at + len(audio.samples)
        else:
            waiting.append(_Pending(i, step, audio, previous_end))
            previous_end = None  # known once this step is placed

    replies_started = 0

    def on_event(event) -> None:
        nonlocal replies_started
        if event.type != "first_audio":
            return
        replies_started += 1
        for p in list(waiting):
            if p.step.reply is not None:
                follows = replies_started == p.step.reply
            else:  # the next reply to start after the step before this one
                follows = p.after is not None and event.output_sample >= p.after
            if not follows:
                continue
            # The microphone has already recorded up to the session's input position.
            at = max(event.output_sample + int(p.step.after_reply_start * SR), session.input_sample)
            timeline.place(p.index, p.step, p.audio, at)
            waiting.remove(p)
            for q in waiting:
                if q.index == p.index + 1:
                    q.after = at + len(p.audio.samples)

    session.subscribe(on_event)
    echo = None
    if scenario.echo is not None:
        e = scenario.echo
        echo = EchoPath(e.delay_ms, e.gain_db, room_ms=e.room_ms, noise_db=e.noise_db, seed=seed)
    room = VirtualRoom(timeline.user, echo)
    try:
        await drive(session, clock, room, room, total)
    finally:
        await session.aclose()
    return RunRecord(
        scenario=scenario,
        sample_rate=SR,
        input=timeline.user,
        mic=room.mic,
        output=room.played,
        events=events,
        segments=sorted(timeline.segments, key=lambda s: s.onset_sample),
        endpoint_silence_ms=float(config.endpoint_silence_ms),
        model_compute_s=session.compute_s,
        realtime=False,
    )
