"""One Realtime connection mapped onto one :class:`AgentSession`.

Client events become session controls (here); session events become Realtime server
events (:mod:`parley.agent.service.outbound`). Audio runs on the session's audio clock
(:class:`InputPacer`): each input frame that goes in pulls one frame of output, and the
reply samples in it go out as ``response.output_audio.delta`` at the end of the tick.
Output is thus paced at real time and the client holds about one tick of audio, so when
the session pauses on barge-in the audio stops at the client within a tick, and what was
sent is what was played.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any

import numpy as np

from parley.agent.core.clock import Clock, MonotonicClock
from parley.agent.service import protocol as P
from parley.agent.service.api import AgentSession, SessionControlError
from parley.agent.service.audio import INPUT_QUALITY, MODEL_RATE
from parley.agent.service.budget import Budget
from parley.agent.service.limits import ServiceLimits
from parley.agent.service.metrics import ServiceMetrics
from parley.agent.service.outbound import Outbound, SessionLog
from parley.agent.service.pacing import BufferFullError, InputPacer
from parley.agent.service.session_config import WireConfig, session_object
from parley.speech_io.pcm16 import AudioFormatError, decode_pcm16
from parley.speech_io.resample import Resampler

log = logging.getLogger("parley.service")


class RealtimeBridge:
    """The protocol logic of one connection; the transport hands it messages and sends
    what it gives to ``send`` (which must not block)."""

    def __init__(
        self,
        session: AgentSession,
        send: Callable[[dict[str, Any]], None],
        limits: ServiceLimits | None = None,
        metrics: ServiceMetrics | None = None,
        clock: Clock | None = None,
        model_name: str = "parley",
    ) -> None:
        self.session = session
        self.limits = limits or ServiceLimits()
        self.metrics = metrics or ServiceMetrics()
        self.clock = clock or MonotonicClock()
        self.log = SessionLog(log, {"session_id": session.id})
        self.out = Outbound(session.id, send, self.metrics, self.log, self.clock)
        self.out.wire = WireConfig(model=model_name)
        self.frame = session.session.config.frame_ms * MODEL_RATE // 1000
        self.pacer = InputPacer(
            self.clock,
            self.frame,
            int(self.limits.max_buffered_audio_s * MODEL_RATE),
            self.limits.input_hold_ms / 1000,
            int(self.limits.max_catch_up_s * MODEL_RATE),
        )
        self._in = Resampler(self.wire.input_rate, MODEL_RATE, INPUT_QUALITY)
        self._uncommitted: list[np.ndarray] = []  # turn detection off: appended audio
        self._committed: list[np.ndarray] = []
        self._manual_samples = 0
        self._busy = False  # a committed clip is going in; the clock waits
        # Committed clips go in faster than real time; over time they may not: beyond a
        # burst of max_buffered_audio_s, the connection waits for the clock to catch up.
        self._clip_budget = Budget(1.0, self.limits.max_buffered_audio_s, self.clock.now)
        session.subscribe(self.out.on_event)

    @property
    def wire(self) -> WireConfig:
        return self.out.wire

    def open(self) -> None:
        """Say hello: the first server event of every connection."""
        self.out.emit({"type": "session.created", "session": self._session_object()})

    def _session_object(self) -> dict[str, Any]:
        duplex = self.session.session
        return session_object(
            self.session.id,
            self.wire,
            self.session.settings,
            duplex.config,
            duplex.turn_detection,
        )

    @property
    def _detection(self) -> str:
        return self.session.session.turn_detection

    # ------------------------------------------------------------------ client events

    def backoff(self) -> float:
        """Seconds this connection must wait before its next message: committed audio
        beyond real time (plus a burst) is paid for by its sender."""
        return self._clip_budget.wait()

    async def handle(self, raw: str | bytes) -> None:
        """One client message; every problem with it becomes an ``error`` event."""
        event_id = None
        try:
            event = P.parse_client_event(raw)
            event_id = event.event_id
            await self._dispatch(event)
        except P.ProtocolError as exc:
            self.out.error(exc)
        except SessionControlError as exc:
            self.out.error(P.ProtocolError(exc.code, str(exc), event_id=event_id))

    async def _dispatch(self, event: P.ClientEvent) -> None:
        eid = event.event_id
        if isinstance(event, P.InputAudioBufferAppend):
            self._append(event.audio, eid)
        elif isinstance(event, P.SessionUpdate):
            await self._session_update(event)
        elif isinstance(event, P.InputAudioBufferCommit):
            self._commit(eid)
        elif isinstance(event, P.InputAudioBufferClear):
            self._clear()
        elif isinstance(event, P.ResponseCreate):
            await self._response_create(eid)
        elif isinstance(event, P.ResponseCancel):
            await self._response_cancel(event.response_id, eid)
        elif isinstance(event, P.ConversationItemTruncate):
            await self._truncate(event, eid)

    def _append(self, audio: str, eid: str | None) -> None:
        try:
            pcm = decode_pcm16(audio)
        except AudioFormatError as exc:
            raise P.ProtocolError("invalid_audio", str(exc), param="audio", event_id=eid) from None
        samples = self._in.push(pcm)
        try:
            if self.wire.turn_detection is None:
                total = self._manual_samples + len(samples)
                if total > self.pacer.max_buffered:
                    raise BufferFullError(
                        "uncommitted and committed audio would exceed "
                        f"{self.limits.max_buffered_audio_s:g} s"
                    )
                self._uncommitted.append(samples)
                self._manual_samples = total
            else:
                self.pacer.append(samples)
        except BufferFullError as exc:
            raise P.ProtocolError("input_audio_buffer_full", str(exc), event_id=eid) from None
        self.metrics.audio_in_s += len(pcm) / self.wire.input_rate
        # Audio that arrives is already due: hearing it now rather than at the next tick
        # takes up to a tick off every barge-in and every reply's start.
        self.advance()

    def _commit(self, eid: str | None) -> None:
        if self.wire.turn_detection is not None:
            raise P.ProtocolError(
                "commit_not_supported",
                f"with {self._detection} the server ends turns itself; set "
                "audio.input.turn_detection to null to commit by hand",
                event_id=eid,
            )
        if not self._uncommitted:
            raise P.ProtocolError(
                "input_audio_buffer_commit_empty", "the input audio buffer is empty", event_id=eid
            )
        self._committed.extend(self._uncommitted)
        self._uncommitted = []
        item = self.out.new_item()
        self.out.emit(
            {
                "type": "input_audio_buffer.committed",
                "item_id": item,
                "previous_item_id": self.out.previous_item,
            }
        )
        self.out.previous_item = item

    def _clear(self) -> None:
        if self.wire.turn_detection is None:
            self._manual_samples -= sum(len(a) for a in self._uncommitted)
            self._uncommitted = []
        else:
            self.pacer.clear()
        self.out.emit({"type": "input_audio_buffer.cleared"})

    async def _response_create(self, eid: str | None) -> None:
        if self.session.reply_running:
            raise P.ProtocolError(
                "conversation_already_has_active_response",
                "a response is in progress; cancel it first",
                event_id=eid,
            )
        if self.wire.turn_detection is not None:
            raise P.ProtocolError(
                "response_create_not_supported",
                f"with {self._detection} a response starts when the user's turn ends; set "
                "audio.input.turn_detection to null to ask for one by hand",
                event_id=eid,
            )
        if not self._committed:
            raise P.ProtocolError(
                "no_user_audio", "commit user audio before asking for a response", event_id=eid
            )
        audio = np.concatenate(self._committed)
        self._committed = []
        self._manual_samples = sum(len(a) for a in self._uncommitted)
        await self._take_clip(audio)
        if not self.session.reply_running and self.out.response is None:
            raise P.ProtocolError(
                "no_speech_detected",
                "the committed audio holds no speech the server could hear",
                event_id=eid,
            )

    async def _take_clip(self, audio: np.ndarray) -> None:
        """A committed clip goes in at once (faster than real time), followed by the
        silence that ends the turn; the clock then goes on from after it."""
        cfg = self.session.session.config
        # Endpoint silence, plus room for the VAD to call the speech over.
        silence_frames = (cfg.endpoint_silence_ms + 1000) // cfg.frame_ms
        pad = (-len(audio)) % self.frame
        audio = np.concatenate([audio, np.zeros(pad, dtype=np.float32)])
        self._clip_budget.spend(len(audio) / MODEL_RATE)
        self._busy = True
        try:
            self._start_clock()
            for i in range(0, len(audio), self.frame):
                self._step(audio[i : i + self.frame])
                self.pacer.took(self.frame)
                if i // self.frame % 50 == 49:
                    self.out.flush_audio()
                    await asyncio.sleep(0)  # other sessions run between half-seconds
            silence = np.zeros(self.frame, dtype=np.float32)
            for _ in range(silence_frames):
                if self.session.reply_running:
                    break
                self._step(silence)
                self.pacer.took(self.frame)
                # A reply started ahead in a pause of the clip and thrown away is rolled
                # back in the background; the turn cannot end before it is.
                await self.session.session.rolled_back()
            self.out.flush_audio()
        finally:
            self._busy = False

    async def _response_cancel(self, response_id: str | None, eid: str | None) -> None:
        resp = self.out.response
        if resp is None or not self.session.reply_running:
            raise P.ProtocolError(
                "response_cancel_not_active", "there is no response to cancel", event_id=eid
            )
        if response_id is not None and response_id != resp.id:
            raise P.ProtocolError(
                "response_not_found",
                f"response {response_id!r} is not the one in progress",
                param="response_id",
                event_id=eid,
            )
        resp.cancel_reason = "client_cancelled"
        await self.session.interrupt()

    async def _truncate(self, event: P.ConversationItemTruncate, eid: str | None) -> None:
        reply_id = self.out.items.get(event.item_id)
        if reply_id is None:
            raise P.ProtocolError(
                "item_not_found",
                f"no assistant item {event.item_id!r} in this session",
                param="item_id",
                event_id=eid,
            )
        try:
            # All of it is checked before the reply in flight is cut or marked: a refused
            # truncate leaves the session as it was.
            self.session.check_truncate(event.audio_end_ms, reply_id=reply_id)
        except SessionControlError as exc:
            param = "audio_end_ms" if exc.code == "invalid_value" else "item_id"
            raise P.ProtocolError(exc.code, str(exc), param=param, event_id=eid) from None
        resp = self.out.response
        if resp is not None and resp.item_id == event.item_id:
            resp.cancel_reason = "client_cancelled"
        try:
            heard = await self.session.truncate(event.audio_end_ms, reply_id=reply_id)
        except SessionControlError as exc:
            # The reply may have ended between the check and the cut: still a clean refusal.
            raise P.ProtocolError(exc.code, str(exc), param="item_id", event_id=eid) from None
        self.log.info("truncated %s at %d ms: %r", event.item_id, event.audio_end_ms, heard)
        self.out.emit(
            {
                "type": "conversation.item.truncated",
                "item_id": event.item_id,
                "content_index": 0,
                "audio_end_ms": event.audio_end_ms,
            }
        )

    async def _session_update(self, event: P.SessionUpdate) -> None:
        wire, settings = self.wire.updated(event.session, self.session.settings, event.event_id)
        await self.session.update(settings)
        if wire.input_rate != self.wire.input_rate:
            self._in = Resampler(wire.input_rate, MODEL_RATE, INPUT_QUALITY)
        if wire.turn_detection is not None and self.wire.turn_detection is None:
            self._uncommitted, self._committed, self._manual_samples = [], [], 0
        self.out.wire = wire
        self.out.emit({"type": "session.updated", "session": self._session_object()})

    # ------------------------------------------------------------------ the audio clock

    def _start_clock(self) -> None:
        self.pacer.start()
        if self.session.session.output_sample == 0:
            # The first frame plays while the first is recorded (as the harness drives it).
            self._pull()

    def advance(self) -> int:
        """Run every frame that is due; returns how many went in."""
        if self._busy:
            return 0
        frames = self.pacer.due_frames()
        if frames:
            self._start_clock()
        for frame in frames:
            self._step(frame)
        self.out.flush_audio()
        return len(frames)

    async def run(self) -> None:
        """Advance the audio clock every tick until cancelled."""
        tick = self.limits.tick_ms / 1000
        while True:
            self.advance()
            await asyncio.sleep(tick)

    def _step(self, frame: np.ndarray) -> None:
        self.session.push_audio(frame)
        self._pull()

    def _pull(self) -> None:
        self.out.begin_pull()
        out = self.session.pull_audio(self.frame)
        self.out.end_pull(out)
