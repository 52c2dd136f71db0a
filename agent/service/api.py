"""The Python embedding API: one loaded :class:`Agent`, many :class:`AgentSession` on it.

An ``AgentSession`` is a :class:`~parley.agent.core.session.DuplexSession` plus the controls an
application needs beside audio: settings that can change, and truncation of the last reply
to what the user really heard. Its events are the duplex session's own typed events
(``parley.agent.core.events``), the same ones the harness and the terminal use.
"""

from __future__ import annotations

import itertools
import logging
import math
import secrets
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from parley.agent.core.bus import EventBus
from parley.agent.core.clock import Clock
from parley.agent.core.events import (
    AudioPlayed,
    AudioRewound,
    Event,
    ReplyEnded,
    ReplyStarted,
    UserTurnEnded,
)
from parley.agent.core.input import SpeechDetector
from parley.agent.core.model import AgentModel
from parley.agent.core.session import DuplexSession
from parley.agent.core.text import text_of
from parley.agent.service.audio import INPUT_QUALITY, MODEL_RATE
from parley.agent.service.settings import SessionSettings
from parley.config import AgentConfig, ParleyConfig, load_config
from parley.errors import AudioInputError, ParleyError
from parley.llm.schedule import heard_prefix
from parley.speech_io.audio import prepare_chunk
from parley.speech_io.resample import Resampler

log = logging.getLogger(__name__)

DetectorFactory = Callable[[AgentConfig, SessionSettings], SpeechDetector]

# The most audio one push_audio call takes. Pushing is synchronous and runs the VAD, echo
# canceller and turn logic frame by frame (about a tenth of real time on a loaded CPU), so
# a long push would stall the event loop, and every other session on it, for seconds.
MAX_PUSH_SECONDS = 10.0
# Unread events() an iterator keeps: about a minute of a conversation (audio_played every
# 10-20 ms dominates); past it the oldest go, counted in events_dropped.
MAX_PENDING_EVENTS = 4096
_PUSH_HINT = (
    "push_audio takes mono samples of shape (n,), float32 in [-1, 1] or int16, "
    "with sample_rate the rate they were recorded at (resampled to 16 kHz)"
)


class SessionControlError(ParleyError):
    """A control that cannot apply to the session as it stands; ``code`` names the case."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


class AudioPushError(AudioInputError, ValueError):
    """Samples :meth:`AgentSession.push_audio` refused; the session took none of them."""


class CapacityError(ParleyError):
    """The agent already runs its maximum number of sessions."""


class SessionIdError(ParleyError):
    """A session id that is empty or already open on the agent."""


@dataclass
class _ReplyRecord:
    reply_id: int
    running: bool = True
    played: int = 0  # reply samples played so far (16 kHz), final once the reply ended
    last_in_context: bool = True  # no user turn went into the LM context after it


class AgentSession:
    """One conversation on an :class:`Agent`: push microphone audio, pull speaker audio,
    read events, control it. Open it with :meth:`Agent.open_session`."""

    def __init__(
        self,
        agent: Agent,
        session_id: str,
        settings: SessionSettings,
        clock: Clock | None,
        detector_factory: DetectorFactory | None,
    ) -> None:
        self.agent = agent
        self.id = session_id
        self.settings = settings
        self._clock = clock
        self._detector_factory = detector_factory
        self._bus = EventBus(max_pending=MAX_PENDING_EVENTS, name=session_id)
        self._last_reply: _ReplyRecord | None = None
        self._resampler: Resampler | None = None
        self._closed = False
        self.session = self._build()

    def _build(self) -> DuplexSession:
        cfg = self.settings.agent_config(self.agent.config.agent)
        detector = None
        if self._detector_factory is not None:
            detector = self._detector_factory(cfg, self.settings)
        elif self.settings.vad_threshold is not None:
            from parley.speech_io.vad import StreamingVAD, VADOptions

            detector = StreamingVAD(
                VADOptions(frame_ms=cfg.frame_ms, confirm_threshold=self.settings.vad_threshold)
            )
        session = DuplexSession(self.agent.model, cfg, clock=self._clock, detector=detector)
        session.subscribe(self._on_event)
        return session

    # ------------------------------------------------------------------ events

    def subscribe(self, listener: Callable[[Event], None]) -> None:
        """Call ``listener`` synchronously with every event (it must not block)."""
        self._bus.subscribe(listener)

    def events(self) -> AsyncIterator[Event]:
        """Every event from now on, until the session closes.

        Each iterator holds at most :data:`MAX_PENDING_EVENTS`
        unread events; past that its oldest are dropped (counted in :attr:`events_dropped`,
        logged once), so an iterator left unread cannot grow without bound. Use
        :meth:`subscribe` to see every event."""
        return self._bus.events()

    @property
    def events_dropped(self) -> int:
        """Events dropped from :meth:`events` iterators that fell behind."""
        return self._bus.dropped

    def _on_event(self, event: Event) -> None:
        rec = self._last_reply
        # Kept live so that a truncate of the reply in flight can be checked before it cuts
        # anything; played positions are in the reply's own samples.
        live = rec if rec is not None and rec.running else None
        match event:
            case ReplyStarted():
                self._last_reply = _ReplyRecord(event.reply_id)
            case AudioPlayed() if live is not None and event.reply_id == live.reply_id:
                live.played = event.end
            case AudioRewound() if live is not None and event.reply_id == live.reply_id:
                live.played = event.position
            case ReplyEnded() if rec is not None:
                rec.running = False
                rec.played = event.played
            case UserTurnEnded() if rec is not None and not rec.running:
                rec.last_in_context = False  # the engine closed that reply behind a new turn
        self._bus.emit(event)

    # ------------------------------------------------------------------ audio

    def push_audio(self, samples: np.ndarray, sample_rate: int = MODEL_RATE) -> None:
        """Microphone samples, consecutive: mono ``(n,)``, float32 in [-1, 1] or int16
        (scaled by 1/32768), recorded at ``sample_rate`` Hz (a whole number; any rate
        other than 16 kHz is resampled, as the CLI resamples files).

        At most :data:`MAX_PUSH_SECONDS` of audio per call: the call is synchronous and
        processes frame by frame, so push as the microphone delivers (10-100 ms chunks),
        or split a recording into slices and ``await asyncio.sleep(0)`` between them.

        Anything else (stereo, NaN or infinite samples, other integer types, a fractional
        rate, a longer push) raises :class:`AudioPushError` before the session takes any of
        it: a refused push leaves the session as it was."""
        samples = self._checked(samples, sample_rate)
        sample_rate = int(sample_rate)
        if sample_rate != MODEL_RATE:
            if self._resampler is None or self._resampler.src != sample_rate:
                self._resampler = Resampler(sample_rate, MODEL_RATE, INPUT_QUALITY)
            samples = self._resampler.push(samples)
        self.session.push_input(samples)

    @staticmethod
    def _checked(samples: np.ndarray, sample_rate: int) -> np.ndarray:
        try:
            x = prepare_chunk(samples, sample_rate, name="push_audio")
        except AudioInputError as exc:
            raise AudioPushError(f"{exc}; {_PUSH_HINT}") from None
        if len(x) > MAX_PUSH_SECONDS * sample_rate:
            raise AudioPushError(
                f"push_audio: {len(x) / sample_rate:.1f} s of audio in one call; at most "
                f"{MAX_PUSH_SECONDS:g} s per call (push in chunks as they are recorded)"
            )
        return x

    def pull_audio(self, n: int) -> np.ndarray:
        """The next ``n`` samples (16 kHz) to play; silence when nothing is playing."""
        return self.session.pull_output(n)

    def connect_devices(self, input_device=None, output_device=None, **options):
        """Sound devices for this session (``async with session.connect_devices(): ...``).
        Settle the settings first: a settings rebuild does not carry devices over."""
        from parley.agent.core.live import connect_devices

        return connect_devices(self.session, input_device, output_device, **options)

    # ------------------------------------------------------------------ control

    @property
    def pristine(self) -> bool:
        """Nothing has been heard or said yet, so the session can still be rebuilt."""
        return self.session.input_sample == 0 and self._last_reply is None

    @property
    def reply_running(self) -> bool:
        return self._last_reply is not None and self._last_reply.running

    async def interrupt(self) -> bool:
        """Cut the reply in flight, keeping in the history what was played; False if none."""
        if not self.reply_running:
            return False
        await self.session.interrupt()
        return True

    async def update(self, settings: SessionSettings) -> SessionSettings:
        """Apply new settings. Before any audio the duplex session is rebuilt with them;
        after, they apply live from the next frame (``DuplexSession.reconfigure``, and the
        VAD's confirmation threshold in place)."""
        if settings.shapes_session != self.settings.shapes_session:
            if self.pristine:
                old = self.session
                self.settings = settings
                self.session = self._build()
                await old.aclose()
            else:
                self.session.reconfigure(settings.agent_config(self.agent.config.agent))
                self._set_vad_threshold(settings.vad_threshold)
        self.settings = settings
        return settings

    def _set_vad_threshold(self, threshold: float | None) -> None:
        from parley.speech_io.vad import VADOptions

        value = VADOptions().confirm_threshold if threshold is None else threshold
        self.session.input.detector.retune(confirm_threshold=value)

    def check_truncate(self, audio_end_ms: int, reply_id: int | None = None) -> None:
        """Raise the :class:`SessionControlError` that :meth:`truncate` would, changing
        nothing; a refused truncate must not have cut the reply in flight."""
        rec = self._last_reply
        if rec is None:
            raise SessionControlError("item_not_found", "there is no reply to truncate")
        if (reply_id is not None and reply_id != rec.reply_id) or not rec.last_in_context:
            raise SessionControlError(
                "item_not_truncatable",
                "a user turn came after this reply; only the most recent reply can be cut",
            )
        if audio_end_ms < 0:
            raise SessionControlError("invalid_value", "audio_end_ms must not be negative")
        # A client measures in its own rate: allow a millisecond of rounding. For a reply
        # in flight ``played`` is what played so far, which the cut keeps.
        if audio_end_ms * MODEL_RATE // 1000 > rec.played + MODEL_RATE // 1000:
            raise SessionControlError(
                "invalid_value",
                f"audio_end_ms {audio_end_ms} is past the reply's audio "
                f"({rec.played * 1000 // MODEL_RATE} ms played)",
            )

    async def truncate(self, audio_end_ms: int, reply_id: int | None = None) -> str:
        """Keep only the first ``audio_end_ms`` of the last reply in the conversation, as a
        Realtime client does after playing part of it. A reply still in flight is cut first.
        Returns the text the kept audio carries. Everything is checked before anything
        changes (:meth:`check_truncate`)."""
        self.check_truncate(audio_end_ms, reply_id)
        rec = self._last_reply
        assert rec is not None
        if rec.running:
            await self.interrupt()  # the reply ends with what played: rec.played is final
        # A reply started ahead in the user's pause was started on the context this changes.
        await self.session.discard_held()
        samples = min(audio_end_ms * MODEL_RATE // 1000, rec.played)
        model, context = self.agent.model, self.session.context
        tokens: list[int] = list(context.last_reply_tokens)
        classes = [model.checkpoint.manifest.vocab.classify(t) for t in tokens]
        keep = min(heard_prefix(classes, math.ceil(samples / model.samples_per_token)), len(tokens))
        context.truncate_reply(keep)
        heard = text_of(model.checkpoint.tokenizer, tokens[:keep], classes[:keep])
        rec.played = samples
        last = self.session.history[-1] if self.session.history else None
        if last is not None and last.role == "assistant":
            last.text, last.status = heard, "interrupted"
        return heard

    async def settle(self) -> None:
        """Wait for background work to catch up (virtual-time driving and tests)."""
        await self.session.settle()

    async def aclose(self) -> None:
        """Abort whatever this session runs on the engine and free it."""
        if self._closed:
            return
        self._closed = True
        try:
            await self.session.aclose()
        finally:
            self._bus.close()
            self.agent._forget(self)


class Agent:
    """A loaded model serving any number of sessions (one engine, shared)."""

    def __init__(
        self, model: AgentModel, max_sessions: int = 0, config: ParleyConfig | None = None
    ) -> None:
        self.model = model
        # Sessions take their agent settings from here; another config than the model's
        # own may change conversation behaviour, not the model or engine.
        self.config: ParleyConfig = config or model.config
        self.max_sessions = max_sessions  # 0: no limit
        self._sessions: dict[str, AgentSession] = {}
        self._ids = itertools.count(1)

    @classmethod
    def load(
        cls,
        checkpoint: str | Path | None = None,
        config: ParleyConfig | str | Path | None = None,
        max_sessions: int = 0,
    ) -> Agent:
        """Load a checkpoint (default: the tiny random one, built once and cached) with a
        config (a :class:`ParleyConfig`, a preset name or a YAML file; default ``tiny``)."""
        from parley.agent.runtime import default_checkpoint

        cfg = config if isinstance(config, ParleyConfig) else load_config(config or "tiny")
        path = Path(checkpoint) if checkpoint is not None else default_checkpoint(log.info)
        return cls(AgentModel.load(path, cfg), max_sessions)

    @property
    def sessions(self) -> list[AgentSession]:
        return list(self._sessions.values())

    def open_session(
        self,
        settings: SessionSettings | None = None,
        *,
        clock: Clock | None = None,
        detector_factory: DetectorFactory | None = None,
        session_id: str | None = None,
    ) -> AgentSession:
        """A new conversation on this agent's engine (call it inside a running event loop).
        ``session_id`` defaults to a fresh one; one already open is refused
        (:class:`SessionIdError`), since the registry would lose track of the first."""
        if self.max_sessions and len(self._sessions) >= self.max_sessions:
            raise CapacityError(f"the agent already runs {self.max_sessions} sessions")
        if session_id is not None and (not session_id or session_id in self._sessions):
            raise SessionIdError(
                f"session id {session_id!r} is "
                + ("empty" if not session_id else "already open on this agent")
                + "; ids must be unique (leave session_id out for a generated one)"
            )
        sid = session_id or f"sess_{next(self._ids)}_{secrets.token_hex(4)}"
        session = AgentSession(self, sid, settings or SessionSettings(), clock, detector_factory)
        self._sessions[sid] = session
        return session

    def _forget(self, session: AgentSession) -> None:
        if self._sessions.get(session.id) is session:
            del self._sessions[session.id]

    async def aclose(self) -> None:
        """Close every session, then stop the engine."""
        for session in self.sessions:
            await session.aclose()
        await self.model.aclose()

    async def __aenter__(self) -> Agent:
        return self

    async def __aexit__(self, *exc) -> None:
        await self.aclose()
