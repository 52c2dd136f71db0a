"""The WebSocket server, live on a local port: HTTP endpoints, auth and limits, the
official ``openai`` SDK as a client, disconnects, and a 10,000-message fuzz."""

from __future__ import annotations

import asyncio
import contextlib
import json

import httpx
import numpy as np
import pytest
import soxr
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed, InvalidStatus

from parley.agent.cli import main as cli_main
from parley.agent.harness.render import say
from parley.agent.service.limits import ServiceLimits
from parley.agent.service.server import RealtimeServer
from tests.service_fuzz import hostile_messages
from tests.service_support import b64, delta_samples, short_reply_agent

MAX_BYTES = 64 * 1024
pytestmark = pytest.mark.slow


@contextlib.asynccontextmanager
async def running(model, **limits):
    limits.setdefault("max_message_bytes", MAX_BYTES)
    token = limits.pop("token", None)
    server = RealtimeServer(short_reply_agent(model), ServiceLimits(**limits), token=token)
    async with server.serve("127.0.0.1", 0) as srv:
        port = srv.sockets[0].getsockname()[1]
        yield server, port


def ws_url(port: int) -> str:
    return f"ws://127.0.0.1:{port}/v1/realtime?model=parley"


@pytest.fixture(scope="module")
def speech(tmp_path_factory):
    cache = tmp_path_factory.mktemp("tts")
    question = say("What time is it in Lisbon right now?", "en-us", cache)
    cut_in = say("Wait, stop, I have another question for you.", "en-us", cache)
    return soxr.resample(question, 16000, 24000), soxr.resample(cut_in, 16000, 24000)


async def stream_at_real_time(send, audio: np.ndarray, chunk: int = 2400) -> None:
    """Send 24 kHz ``audio`` in ``chunk``-sample appends on a microphone's schedule: each
    when its last sample was recorded, so a late wake-up does not make the stream drift
    behind real time (which the server, rightly, hears as pauses)."""
    loop = asyncio.get_running_loop()
    start = loop.time()
    for i in range(0, len(audio), chunk):
        await asyncio.sleep(max(0.0, start + min(i + chunk, len(audio)) / 24000 - loop.time()))
        await send(b64(audio[i : i + chunk]))


async def recv_until(ws, kind: str, seen: list, within: float = 20.0) -> dict:
    async with asyncio.timeout(within):
        while True:
            event = json.loads(await ws.recv())
            seen.append(event)
            if event["type"] == kind:
                return event


async def test_http_endpoints_and_bind_refusal(tiny_model, capsys, monkeypatch):
    # With a token in the environment the serve below would pass the bind check and run.
    monkeypatch.delenv("PARLEY_TOKEN", raising=False)
    async with running(tiny_model) as (_, port), httpx.AsyncClient() as http:
        health = await http.get(f"http://127.0.0.1:{port}/healthz")
        assert health.status_code == 200 and health.json() == {"status": "ok", "sessions": 0}
        metrics = await http.get(f"http://127.0.0.1:{port}/metrics")
        assert metrics.headers["content-type"].startswith("text/plain; version=0.0.4")
        assert "parley_sessions_active 0" in metrics.text
        assert "# TYPE parley_barge_in_stop_seconds histogram" in metrics.text
        assert (await http.get(f"http://127.0.0.1:{port}/nope")).status_code == 404
    # Off loopback without a token: refused before any model is loaded.
    assert cli_main(["serve", "--host", "0.0.0.0", "--port", "0"]) == 2
    assert "--token" in capsys.readouterr().err


async def test_token_and_session_limit(tiny_model):
    async with running(tiny_model, token="s3cret", max_sessions=1) as (server, port):
        for headers in ({}, {"Authorization": "Bearer wrong"}):
            with pytest.raises(InvalidStatus) as info:
                await connect(ws_url(port), additional_headers=headers)
            assert info.value.response.status_code == 401
        auth = {"Authorization": "Bearer s3cret"}
        async with connect(ws_url(port), additional_headers=auth) as ws:
            assert json.loads(await ws.recv())["type"] == "session.created"
            with pytest.raises(InvalidStatus) as info:
                await connect(ws_url(port), additional_headers=auth)
            assert info.value.response.status_code == 503
            assert info.value.response.headers["Retry-After"] == "5"
            assert b"real time" in info.value.response.body
        assert server.metrics.sessions_rejected == {"unauthorized": 2, "capacity": 1}


def test_default_session_limit_follows_the_cores(monkeypatch):
    from parley.agent.service import limits

    monkeypatch.setattr(limits.os, "sched_getaffinity", lambda pid: {0, 1, 2}, raising=False)
    assert limits.default_max_sessions() == 3 * limits.SESSIONS_PER_CORE


async def test_openai_sdk_client_hears_a_reply_and_cuts_in(tiny_model, speech):
    from openai import AsyncOpenAI

    question, cut_in = speech
    async with running(tiny_model) as (server, port):
        client = AsyncOpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key="unused")
        async with client.realtime.connect(model="parley") as conn:
            first = await conn.recv()
            assert first.type == "session.created"
            await conn.session.update(
                session={"type": "realtime", "instructions": "answer briefly"}
            )
            events, received_ms = [], 0.0

            async def stream(audio):
                async def send(chunk: str) -> None:
                    await conn.input_audio_buffer.append(audio=chunk)

                await stream_at_real_time(send, audio)

            await stream(question)
            async with asyncio.timeout(20):
                async for event in conn:
                    events.append(event)
                    if event.type == "response.output_audio.delta":
                        received_ms += delta_samples(event.model_dump()) / 24
                        if received_ms >= 400:
                            break
            speaker = asyncio.create_task(stream(cut_in))
            async with asyncio.timeout(20):
                async for event in conn:
                    events.append(event)
                    if event.type == "response.output_audio.delta":
                        received_ms += delta_samples(event.model_dump()) / 24
                    if event.type == "response.done":
                        break
            await speaker
    kinds = [e.type for e in events]
    assert kinds[0] == "session.updated"
    assert kinds.count("input_audio_buffer.speech_started") == 2
    assert kinds.index("input_audio_buffer.committed") < kinds.index("response.created")
    cut_at = len(kinds) - 1 - kinds[::-1].index("input_audio_buffer.speech_started")
    assert "response.output_audio.delta" not in kinds[cut_at:]
    done = events[-1].response
    assert done.status == "cancelled" and done.status_details.reason == "turn_detected"
    truncated = next(e for e in events if e.type == "conversation.item.truncated")
    assert abs(truncated.audio_end_ms - received_ms) <= 1
    assert server.metrics.barge_in_stop.count == 1


async def test_disconnect_mid_reply_aborts_and_frees_the_session(tiny_model, speech):
    question, _ = speech
    async with running(tiny_model) as (server, port):
        async with connect(ws_url(port)) as ws:
            for i in range(0, len(question), 12000):  # all at once: the server paces it
                chunk = b64(question[i : i + 12000])
                await ws.send(json.dumps({"type": "input_audio_buffer.append", "audio": chunk}))
            await recv_until(ws, "response.output_audio.delta", [])
            (session,) = server.agent.sessions
            assert session.reply_running
        for _ in range(500):  # the handler's cleanup runs after the close handshake
            if not server.agent.sessions:
                break
            await asyncio.sleep(0.01)
        assert server.agent.sessions == []
        assert session.session.running_tasks == 0
        assert not session.session.context._running  # the engine request was aborted


async def test_oversized_messages(tiny_model):
    async with running(tiny_model) as (_, port), connect(ws_url(port)) as ws:
        seen: list = []
        await recv_until(ws, "session.created", seen)
        await ws.send(json.dumps({"type": "input_audio_buffer.append", "audio": "A" * MAX_BYTES}))
        error = await recv_until(ws, "error", seen)
        assert error["error"]["code"] == "message_too_large"
        await ws.send(json.dumps({"type": "session.update", "session": {"instructions": "ok"}}))
        assert (await recv_until(ws, "session.updated", seen))["session"]["instructions"] == "ok"
        await ws.send("x" * (2 * MAX_BYTES + 1))
        with pytest.raises(ConnectionClosed) as info:
            await recv_until(ws, "never", seen)
        assert info.value.rcvd.code == 1009


async def test_fuzz_ten_thousand_hostile_messages(tiny_model, speech):
    question, _ = speech
    n_per_connection = 5000

    async def hostile(port: int, seed: int) -> tuple[int, list[str]]:
        async with connect(ws_url(port), max_size=None) as ws:
            assert json.loads(await ws.recv())["type"] == "session.created"
            codes: list[str] = []

            async def read() -> None:
                while len(codes) < n_per_connection:
                    event = json.loads(await ws.recv())
                    assert event["type"] == "error", event
                    codes.append(event["error"]["code"])

            reader = asyncio.create_task(read())
            sent = 0
            for message in hostile_messages(seed, n_per_connection, MAX_BYTES):
                await ws.send(message)
                sent += 1
            await asyncio.wait_for(reader, 60)
            # Still a working session after all that.
            await ws.send(json.dumps({"type": "session.update", "session": {"instructions": "hi"}}))
            assert (await recv_until(ws, "session.updated", []))["type"] == "session.updated"
            return sent, codes

    async def talker(port: int) -> list[dict]:
        async with connect(ws_url(port)) as ws:
            seen: list = []

            async def send(chunk: str) -> None:
                await ws.send(json.dumps({"type": "input_audio_buffer.append", "audio": chunk}))

            await stream_at_real_time(send, question)
            await recv_until(ws, "response.done", seen, within=30)
            return seen

    # What the messages hold is under test here, not their rate (tests/test_service_budgets.py
    # paces floods): unpaced, the 10,000 come and go in the time of one question, as before
    # the budgets, rather than for the ~25 s that 200 a second would stretch them over.
    unpaced = {"max_messages_per_s": 1e9, "message_burst": 10**9, "max_bytes_per_s": 1e12}
    async with running(tiny_model, **unpaced) as (server, port):
        results = await asyncio.gather(hostile(port, 1), hostile(port, 2), talker(port))
        async with httpx.AsyncClient() as http:
            assert (await http.get(f"http://127.0.0.1:{port}/healthz")).status_code == 200
    total = 0
    for sent, codes in results[:2]:
        assert len(codes) == sent == n_per_connection
        total += sent
        assert "server_error" not in codes
    assert total >= 10_000
    talk = results[2]
    assert [e for e in talk if e["type"] == "error"] == []
    done = [e for e in talk if e["type"] == "response.done"][0]["response"]
    assert done["status"] == "completed"
    assert server.metrics.errors.get("server_error", 0) == 0
    assert sum(server.metrics.errors.values()) == total
