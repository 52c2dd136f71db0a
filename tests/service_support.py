"""Helpers for the service tests: an agent with short replies, and a bridge in virtual time."""

from __future__ import annotations

import base64
import json

import numpy as np

from parley.agent.core.clock import VirtualClock
from parley.agent.service.api import Agent
from parley.agent.service.bridge import RealtimeBridge
from parley.agent.service.limits import ServiceLimits
from tests.scripted import ScriptedDetector

SR = 16000
WIRE_SR = 24000
TICK = 0.02
# Replies of 2-2.5 s: long enough to cut into, short enough for quick tests.
AGENT = {"reply_min_s": 2.0, "reply_max_s": 2.5, "echo_cancellation": False}


def short_reply_agent(model, max_sessions: int = 0) -> Agent:
    cfg = model.config.model_copy(update={"agent": model.config.agent.model_copy(update=AGENT)})
    return Agent(model, max_sessions, config=cfg)


def speechlike(seconds: float, rate: int = WIRE_SR, seed: int = 0) -> np.ndarray:
    n = int(seconds * rate)
    t = np.arange(n) / rate
    rng = np.random.default_rng(seed)
    return (0.2 * np.sin(2 * np.pi * 180 * t) + 0.05 * rng.standard_normal(n)).astype(np.float32)


def b64(samples: np.ndarray) -> str:
    pcm = np.clip(np.round(samples * 32768), -32768, 32767).astype("<i2")
    return base64.b64encode(pcm.tobytes()).decode()


def delta_samples(event: dict) -> int:
    return len(base64.b64decode(event["delta"])) // 2


class BridgeRig:
    """A bridge whose audio clock is virtual; the user's speech is scripted in seconds on
    the session's timeline (which starts with the first audio)."""

    def __init__(
        self, agent: Agent, spans=(), limits: ServiceLimits | None = None, tentative=()
    ) -> None:
        self.clock = VirtualClock()
        scripted = [(int(a * SR), int(b * SR)) for a, b in spans]
        unsure = [(int(a * SR), int(b * SR)) for a, b in tentative]
        self.session = agent.open_session(
            clock=self.clock,
            detector_factory=lambda cfg, settings: ScriptedDetector(scripted, unsure),
        )
        self.sent: list[dict] = []
        self.bridge = RealtimeBridge(self.session, self.sent.append, limits, clock=self.clock)
        self.bridge.open()

    async def send(self, **event) -> None:
        await self.bridge.handle(json.dumps(event))

    async def tick(self, append: np.ndarray | None = None) -> None:
        if append is not None:
            await self.send(type="input_audio_buffer.append", audio=b64(append))
        self.clock.advance(TICK)
        self.bridge.advance()
        await self.session.settle()

    async def stream(self, audio: np.ndarray) -> None:
        """Client audio (24 kHz) at real time, a tick at a time."""
        step = int(TICK * WIRE_SR)
        for i in range(0, len(audio), step):
            await self.tick(audio[i : i + step])

    async def idle(self, seconds: float) -> None:
        for _ in range(round(seconds / TICK)):
            await self.tick()

    def types(self, skip_deltas: bool = True) -> list[str]:
        return [e["type"] for e in self.sent if not (skip_deltas and e["type"].endswith(".delta"))]

    def of(self, kind: str) -> list[dict]:
        return [e for e in self.sent if e["type"] == kind]

    def errors(self) -> list[str]:
        return [e["error"]["code"] for e in self.of("error")]
