"""Playing a scenario against a running server, over the Realtime protocol, in real time.

This is the harness as a Realtime client would be: it connects to ``<url>/realtime``,
streams the scenario's user channel as ``input_audio_buffer.append`` (PCM16, 24 kHz, 20 ms
chunks paced by a monotonic clock) and plays what comes back on a modelled speaker. The
recorded ``output`` is what that speaker sounded at each instant, on the client's own
timeline (sample ``i`` of the user channel is recorded ``i / 16000`` s after streaming
began; a chunk is sent once it has been recorded), so the scores time the whole service
path: the client's chunking, the network, the server's resamplers, VAD and model.

The speaker: each audio delta plays at real time from the moment it arrives, or, if
earlier audio is still playing, right after it (a playback queue). On
``input_audio_buffer.speech_started`` while a reply is playing the client does what stock
Realtime clients do: it clears its queue at once and sends ``conversation.item.truncate``
with the ``audio_end_ms`` it actually played. Deltas of a reply it cut are not played.

What is measured, then:

- barge-in stop: the user's onset on the client's timeline to the client's playback
  going silent (chunking, network and server included);
- response latency: the end of the user's speech to the first reply audio played.

What the protocol does not show: the model's compute (``response_compute_ms`` is 0, so
``response_overhead_ms`` holds compute too); with ``semantic_vad``, the sample at which the
server called the turn over (the harness takes all it had sent when the commit arrived, so
the overhead it reports leaves out the lag of that message: a frame or two and the
network; ``benchmarks/bench_wire_stages.py`` times it from the server's own events); and
resume exactness (positions are counted from the audio received, so lost/repeated samples
are 0 by construction). Steps placed
``after_reply_start`` are placed when a reply's first audio plays. A scenario's echo path
feeds the modelled speaker back into the microphone.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import numpy as np
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidStatus, InvalidURI

from parley.agent.core.clock import MonotonicClock
from parley.agent.harness.record import RunRecord
from parley.agent.harness.runner import SR, ScenarioScript
from parley.agent.harness.scenario import Scenario
from parley.errors import ParleyError
from parley.speech_io.pcm16 import decode_pcm16, encode_pcm16
from parley.speech_io.resample import Resampler

__all__ = ["WireError", "realtime_url", "run_scenario_wire"]

WIRE_RATE = 24000  # the Realtime protocol's PCM rate, what stock clients send and play
CHUNK = SR // 50  # 20 ms of microphone per append
# soxr's quick cubic mode holds back no audio: any delay in the client's own resampling
# would be charged to the server's barge-in and latency figures.
CLIENT_QUALITY = "QQ"
HANDSHAKE_S = 10.0
# Scenario settings the protocol can carry (AgentConfig name -> turn_detection field).
WIRE_SETTINGS = {
    "turn_detection": "type",
    "eagerness": "eagerness",
    "endpoint_silence_ms": "silence_duration_ms",
    "preroll_ms": "prefix_padding_ms",
}

Log = Callable[[str], None]


class WireError(ParleyError):
    """The server cannot be reached, refuses the connection, or ends it mid-run."""


def realtime_url(url: str) -> str:
    """The WebSocket address of Realtime sessions for a base URL: ``ws://HOST:PORT``,
    ``ws://HOST:PORT/v1`` or the full ``.../realtime`` address (``http(s)`` is accepted)."""
    parts = urlsplit(url)
    scheme = {"http": "ws", "https": "wss"}.get(parts.scheme, parts.scheme)
    if scheme not in ("ws", "wss") or not parts.netloc:
        raise WireError(f"--url {url!r} is not a ws:// address (e.g. ws://127.0.0.1:8765)")
    path = parts.path.rstrip("/")
    if not path.endswith("/realtime"):
        path += "/realtime"
    return urlunsplit((scheme, parts.netloc, path, parts.query, ""))


@dataclass
class _Reply:
    """One response as the client heard it."""

    index: int  # 1-based, in order of response.created
    epoch: int
    resampler: Resampler
    item_id: str | None = None  # the assistant item, named by its audio deltas
    received: int = 0  # reply samples received, 16 kHz
    chunks: list[tuple[int, int]] = field(default_factory=list)  # (output start, length)
    audio_done: bool = False
    cut: bool = False  # the client cleared it on barge-in

    def played_by(self, now: int) -> int:
        """Reply samples the speaker had played by output sample ``now``."""
        return sum(min(max(now - start, 0), n) for start, n in self.chunks)

    def stop(self, now: int) -> int:
        """Playback cleared at ``now``: what was queued beyond it never sounds. Returns
        the reply samples played."""
        self.chunks = [(start, min(max(now - start, 0), n)) for start, n in self.chunks]
        self.cut = True
        return self.played_by(now)


class _Speaker:
    """The client's playback queue, written straight into the recorded output."""

    def __init__(self, total: int) -> None:
        self.output = np.zeros(total, dtype=np.float32)
        self.end = 0  # output sample where queued audio runs out

    def play(self, samples: np.ndarray, now: int) -> int:
        """Queue ``samples`` arriving at ``now``; returns the sample they start at."""
        start = max(now, self.end)
        stop = min(start + len(samples), len(self.output))
        if stop > start:
            self.output[start:stop] = samples[: stop - start]
        self.end = start + len(samples)
        return start

    def clear(self, now: int) -> None:
        """Stop at ``now``: what was queued beyond it never sounds."""
        if self.end > now:
            self.output[now : self.end] = 0.0
        self.end = min(self.end, now)


class _WireRun:
    """One scenario over one connection: the microphone task and the event handler."""

    def __init__(self, scenario: Scenario, seed: int, truncate: bool, log: Log) -> None:
        self.script = ScenarioScript(scenario, seed)
        self.total = self.script.total
        self.echo = self.script.echo_path()
        self.mic = np.zeros(self.total, dtype=np.float32)
        self.speaker = _Speaker(self.total)
        self.truncate = truncate
        self.log = log
        self.clock = MonotonicClock()
        self.t0: float | None = None  # clock time of sample 0 of the client's timeline
        self.sent = 0  # microphone samples sent
        self.events: list[dict[str, Any]] = []
        self.replies: dict[str, _Reply] = {}  # by response id
        self.current: _Reply | None = None
        self.epoch = 0
        self.state = "listening"
        self.last_speech_end = 0
        self.endpoint_silence_ms = 500.0
        self.semantic = False  # the server's turn detection is semantic_vad
        self.ws: ClientConnection | None = None

    # ------------------------------------------------------------------ time

    def now_s(self) -> float:
        return 0.0 if self.t0 is None else self.clock.now() - self.t0

    def now_sample(self) -> int:
        return max(0, int(self.now_s() * SR))

    def emit(self, kind: str, epoch: int | None = None, **data: Any) -> None:
        self.events.append(
            {"type": kind, "t": self.now_s(), "epoch": self.epoch if epoch is None else epoch}
            | data
        )

    def set_state(self, new: str, reason: str) -> None:
        if new != self.state:
            self.emit("state_changed", old=self.state, new=new, reason=reason)
            self.state = new

    # ------------------------------------------------------------------ microphone

    async def stream_microphone(self, ws: ClientConnection) -> None:
        """The user channel (plus echo) in 20 ms appends, each sent once recorded."""
        up = Resampler(SR, WIRE_RATE, CLIENT_QUALITY)
        self.t0 = self.clock.now()
        for a in range(0, self.total, CHUNK):
            b = min(a + CHUNK, self.total)
            delay = self.t0 + b / SR - self.clock.now()
            if delay > 0:
                await asyncio.sleep(delay)
            heard = self.script.user[a:b].copy()
            if self.echo is not None:
                # What the speaker played over this span is final by now: audio arriving
                # later starts later, and a clear only silences what is still to come.
                heard += self.echo.process(self.speaker.output[a:b])
            self.mic[a:b] = heard
            self.sent = b
            audio = encode_pcm16(up.push(heard))
            await ws.send(json.dumps({"type": "input_audio_buffer.append", "audio": audio}))

    # ------------------------------------------------------------------ server events

    async def receive(self, ws: ClientConnection) -> None:
        async for message in ws:
            await self.on_event(json.loads(message))

    async def on_event(self, ev: dict[str, Any]) -> None:
        kind = ev.get("type")
        if kind == "response.output_audio.delta":
            self._audio(ev)
        elif kind == "input_audio_buffer.speech_started":
            self.emit("user_speech_started", input_sample=int(ev["audio_start_ms"]) * SR // 1000)
            await self._barge_in()
        elif kind == "input_audio_buffer.speech_stopped":
            self.last_speech_end = int(ev["audio_end_ms"]) * SR // 1000
            self.emit("user_speech_ended", input_sample=self.last_speech_end)
        elif kind == "input_audio_buffer.committed":
            self._committed()
        elif kind == "response.created":
            self._created(ev["response"])
        elif kind == "response.output_audio_transcript.delta":
            reply = self.replies.get(ev["response_id"])
            if reply is not None:
                self.emit("text_delta", reply.epoch, reply_id=reply.index, text=ev["delta"])
        elif kind == "response.output_audio.done":
            reply = self.replies.get(ev["response_id"])
            if reply is not None:
                reply.audio_done = True
        elif kind == "response.done":
            self._done(ev["response"])
        elif kind == "error":
            err = ev.get("error", {})
            self.emit("wire_error", code=err.get("code"), message=err.get("message"))
            self.log(f"server error {err.get('code')}: {err.get('message')}")

    def _committed(self) -> None:
        # With semantic_vad the turn was called over at some sample the server had heard:
        # at most all the client has sent. That bound makes the wait the longest it can
        # have been, so the overhead left (latency less the wait) leaves out the server's
        # lag before the commit reached the client: a loopback and a frame or two. With
        # server_vad the wait is the session's silence_duration_ms, all lag counted.
        decided = self.sent if self.semantic else None
        self.emit(
            "user_turn_ended",
            input_sample=self.last_speech_end,
            audio_s=0.0,
            decided_sample=decided,
        )

    def _created(self, response: dict[str, Any]) -> None:
        reply = _Reply(len(self.replies) + 1, self.epoch, Resampler(WIRE_RATE, SR, CLIENT_QUALITY))
        self.replies[response["id"]] = reply
        self.current = reply
        self.emit("reply_started", reply_id=reply.index)
        self.set_state("thinking", "reply_started")

    def _audio(self, ev: dict[str, Any]) -> None:
        reply = self.replies.get(ev["response_id"])
        if reply is None:
            return
        reply.item_id = ev["item_id"]
        samples = reply.resampler.push(decode_pcm16(ev["delta"]))
        now = self.now_sample()
        start = now if reply.cut else self.speaker.play(samples, now)
        # Logged even when not played: a delta of a reply already cut is stale, and the
        # metrics count it as such.
        self.emit(
            "audio_played",
            reply.epoch,
            reply_id=reply.index,
            start=reply.received,
            end=reply.received + len(samples),
            output_sample=start,
        )
        reply.received += len(samples)
        if reply.cut or not len(samples):
            return
        first = not reply.chunks
        reply.chunks.append((start, len(samples)))
        if first:
            self.emit("first_audio", reply.epoch, reply_id=reply.index, output_sample=start)
            self.script.reply_started(start, self.sent)
            self.set_state("speaking", "first_audio")

    async def _barge_in(self) -> None:
        reply, now = self.current, self.now_sample()
        if reply is None or reply.cut or reply.item_id is None:
            return
        if reply.audio_done and self.speaker.end <= now:
            return  # the reply has played out: nothing to stop
        if not self.truncate:
            return  # the server's pause-then-decide alone stops the audio
        self.speaker.clear(now)
        played = reply.stop(now)
        self.emit(
            "playback_paused", reply.epoch, reply_id=reply.index, position=played, output_sample=now
        )
        self.set_state("paused", "speech_started")
        assert self.ws is not None
        await self.ws.send(
            json.dumps(
                {
                    "type": "conversation.item.truncate",
                    "item_id": reply.item_id,
                    "content_index": 0,
                    "audio_end_ms": played * 1000 // SR,
                }
            )
        )

    def _done(self, response: dict[str, Any]) -> None:
        reply = self.replies.get(response["id"])
        if reply is None:
            return
        status = {"completed": "completed", "cancelled": "interrupted"}.get(
            response["status"], "failed"
        )
        now = self.now_sample()
        played = reply.played_by(now) if reply.cut else reply.received
        text = ""
        if response.get("output"):
            content = response["output"][0].get("content") or [{}]
            text = content[0].get("transcript") or ""
        if status == "interrupted":
            self.emit(
                "interrupted",
                reply.epoch,
                reply_id=reply.index,
                played=played,
                heard_text=text,
                output_sample=now,
            )
            self.epoch += 1  # whatever of this reply comes after is stale
        self.emit(
            "reply_ended",
            reply.epoch,
            reply_id=reply.index,
            status=status,
            played=played,
            text=text,
        )
        if self.current is reply:
            self.current = None
        self.set_state("listening", f"reply_{status}")

    # ------------------------------------------------------------------ the session

    def session_update(self, created: dict[str, Any]) -> dict[str, Any] | None:
        """The ``session`` of a ``session.update`` this scenario needs, or None."""
        scenario = self.script.scenario
        wanted = {"type": "audio/pcm", "rate": WIRE_RATE}
        audio = created.get("audio", {})
        update: dict[str, Any] = {}
        if audio.get("input", {}).get("format") != wanted:
            update.setdefault("input", {})["format"] = wanted
        if audio.get("output", {}).get("format") != wanted:
            update.setdefault("output", {})["format"] = wanted
        overrides = scenario.agent_overrides()
        detection = {WIRE_SETTINGS[k]: v for k, v in overrides.items() if k in WIRE_SETTINGS}
        if detection:
            # A turn_detection object replaces the server's whole: unless the scenario names
            # a type, keep the one the server runs.
            running = (audio.get("input", {}).get("turn_detection") or {}).get("type")
            td = {"type": running or "server_vad", **detection}
            update.setdefault("input", {})["turn_detection"] = td
        elsewhere = {k: v for k, v in overrides.items() if k not in WIRE_SETTINGS}
        if elsewhere:
            # The protocol carries no reply bounds or barge-in settings: the server's own
            # apply. Named without the scenario or its values, so that a caller running
            # many scenarios can say it once (``commands.once``).
            self.log(
                f"{', '.join(sorted(elsewhere))} cannot be set over the wire; the server's own "
                "values apply (serve with PARLEY_AGENT__... to match)"
            )
        return {"type": "realtime", "audio": update} if update else None

    async def handshake(self, ws: ClientConnection) -> None:
        created = await self._expect(ws, "session.created")
        session = created["session"]
        update = self.session_update(session)
        if update is not None:
            await ws.send(json.dumps({"type": "session.update", "session": update}))
            session = (await self._expect(ws, "session.updated"))["session"]
        detection = session["audio"]["input"].get("turn_detection") or {}
        kind = detection.get("type")
        if kind not in ("server_vad", "semantic_vad"):
            raise WireError(
                "the server's session ends no turns by itself (turn_detection: "
                f"{kind or 'null'}); the harness needs server_vad or semantic_vad"
            )
        # The timer's wait is the session's; the detector's is chosen turn by turn, and
        # the protocol does not say which, so it is read off the commit (see _committed).
        self.semantic = kind == "semantic_vad"
        if not self.semantic:
            self.endpoint_silence_ms = float(detection["silence_duration_ms"])

    @staticmethod
    async def _expect(ws: ClientConnection, kind: str) -> dict[str, Any]:
        async with asyncio.timeout(HANDSHAKE_S):
            while True:
                ev = json.loads(await ws.recv())
                if ev.get("type") == "error":
                    err = ev.get("error", {})
                    raise WireError(f"the server refused {kind}: {err.get('message')}")
                if ev.get("type") == kind:
                    return ev

    async def run(self, ws: ClientConnection) -> None:
        self.ws = ws
        await self.handshake(ws)
        mic = asyncio.create_task(self.stream_microphone(ws), name="microphone")
        events = asyncio.create_task(self.receive(ws), name="events")
        try:
            done, _ = await asyncio.wait({mic, events}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in (mic, events):
                task.cancel()
            results = await asyncio.gather(mic, events, return_exceptions=True)
        for exc in results:
            if isinstance(exc, ConnectionClosed):
                raise WireError(f"the server closed the connection mid-run: {exc}") from None
            if isinstance(exc, Exception):
                raise exc
        if mic not in done:
            raise WireError("the server closed the connection mid-run")

    def record(self) -> RunRecord:
        return self.script.record(
            mic=self.mic,
            output=self.speaker.output,
            events=self.events,
            endpoint_silence_ms=self.endpoint_silence_ms,
            model_compute_s=0.0,  # not visible over the wire
            realtime=True,
        )


async def run_scenario_wire(
    url: str,
    scenario: Scenario,
    token: str | None = None,
    seed: int = 0,
    *,
    truncate: bool = True,
    log: Log | None = None,
) -> RunRecord:
    """Run ``scenario`` against the Realtime server at ``url`` in real time.

    ``truncate=False`` plays a client that leaves barge-in to the server (no clear, no
    ``conversation.item.truncate``), so backchannels may resume.
    """
    address = realtime_url(url)
    run = _WireRun(scenario, seed, truncate, log or (lambda _msg: None))
    headers = {"Authorization": f"Bearer {token}"} if token else None
    try:
        ws = await connect(
            address, additional_headers=headers, open_timeout=HANDSHAKE_S, compression=None
        )
    except InvalidStatus as exc:
        code = exc.response.status_code
        if code == 401:
            why = "refused the token (HTTP 401): pass the server's --token with --token"
        else:
            body = exc.response.body.decode(errors="replace").strip().splitlines()
            why = f"refused the connection: HTTP {code} {body[0] if body else ''}".rstrip()
        raise WireError(f"the server at {address} {why}") from None
    except (OSError, TimeoutError, InvalidHandshake, InvalidURI) as exc:
        raise WireError(f"cannot reach a Parley server at {address}: {exc}") from None
    async with ws:
        await run.run(ws)
    return run.record()
