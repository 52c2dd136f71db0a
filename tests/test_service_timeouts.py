"""Connections that stop reading or stop talking are closed (1008 / 1001), on loopback.

The slow consumer is a raw socket with a small receive buffer that floods the server with
requests whose answers it never reads: the case where counting queued events never trips,
because the server stops reading from a client whose socket is full.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket

import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from parley.agent.core.clock import VirtualClock
from parley.agent.service.limits import ServiceLimits
from parley.agent.service.server import RealtimeServer
from parley.agent.service.watch import ConnectionWatch
from tests.service_support import short_reply_agent

BOUND_S = 20.0  # generous bounds on real time, so a loaded CI machine does not flake


def test_watch_expires_only_on_a_stalled_send_or_a_silent_client():
    clock = VirtualClock(100.0)
    watch = ConnectionWatch(slow_consumer_s=5.0, idle_s=30.0, now=clock.now)
    clock.advance(60.0)
    watch.received()
    # Nothing to send: an hour of quiet output is not a slow consumer.
    assert watch.expired(pending=0) is None
    watch.sending()
    clock.advance(4.9)
    assert watch.expired(pending=3) is None
    clock.advance(0.2)
    why = watch.expired(pending=3)
    assert why is not None and why.code == 1008 and why.metric == "client_too_slow"
    watch.sent()
    assert watch.expired(pending=3) is None  # progress resets the wait
    watch.received()
    clock.advance(29.0)
    watch.sent()  # the server talking does not make the client alive
    assert watch.expired(pending=0) is None
    clock.advance(1.5)
    why = watch.expired(pending=0)
    assert why is not None and why.code == 1001 and why.metric == "client_idle"
    off = ConnectionWatch(slow_consumer_s=None, idle_s=0, now=clock.now)
    off.sending()
    clock.advance(10_000)
    assert off.expired(pending=10) is None


@contextlib.asynccontextmanager
async def running(model, **limits):
    server = RealtimeServer(short_reply_agent(model), ServiceLimits(**limits))
    async with server.serve("127.0.0.1", 0) as srv:
        yield server, srv.sockets[0].getsockname()[1]


async def wait_for(predicate, what: str) -> float:
    loop = asyncio.get_running_loop()
    t0 = loop.time()
    while not predicate():
        if loop.time() - t0 > BOUND_S:
            raise AssertionError(f"not within {BOUND_S} s: {what}")
        await asyncio.sleep(0.02)
    return loop.time() - t0


def masked_text_frame(payload: bytes) -> bytes:
    """A client text frame (clients must mask; an all-zero key leaves the bytes as they are)."""
    n = len(payload)
    assert n < 126, "short frames only"
    return bytes([0x81, 0x80 | n]) + b"\0\0\0\0" + payload


async def test_a_client_that_never_reads_is_closed_1008(tiny_model, caplog):
    # The message budget would pace the flood (and so the answers) down to what the socket
    # buffers absorb for a while: lifted here, where the point is the unread socket.
    unbudgeted = {"max_messages_per_s": 1e9, "message_burst": 10**9}
    async with running(tiny_model, slow_consumer_timeout_s=1.0, **unbudgeted) as (server, port):
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # before connect
        sock.setblocking(False)
        await asyncio.get_running_loop().sock_connect(sock, ("127.0.0.1", port))
        reader, writer = await asyncio.open_connection(sock=sock)
        try:
            writer.write(
                b"GET /v1/realtime HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\n"
                b"Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
                b"Sec-WebSocket-Version: 13\r\n\r\n"
            )
            async with asyncio.timeout(BOUND_S):
                assert b" 101 " in await reader.readline()
            await wait_for(lambda: len(server.agent.sessions) == 1, "session opened")
            # Each request is answered with the whole session (~1 kB) that this client will
            # never read: megabytes of answers, more than the socket buffers hold.
            update = json.dumps({"type": "session.update", "session": {}}).encode()
            frame = masked_text_frame(update)
            for _ in range(20):
                writer.write(frame * 1000)  # buffered by the transport; never drained
                await asyncio.sleep(0.01)
            await wait_for(lambda: not server.agent.sessions, "slow consumer closed")
        finally:
            writer.transport.abort()
    assert server.metrics.errors["client_too_slow"] == 1
    assert any("closing (1008)" in r.getMessage() for r in caplog.records)


async def test_a_silent_connection_is_closed_1001_and_a_talking_one_is_not(tiny_model):
    async with running(tiny_model, idle_timeout_s=0.6) as (server, port):
        url = f"ws://127.0.0.1:{port}/v1/realtime"
        async with connect(url) as talking, connect(url) as silent:
            await talking.recv()  # session.created
            await silent.recv()
            loop = asyncio.get_running_loop()
            t0 = loop.time()
            while loop.time() - t0 < 1.5:
                # A message every 0.2 s keeps a connection alive, whatever it is.
                await talking.send(json.dumps({"type": "input_audio_buffer.clear"}))
                await asyncio.sleep(0.2)
            with pytest.raises(ConnectionClosed) as closed:
                async with asyncio.timeout(BOUND_S):
                    while True:
                        await silent.recv()
            assert closed.value.rcvd is not None and closed.value.rcvd.code == 1001
            assert talking.state.name == "OPEN"
            await talking.send(json.dumps({"type": "input_audio_buffer.clear"}))
        await wait_for(lambda: not server.agent.sessions, "sessions closed")
    assert server.metrics.errors["client_idle"] == 1


def test_serve_refuses_a_negative_timeout_in_one_line(capsys):
    from parley.agent.cli import main

    assert main(["serve", "--idle-timeout", "-1"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--idle-timeout" in err[0]
