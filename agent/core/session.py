"""The duplex session: it listens the whole time, also while it speaks.

Audio drives everything. The microphone side pushes samples (:meth:`DuplexSession.push_input`)
and the speaker side pulls them (:meth:`DuplexSession.pull_output`); both count samples, and
every timing rule (endpointing, ``min_interruption``) is counted in input samples, so the
same code runs on real devices, on files, and in virtual time. The clock only stamps events.

Barge-in is pause-then-decide: user speech over a reply pauses playback at once; speech
that lasts ``min_interruption`` interrupts (abort the LM request, drop queued audio and
vocoder state, bump the epoch, keep in the history only what was heard), shorter speech
resumes playback from the exact sample where it paused. Control never waits behind audio:
these decisions are taken synchronously inside ``push_input``.

The session coordinates parts that each hold one concern: the listener (:class:`InputStage`:
echo, VAD, the endpointer), the barge-in rules, the detector heads, the replies
(:class:`Replies`, with the one started ahead) and the playout. It keeps the state machine
and decides when a user's turn is over; the parts never change the state themselves.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable, Coroutine
from typing import Any, TypeVar

import numpy as np

from parley.agent.core.barge_in import TAKES, WORDS_OVER_MS, Action, BargeIn, Move
from parley.agent.core.bus import EventBus
from parley.agent.core.clock import Clock, MonotonicClock
from parley.agent.core.endpoint import semantic_policy
from parley.agent.core.events import (
    AgentState,
    Event,
    FirstAudio,
    HistoryItem,
    PlaybackPaused,
    PlaybackResumed,
    StateChanged,
    UserSpeechEnded,
    UserSpeechStarted,
    UserTurnEnded,
)
from parley.agent.core.heads import CUT_IN_FROM_MS, Heads
from parley.agent.core.input import InputStage, SpeechDetector
from parley.agent.core.model import AgentModel
from parley.agent.core.playback import Playout
from parley.agent.core.replies import Replies
from parley.agent.core.reply import Reply, reply_params_for
from parley.agent.core.state import Signal, transition
from parley.config import AgentConfig
from parley.llm.engine import ReplyParams
from parley.llm.frontend import StreamingFrontEnd, UtteranceTooShortError
from parley.speech_io.audio import SAMPLE_RATE
from parley.tokenizers.vocoder import StreamingVocoder

TENTATIVE_HOLD_MS = 100
# The LM learnt questions followed by 0.25-0.9 s of silence (``train/lm_data.py``), but a
# turn hands it only the silence up to where it ended, or the VAD's stop (320 ms) if that
# came first: 200 ms where the end-of-turn detector is sure at its first ask. With 500 ms
# the model answers more of the held-out questions, 256 of 272 against 249 with 320 ms
# and 250 with 200 ms (benchmarks/bench_turn_end_silence.py), so every turn's silence is
# topped up to that: the reply starts as soon as the turn is over, and hears what it would
# have heard 500 ms into the silence.
HEARD_SILENCE_MS = 500
T = TypeVar("T")


class DuplexSession:
    """One conversation on a shared :class:`AgentModel`."""

    def __init__(
        self,
        model: AgentModel,
        config: AgentConfig | None = None,
        clock: Clock | None = None,
        detector: SpeechDetector | None = None,
        reply_params: ReplyParams | None = None,
    ) -> None:
        self.model = model
        self.config = config or model.config.agent
        self.clock = clock or MonotonicClock()
        codec = model.checkpoint.manifest.model.codec
        if codec.sample_rate != SAMPLE_RATE:
            raise ValueError(
                f"duplex sessions run at {SAMPLE_RATE} Hz; the vocoder makes {codec.sample_rate}"
            )
        self.sample_rate: int = SAMPLE_RATE
        self._fixed_reply_params = reply_params
        self.state = AgentState.LISTENING
        self._bus = EventBus()
        self._emit = self._bus.emit
        self.history: list[HistoryItem] = []

        self._frame = self.config.frame_ms * SAMPLE_RATE // 1000
        # Silero confirms an onset well within the hold of a tentative pause.
        ms = SAMPLE_RATE // 1000
        self._barge = BargeIn(TENTATIVE_HOLD_MS * ms, 0, words_from=CUT_IN_FROM_MS * ms)
        self._words_judged: int | None = None  # the silence the words were last judged in
        self.input = InputStage(self.config, detector, self._frame)
        self.playout = Playout(self, self.input, self.clock, self._emit, max_ahead=0)
        cfg = model.checkpoint.manifest.model
        self.frontend = StreamingFrontEnd(
            cfg.features, model.checkpoint.encoder, model.checkpoint.adapter
        )
        self.heads = Heads(model, self.input, self.input.turn, self.frontend)
        self.context = model.engine.open_context()
        self.vocoder = StreamingVocoder(model.checkpoint.vocoder)
        self._tasks: set[asyncio.Task[Any]] = set()
        self.replies = Replies(
            self, model, self.frontend, self.context, self.vocoder, self._bus, self.clock,
            self._barge, self.history, self._spawn,
        )  # fmt: skip
        self.preemption = self.replies.preemption
        self._apply(self.config)

        self.input_sample = 0
        self._pending_in = np.zeros(0, dtype=np.float32)
        self._turn = self.input.turn
        self._closed = False

    def _apply(self, config: AgentConfig) -> None:
        ms = SAMPLE_RATE // 1000
        self.config = config
        self._barge.min_interruption = config.min_interruption_ms * ms
        self.replies.max_ahead = self.playout.max_ahead = config.max_ahead_ms * ms
        rate = self.model.checkpoint.manifest.model.codec.token_rate_hz
        self.replies.params = self._fixed_reply_params or reply_params_for(config, rate)
        self.replies.chunk_tokens = config.vocoder_chunk_tokens
        self.input.reconfigure(config)
        self.heads.configure(config)
        after = config.preemptive_reply_ms
        self.preemption.after = None if after is None else after * ms
        semantic = config.turn_detection == "semantic_vad" and self.model.turn_detector
        self.input.turn.policy = (
            semantic_policy(config.eagerness, SAMPLE_RATE, config.endpoint_silence_ms)
            if semantic
            else None
        )

    def reconfigure(self, config: AgentConfig) -> None:
        """Apply new settings from the next frame on (turn-taking, barge-in, echo handling,
        reply bounds); a reply already running keeps its bounds. ``frame_ms`` is fixed."""
        if config.frame_ms != self.config.frame_ms:
            raise ValueError("frame_ms cannot change during a session")
        self._apply(config)

    # ------------------------------------------------------------------ events

    def subscribe(self, listener: Callable[[Event], None]) -> None:
        """Call ``listener`` synchronously with every event (it must not block)."""
        self._bus.subscribe(listener)

    def events(self) -> AsyncIterator[Event]:
        """Every event from now on, until the session closes."""
        return self._bus.events()

    @property
    def compute_s(self) -> float:
        """LM and vocoder time spent on replies so far (those thrown away included)."""
        return self.replies.compute_s

    @property
    def reply_params(self) -> ReplyParams | None:
        """The bounds the next reply is generated with (set by :meth:`reconfigure`)."""
        return self.replies.params

    @property
    def turn_detection(self) -> str:
        """How this session ends user turns now: "semantic_vad" (the checkpoint's detector
        asked) or "server_vad" (the silence timer)."""
        return "semantic_vad" if self.input.turn.policy is not None else "server_vad"

    @property
    def epoch(self) -> int:
        """Bumped on every interruption; events of older epochs never get out."""
        return self._bus.epoch

    @property
    def stale_dropped(self) -> int:
        """Events of a cut reply stopped at the epoch fence."""
        return self._bus.stale_dropped

    def signal(self, signal: Signal, reason: str) -> None:
        """Move the state machine on (and say so when the state changes)."""
        reply = self.replies.current
        started = reply is not None and reply.audio_started
        new = transition(self.state, signal, audio_started=started)
        if new is not self.state:
            old, self.state = self.state, new
            self._emit(
                StateChanged(t=self.clock.now(), epoch=self.epoch, old=old, new=new, reason=reason)
            )

    # ------------------------------------------------------------------ output

    @property
    def output_sample(self) -> int:
        """Samples handed to the speaker so far (silence included), less any rewound."""
        return self.playout.output_sample

    def pull_output(self, n: int) -> np.ndarray:
        """The next ``n`` samples to play; silence when nothing is playing."""
        return self.playout.pull(n)

    def rewind_output(self, n: int) -> None:
        """The last ``n`` pulled samples never reached the speaker (a device buffer was
        cleared); the reply's share of them plays again."""
        self.playout.rewind(n)

    def played_silence(self, n: int) -> None:
        """The speaker played ``n`` samples of silence it never pulled (its buffer ran dry,
        as after a clear); the output timeline and the echo reference move on by that."""
        self.playout.silence(n)

    @property
    def reply(self) -> Reply | None:
        """The reply in flight, if any."""
        return self.replies.current

    @property
    def playing(self) -> bool:
        """Whether reply audio may go out now: thinking (its first audio) or speaking."""
        return self.state in (AgentState.THINKING, AgentState.SPEAKING)

    def audio_started(self, reply: Reply, output_sample: int) -> None:
        self.signal(Signal.AUDIO_STARTED, "first reply audio")
        self._emit(
            FirstAudio(
                t=self.clock.now(),
                epoch=reply.epoch,
                reply_id=reply.id,
                output_sample=output_sample,
                compute_ms=1000.0 * (reply.first_audio_compute_s or 0.0),
                ahead_ms=1000.0 * reply.ahead_s,
                input_sample=self.input_sample,
            )
        )

    def played_out(self, reply: Reply) -> None:
        self.replies.finish(reply)

    # ------------------------------------------------------------------ input

    def push_input(self, samples: np.ndarray) -> None:
        """Microphone samples (16 kHz mono float32), consecutive; processed frame by frame."""
        if self._closed:
            raise RuntimeError("session is closed")
        self._pending_in = np.concatenate([self._pending_in, np.asarray(samples, dtype=np.float32)])
        while len(self._pending_in) >= self._frame:
            frame, self._pending_in = (
                self._pending_in[: self._frame],
                self._pending_in[self._frame :],
            )
            self._process_frame(frame)

    def _process_frame(self, frame: np.ndarray) -> None:
        start = self.input_sample
        vad_events = self.input.process(frame, start)
        self.input_sample += len(frame)
        self._feed_utterance()
        self._turn.closing(self.input.closing_since)
        for ev in vad_events:
            if ev.kind == "start":
                self._on_speech_start(ev.sample)
            else:
                self._on_speech_stop(ev.sample)
        self.preemption.check(self._turn)
        self._check_tentative()
        self.recheck()

    def _check_tentative(self) -> None:
        """Pause at possible user speech over the reply; resume if it is never confirmed."""
        onset = self.input.tentative_onset
        self._make(self._barge.frame(self.state, self.input_sample, onset, self.input.starting))

    def _make(self, move: Move | None) -> None:
        """Carry out what the barge-in rules decided."""
        if move is None:
            return
        match move.action:
            case Action.PAUSE:
                self._pause(move.onset, move.reason)
            case Action.RESUME:
                self._resume(move.reason)
            case Action.INTERRUPT:
                self.replies.cut(move.reason)

    def _feed_utterance(self) -> None:
        """The user's speech so far to the model's front end, as it comes."""
        self.preemption.check(self._turn)
        if self.preemption.held is not None:
            return  # the held reply heard the utterance up to its start; it stays there
        due = self._turn.to_feed(self.input_sample)
        if due is None:
            return
        audio = self.input.recent(*due)
        if audio.size:
            self.frontend.push(audio)

    def _pause(self, onset: int, reason: str) -> None:
        self.heads.new_onset()
        self.signal(Signal.USER_ONSET, reason)
        self._playback_event(PlaybackPaused, onset_sample=onset, input_sample=self.input_sample)

    def _resume(self, reason: str) -> None:
        self.signal(Signal.USER_YIELDED, reason)
        self._playback_event(PlaybackResumed)

    def _playback_event(self, kind: type[PlaybackPaused | PlaybackResumed], **extra: Any) -> None:
        reply = self.replies.current
        if reply is not None and reply.audio_started:
            self._emit(
                kind(
                    t=self.clock.now(),
                    epoch=self.epoch,
                    reply_id=reply.id,
                    position=reply.position,
                    output_sample=self.output_sample,
                    **extra,
                )
            )

    def _on_speech_start(self, sample: int) -> None:
        self._emit(UserSpeechStarted(t=self.clock.now(), epoch=self.epoch, input_sample=sample))
        over_reply = self.state is not AgentState.LISTENING
        self._make(self._barge.speech_started(self.state, sample))
        if self._turn.speech_started(sample, self.input.oldest, over_reply):
            self.frontend.reset()
        self._feed_utterance()

    def _on_speech_stop(self, sample: int) -> None:
        self._emit(UserSpeechEnded(t=self.clock.now(), epoch=self.epoch, input_sample=sample))
        paused = self.state is AgentState.PAUSED
        move = self._barge.speech_stopped(
            self.state, self.heads.takes_turn(sample) if paused else None
        )
        if move is not None and move.action is Action.RESUME:
            # It ended before min_interruption (else we would have interrupted): resume.
            self._drop_utterance()
            self._make(move)
            return
        self._make(move)  # short words that take the turn: they are the user's turn
        self._turn.speech_stopped(sample, said_all=self._barge.said_all(sample))

    def recheck(self) -> None:
        """Carry out what is due at the current input sample: barge-in timers, the turn's
        end, a reply started ahead."""
        now = self.input_sample
        speaking = self.input.speaking
        if self._barge.asks(self.state, now, speaking):
            self.heads.judge_words(now, self._barge)
        self._make(self._barge.due(self.state, now, speaking))
        self._end_words_early(now)
        if self.state is not AgentState.LISTENING or self.preemption.rolling_back:
            return
        if self._turn_over(now):
            if self._turn.silence_from is None:
                # Over before the VAD called a stop: it calls it now, so the user's speech
                # still ends before the turn does.
                stop = self.input.end_speech()
                if stop is None:
                    return  # no silence open after all: the user goes on
                self._on_speech_stop(stop.sample)
            self._end_user_turn()
        elif self.preemption.held is None and self.replies.current is None:
            silence = self.preemption.due(self._turn, now)
            if silence is not None:
                self.preemption.start(silence, now, self._silence_top_up(silence))

    def _end_words_early(self, now: int) -> None:
        """Short words over a reply whose silence has lasted ``WORDS_OVER_MS``: when they
        took the turn, or the cut-in detector is now sure they do, the VAD's stop is
        called at once, so they are a whole turn and answered sooner."""
        closing = self._turn.closing_from
        if (
            closing is None
            or closing == self._words_judged
            or now - closing < WORDS_OVER_MS * SAMPLE_RATE // 1000
        ):
            return
        if self.state is AgentState.PAUSED and self._barge.onset is not None:
            self._words_judged = closing  # once per silence
            takes = self.heads.takes_turn(closing)
            if takes is None or takes < TAKES:
                return  # the VAD's stop decides, as for any short sound
        elif not self._barge.words_were_a_turn(closing):
            return
        stop = self.input.end_speech()
        if stop is not None:
            self._on_speech_stop(stop.sample)

    def _turn_over(self, now: int) -> bool:
        finished = self.heads.finished(now)
        if finished is None:  # most frames: no answer, so the reply ahead need not be read
            return self._turn.ended(now)
        detector = self.model.turn_detector
        beyond = detector.cfg.beyond_reply if detector is not None else None
        return self._turn.ended(now, finished, self.preemption.within_domain(beyond))

    def _drop_utterance(self) -> None:
        self._turn.drop()
        self.frontend.reset()

    def _silence_top_up(self, silence: int) -> np.ndarray:
        """What to add after the utterance fed so far, whose silence began at ``silence``,
        so the model hears ``HEARD_SILENCE_MS`` of it: the silence heard, repeated (empty
        when it heard that much)."""
        fed = self._turn.fed
        need = HEARD_SILENCE_MS * SAMPLE_RATE // 1000 - (fed - silence)
        if need <= 0:
            return np.zeros(0, np.float32)
        heard = self.input.recent(silence, fed)
        if heard.size == 0:  # a faint floor, as a microphone gives
            return np.random.default_rng(need).standard_normal(need).astype(np.float32) * 3e-4
        return np.resize(heard, need)

    def _end_user_turn(self) -> None:
        span = self._turn.close()
        top_up = self._silence_top_up(span.end)
        held = self.preemption.take()
        embeddings = None
        if held is None:
            try:
                embeddings = self.frontend.finish(top_up)
            except UtteranceTooShortError:
                self.frontend.reset()
                return  # too short to encode: nothing to answer
        else:
            self.frontend.reset()  # the held reply has the utterance already
        audio_s = (span.end - span.start) / SAMPLE_RATE
        self.history.append(HistoryItem(role="user", audio_s=audio_s))
        self._emit(
            UserTurnEnded(
                t=self.clock.now(),
                epoch=self.epoch,
                input_sample=span.end,
                audio_s=audio_s,
                decided_sample=self.input_sample,
            )
        )
        if embeddings is not None:
            self.context.add_user_audio(embeddings)
            self.replies.begin(self.replies.new())
        else:
            assert held is not None
            self.replies.begin_held(held, self.input_sample)

    # ------------------------------------------------------------------ reply

    def _spawn(self, coro: Coroutine[Any, Any, T]) -> asyncio.Task[T]:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    async def rolled_back(self) -> None:
        """Return once a reply started ahead and thrown away is rolled back (turn-taking
        waits for that: a caller pushing input faster than real time waits too)."""
        await self.preemption.rolled_back()

    async def discard_held(self) -> None:
        """Throw away a reply started ahead of the turn's end, if one is held, and return
        once the LM context is rolled back (before the context is changed from outside).
        The turn's end starts a fresh reply, from the next frame on."""
        await self.preemption.discard()

    async def interrupt(self) -> None:
        """Cut the current reply now (an application's stop button)."""
        if self.state in (AgentState.THINKING, AgentState.SPEAKING, AgentState.PAUSED):
            self._barge.forget()
            self.replies.cut("interrupted by the application")
        await self.settle()

    # ------------------------------------------------------------------ lifecycle

    async def settle(self) -> None:
        """Wait until background work has caught up: the producer waits for playback room or
        is done, and any teardown has finished. The virtual-time runner calls this between
        frames so that results do not depend on how fast this machine computes."""
        while True:
            held = self.preemption.held.reply if self.preemption.held is not None else None
            replies = [r for r in (self.replies.current, held) if r is not None]
            me = asyncio.current_task()
            skip = {me, *(r.task for r in replies)}
            others = [t for t in self._tasks if not t.done() and t not in skip]
            if others:
                await asyncio.wait(others)
                continue
            busy = [r for r in replies if not r.settled]
            if not busy:
                return
            await busy[0].settle()

    async def aclose(self) -> None:
        """Stop everything this session started; the engine request is aborted."""
        if self._closed:
            return
        self._closed = True
        for task in list(self._tasks):
            task.cancel()
        for task in list(self._tasks):
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self.replies.close()
        await self.context.aclose()
        self._bus.close()

    @property
    def running_tasks(self) -> int:
        """Background tasks still alive (0 once settled or closed)."""
        return sum(not t.done() for t in self._tasks)
