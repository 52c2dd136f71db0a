"""Session events to Realtime server events, and reply audio to ``output_audio`` deltas.

The duplex session emits its events synchronously from ``push_input`` / ``pull_output``
and its producer task; each becomes zero or more server events here, in order. Reply
audio is taken from each pull (the samples its ``audio_played`` event accounts for), so
an item's audio is exactly the reply's own samples, with no silence: ``audio_end_ms`` in
a client's truncate then counts the same samples the session counts.
"""

from __future__ import annotations

import itertools
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from parley.agent.core.clock import Clock, MonotonicClock
from parley.agent.core.events import (
    AudioPlayed,
    Event,
    FirstAudio,
    Interrupted,
    PlaybackPaused,
    PlaybackResumed,
    ReplyEnded,
    ReplyStarted,
    TextDelta,
    UserSpeechEnded,
    UserSpeechStarted,
    UserTurnEnded,
)
from parley.agent.service import protocol as P
from parley.agent.service.audio import MODEL_RATE, OUTPUT_QUALITY
from parley.agent.service.errorlog import ErrorLogLimiter
from parley.agent.service.metrics import ServiceMetrics
from parley.agent.service.session_config import WireConfig
from parley.speech_io.pcm16 import encode_pcm16
from parley.speech_io.resample import Resampler


class SessionLog(logging.LoggerAdapter):
    """Log lines that start with ``session=ID`` and carry ``session_id`` as an extra."""

    def process(self, msg, kwargs):
        kwargs.setdefault("extra", self.extra)
        return f"session={self.extra['session_id']} {msg}", kwargs


@dataclass
class Response:
    """A response in flight, as the client knows it."""

    id: str
    item_id: str
    reply_id: int
    resampler: Resampler
    pending: list[np.ndarray] = field(default_factory=list)
    sent: int = 0  # samples sent, at the output rate
    cancel_reason: str = "turn_detected"


class Outbound:
    """Everything the server says on one connection."""

    def __init__(
        self,
        session_id: str,
        send: Callable[[dict[str, Any]], None],
        metrics: ServiceMetrics,
        log: SessionLog,
        clock: Clock | None = None,
    ) -> None:
        self.session_id = session_id
        self._send = send
        self.metrics = metrics
        self.log = log
        self.error_log = ErrorLogLimiter(log, clock or MonotonicClock())
        self.wire = WireConfig()
        self.response: Response | None = None
        self.items: dict[str, int] = {}  # assistant item id -> reply id
        self.previous_item: str | None = None
        self._user_item: str | None = None
        self._event_ids = itertools.count(1)
        self._item_ids = itertools.count(1)
        self._played_in_pull = 0
        self._in_pull = False
        self._tail_due = False  # the reply paused inside the current pull
        self._ended: ReplyEnded | None = None
        self._turn_end_t: float | None = None
        # Speech over a reply not yet told to the client: [start sample, end sample or None].
        self._held: tuple[int, int | None] | None = None

    def emit(self, event: dict[str, Any]) -> None:
        self._send({"event_id": f"event_{next(self._event_ids)}", **event})

    def error(self, exc: P.ProtocolError) -> None:
        self.metrics.errors[exc.code] += 1  # exact: only the log is thinned
        self.error_log.error(exc.code, exc.message)
        self.emit(P.error_event(exc))

    def new_item(self) -> str:
        return f"item_{self.session_id}_{next(self._item_ids)}"

    # ------------------------------------------------------------------ audio

    def begin_pull(self) -> None:
        self._in_pull = True

    def end_pull(self, out: np.ndarray) -> None:
        """The pull that returned ``out`` is over: keep its reply samples, and end the
        response if the pull ended it."""
        self._in_pull = False
        k, self._played_in_pull = self._played_in_pull, 0
        if k and self.response is not None:
            self.response.pending.append(out[:k])
        if self._tail_due:
            self._tail_due = False
            self._send_tail()
        if self._ended is not None:
            ended, self._ended = self._ended, None
            self._finish(ended)

    def _send_tail(self) -> None:
        """The reply stopped sounding here: what played before, the filter's tail included,
        goes out now, and a fresh filter takes whatever resumes."""
        resp = self.response
        if resp is not None:
            self.flush_audio(last=True)
            resp.resampler = Resampler(MODEL_RATE, self.wire.output_rate, OUTPUT_QUALITY)

    def flush_audio(self, last: bool = False) -> None:
        """Send the reply audio gathered since the last flush as one delta."""
        resp = self.response
        if resp is None or (not resp.pending and not last):
            return
        samples = np.concatenate(resp.pending) if resp.pending else np.zeros(0, np.float32)
        resp.pending = []
        out = resp.resampler.push(samples)
        if last:
            out = np.concatenate([out, resp.resampler.flush()])
        if not len(out):
            return
        resp.sent += len(out)
        self.metrics.audio_out_s += len(out) / self.wire.output_rate
        self.emit(
            {
                "type": "response.output_audio.delta",
                "response_id": resp.id,
                "item_id": resp.item_id,
                "output_index": 0,
                "content_index": 0,
                "delta": encode_pcm16(out),
            }
        )

    # ------------------------------------------------------------------ session events

    def on_event(self, ev: Event) -> None:
        vad = self.wire.turn_detection is not None
        match ev:
            case AudioPlayed():
                self._played_in_pull += ev.end - ev.start
            case UserSpeechStarted():
                self._user_speech_started(ev, vad)
            case UserSpeechEnded() if vad:
                if self._held is not None:
                    self._held = (self._held[0], ev.input_sample)
                else:
                    self._speech_stopped(ev.input_sample)
            case Interrupted() if self._held is not None:
                (start, stop), self._held = self._held, None
                self._speech_started(start)
                if stop is not None:
                    self._speech_stopped(stop)
            case PlaybackResumed():
                self._held = None
            case UserTurnEnded():
                self._user_turn_ended(ev, vad)
            case ReplyStarted():
                self._reply_started(ev)
            case TextDelta():
                self._text_delta(ev)
            case FirstAudio() if self._turn_end_t is not None:
                self.metrics.response_latency.observe(ev.t - self._turn_end_t)
            case PlaybackPaused():
                # Input and output share one sample timeline, so onset to pause is exact.
                stop_s = (ev.output_sample - ev.onset_sample) / MODEL_RATE
                self.metrics.barge_in_stop.observe(stop_s)
                # The filter's tail goes out with the audio before the pause: held until
                # the speech is confirmed, it reached the client a beat after its playback
                # had gone quiet, as a click.
                if self._in_pull:
                    self._tail_due = True
                else:
                    self._send_tail()
            case ReplyEnded():
                if self._in_pull:
                    self._ended = ev  # the pull that ended it still holds its last audio
                else:
                    self._finish(ev)

    def _user_speech_started(self, ev: UserSpeechStarted, vad: bool) -> None:
        # Audio that played before the onset goes out now; no reply audio follows until
        # playback resumes.
        resp = self.response
        self._send_tail()
        if vad and resp is not None:
            # Over a reply the session pauses and decides later. A Realtime client cuts its
            # playback and the reply on speech_started, so it hears of this speech only once
            # the speech takes the turn; a backchannel stays unheard of.
            self._held = (ev.input_sample, None)
        elif vad:
            self._speech_started(ev.input_sample)

    def _user_turn_ended(self, ev: UserTurnEnded, vad: bool) -> None:
        self._turn_end_t = ev.t
        if vad:
            item = self._user_item or self.new_item()
            self.emit(
                {
                    "type": "input_audio_buffer.committed",
                    "item_id": item,
                    "previous_item_id": self.previous_item,
                }
            )
            self.previous_item, self._user_item = item, None

    def _text_delta(self, ev: TextDelta) -> None:
        resp = self.response
        if resp is not None and resp.reply_id == ev.reply_id:
            self.emit(
                {
                    "type": "response.output_audio_transcript.delta",
                    "response_id": resp.id,
                    "item_id": resp.item_id,
                    "output_index": 0,
                    "content_index": 0,
                    "delta": ev.text,
                }
            )

    def _speech_started(self, sample: int) -> None:
        self._user_item = self._user_item or self.new_item()
        self.emit(
            {
                "type": "input_audio_buffer.speech_started",
                "audio_start_ms": sample * 1000 // MODEL_RATE,
                "item_id": self._user_item,
            }
        )

    def _speech_stopped(self, sample: int) -> None:
        self._user_item = self._user_item or self.new_item()
        self.emit(
            {
                "type": "input_audio_buffer.speech_stopped",
                "audio_end_ms": sample * 1000 // MODEL_RATE,
                "item_id": self._user_item,
            }
        )

    def _reply_started(self, ev: ReplyStarted) -> None:
        item = self.new_item()
        resp = Response(
            id=f"resp_{self.session_id}_{ev.reply_id}",
            item_id=item,
            reply_id=ev.reply_id,
            resampler=Resampler(MODEL_RATE, self.wire.output_rate, OUTPUT_QUALITY),
        )
        self.response = resp
        self.items[item] = ev.reply_id
        self.log.info("response %s started", resp.id)
        self.emit(
            {
                "type": "response.created",
                "response": P.response_object(resp.id, item, "in_progress"),
            }
        )

    def _finish(self, ev: ReplyEnded) -> None:
        resp = self.response
        if resp is None or resp.reply_id != ev.reply_id:
            return
        self.flush_audio(last=True)
        self.response = None
        self.previous_item = resp.item_id
        status = {"completed": "completed", "interrupted": "cancelled"}.get(ev.status, "failed")
        self.metrics.responses[status] += 1
        base = {"response_id": resp.id, "item_id": resp.item_id, "output_index": 0}
        self.emit({"type": "response.output_audio.done", **base, "content_index": 0})
        self.emit(
            {
                "type": "response.output_audio_transcript.done",
                **base,
                "content_index": 0,
                "transcript": ev.text,
            }
        )
        reason, error = None, None
        if status == "cancelled":
            reason = resp.cancel_reason
            # Report the cut: the item now holds only what was sent (= played, at the pace
            # audio goes out), and so does the conversation the model will continue.
            self.emit(
                {
                    "type": "conversation.item.truncated",
                    "item_id": resp.item_id,
                    "content_index": 0,
                    "audio_end_ms": resp.sent * 1000 // self.wire.output_rate,
                }
            )
        elif status == "failed":
            error = {
                "type": "server_error",
                "code": "generation_failed",
                "message": "the reply failed",
            }
        self.log.info("response %s %s", resp.id, status)
        self.emit(
            {
                "type": "response.done",
                "response": P.response_object(
                    resp.id, resp.item_id, status, ev.text, reason=reason, error=error
                ),
            }
        )
