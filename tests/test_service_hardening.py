"""Hardening of the Realtime service: auth (one header, exact token, token sources,
private /metrics), bounded error logging, and controls that are checked before they act
(truncate, session ids, the VAD threshold)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import math
import re
from types import SimpleNamespace

import httpx
import pytest
from pydantic import ValidationError
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from parley.agent.cli import main as cli_main
from parley.agent.service import protocol as P
from parley.agent.service.api import SessionIdError
from parley.agent.service.auth import TOKEN_ENV, resolve_token
from parley.agent.service.limits import ServiceLimits
from parley.agent.service.server import RealtimeServer
from parley.agent.service.session_config import WireConfig
from parley.agent.service.settings import VAD_THRESHOLD_MAX, VAD_THRESHOLD_MIN, SessionSettings
from parley.errors import ConfigError
from tests.service_support import BridgeRig, short_reply_agent, speechlike

TOKEN = "s3cret"
LOGGER = "parley.service"


@contextlib.asynccontextmanager
async def running(model, token: str | None = None, **options):
    server = RealtimeServer(short_reply_agent(model), ServiceLimits(), token=token, **options)
    async with server.serve("127.0.0.1", 0) as srv:
        yield server, srv.sockets[0].getsockname()[1]


async def handshake(port: int, headers: list[tuple[str, bytes]], path="/v1/realtime") -> int:
    """The HTTP status a WebSocket handshake with exactly these header bytes gets (no client
    library in the way: it would merge duplicates or re-encode values); a Host among them
    replaces the usual one."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        lines = [
            f"GET {path} HTTP/1.1".encode(),
            *([] if any(n == "Host" for n, _ in headers) else [f"Host: 127.0.0.1:{port}".encode()]),
            b"Upgrade: websocket",
            b"Connection: Upgrade",
            b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==",
            b"Sec-WebSocket-Version: 13",
            *(name.encode() + b": " + value for name, value in headers),
        ]
        writer.write(b"\r\n".join(lines) + b"\r\n\r\n")
        await writer.drain()
        async with asyncio.timeout(10):
            status = await reader.readline()
        return int(status.split()[1])
    finally:
        writer.close()
        with contextlib.suppress(ConnectionError):
            await writer.wait_closed()


async def sessions_gone(server: RealtimeServer) -> None:
    """The handlers' cleanup runs after the close handshake; wait (bounded) for it."""
    for _ in range(1000):  # up to 10 s: a generous bound, not a timing assumption
        if not server.agent.sessions:
            return
        await asyncio.sleep(0.01)
    raise AssertionError(f"sessions still open: {server.agent.sessions}")


# ---------------------------------------------------------------------- A: auth


async def test_duplicate_authorization_header_is_a_clean_400(tiny_model, caplog):
    caplog.set_level(logging.INFO)
    twice = [("Authorization", f"Bearer {TOKEN}".encode())] * 2
    async with running(tiny_model, token=TOKEN) as (server, port):
        assert await handshake(port, twice) == 400
        assert await handshake(port, twice, path="/metrics") == 400
        assert server.agent.sessions == []
    assert [r for r in caplog.records if r.exc_info] == []  # no handshake traceback
    refused = [r for r in caplog.records if "Authorization headers" in r.getMessage()]
    assert len(refused) == 2 and all(r.name == LOGGER for r in refused)
    assert server.metrics.sessions_rejected == {"bad_request": 2}


async def test_bearer_token_is_compared_exactly(tiny_model):
    async with running(tiny_model, token=TOKEN) as (server, port):
        assert await handshake(port, [("Authorization", b"Bearer s3cret")]) == 101
        assert await handshake(port, [("Authorization", b"bearer s3cret")]) == 101
        await sessions_gone(server)
        for value in (b"Bearer  s3cret", b"Bearer s3cret\xa0", b"Bearer s3cre", b"Bearers3cret"):
            assert await handshake(port, [("Authorization", value)]) == 401, value
        assert server.metrics.sessions_rejected == {"unauthorized": 4}


async def test_metrics_need_the_token_when_one_is_set(tiny_model):
    async with running(tiny_model, token=TOKEN) as (_, port), httpx.AsyncClient() as http:
        base = f"http://127.0.0.1:{port}"
        assert (await http.get(f"{base}/metrics")).status_code == 401
        wrong = {"Authorization": "Bearer nope"}
        assert (await http.get(f"{base}/metrics", headers=wrong)).status_code == 401
        right = {"Authorization": f"Bearer {TOKEN}"}
        metrics = await http.get(f"{base}/metrics", headers=right)
        assert metrics.status_code == 200 and "parley_sessions_active 0" in metrics.text
        assert (await http.get(f"{base}/healthz")).status_code == 200  # liveness stays open


def test_token_sources_and_precedence(tmp_path):
    file = tmp_path / "token"
    file.write_text("from-file\n")
    env = {TOKEN_ENV: "from-env"}
    assert resolve_token(None, None, {}) == (None, None)
    assert resolve_token(None, None, env) == ("from-env", f"${TOKEN_ENV}")
    assert resolve_token("from-flag", None, env) == ("from-flag", "--token")
    assert resolve_token(None, file, env) == ("from-file", "--token-file")
    file.write_bytes(b"crlf\r\n")
    assert resolve_token(None, file, {})[0] == "crlf"
    with pytest.raises(ConfigError, match="not both"):
        resolve_token("a", file, {})
    bad = {
        "missing": (tmp_path / "missing", "cannot read it"),
        "a directory": (tmp_path, "cannot read it"),
        "empty": (tmp_path / "empty", "is empty"),
        "just a newline": (tmp_path / "newline", "is empty"),
        "padded": (tmp_path / "padded", "whitespace"),
        "two lines": (tmp_path / "two", "one line"),
        "huge": (tmp_path / "huge", "not a token file"),
    }
    (tmp_path / "empty").write_bytes(b"")
    (tmp_path / "newline").write_bytes(b"\n")
    (tmp_path / "padded").write_bytes(b"tok \n")
    (tmp_path / "two").write_bytes(b"tok\nen\n")
    (tmp_path / "huge").write_bytes(b"x" * 10_000)
    for case, (path, why) in bad.items():
        with pytest.raises(ConfigError, match=why) as info:
            resolve_token(None, path, {})
        assert "\n" not in str(info.value) and str(path) in str(info.value), case
    with pytest.raises(ConfigError, match="empty"):
        resolve_token(None, None, {TOKEN_ENV: ""})
    with pytest.raises(ConfigError, match="whitespace"):
        resolve_token(" tok", None, {})
    with pytest.raises(ConfigError, match="whitespace"):  # a server built in Python too
        RealtimeServer(SimpleNamespace(), token="tok ")  # type: ignore[arg-type]


def test_serve_refuses_a_bad_token_file_in_one_line(tmp_path, monkeypatch, capsys):
    monkeypatch.delenv(TOKEN_ENV, raising=False)
    missing = tmp_path / "nope"
    args = ["serve", "--host", "0.0.0.0", "--port", "0"]
    assert cli_main([*args, "--token-file", str(missing)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and str(missing) in err and "cannot read it" in err
    (tmp_path / "empty").write_text("")
    assert cli_main([*args, "--token-file", str(tmp_path / "empty")]) == 2
    assert "is empty" in capsys.readouterr().err
    assert cli_main([*args, "--token", "a", "--token-file", str(tmp_path / "empty")]) == 2
    assert "not both" in capsys.readouterr().err
    # The token in the environment is the one the bind check (and the server) gets;
    # stopped there, before any model is loaded.
    seen = []

    def check_bind(host, token):
        seen.append(token)
        raise ConfigError("stopped by the test")

    monkeypatch.setattr("parley.agent.service.limits.check_bind", check_bind)
    monkeypatch.setenv(TOKEN_ENV, TOKEN)
    assert cli_main(args) == 2 and seen == [TOKEN]


# ---------------------------------------------------------------------- B: error logs

SUMMARY = re.compile(r"(\d+) more (\w+) errors suppressed")


def summarised(caplog, code: str) -> list[int]:
    return [
        int(m.group(1))
        for r in caplog.records
        if (m := SUMMARY.search(r.getMessage())) and m.group(2) == code
    ]


def logged_in_full(caplog, code: str) -> int:
    return sum(f"error code={code}:" in r.getMessage() for r in caplog.records)


async def test_error_logs_are_rate_limited_per_code_and_metrics_stay_exact(agent, caplog):
    caplog.set_level(logging.INFO, logger=LOGGER)
    rig = BridgeRig(agent)
    for _ in range(1000):
        await rig.send(type="no.such.event")
    await rig.send(type="input_audio_buffer.append", audio="@@@")
    assert rig.errors().count("unknown_event_type") == 1000  # every client still hears
    assert rig.bridge.metrics.errors == {"unknown_event_type": 1000, "invalid_audio": 1}
    assert logged_in_full(caplog, "unknown_event_type") == 5
    assert logged_in_full(caplog, "invalid_audio") == 1  # codes are limited apart
    assert summarised(caplog, "unknown_event_type") == []
    # A summary at most every 10 s (of the session's clock), when errors go on...
    rig.clock.advance(10.0)
    await rig.send(type="no.such.event")
    assert summarised(caplog, "unknown_event_type") == [996]
    for _ in range(3):
        await rig.send(type="no.such.event")
    assert summarised(caplog, "unknown_event_type") == [996]
    # ...and what is left is told when the connection ends.
    rig.bridge.out.error_log.flush()
    assert summarised(caplog, "unknown_event_type") == [996, 3]
    assert len(caplog.records) <= 10
    await rig.session.aclose()


async def test_an_abusive_connection_logs_a_bounded_number_of_lines(tiny_model, caplog):
    caplog.set_level(logging.INFO, logger=LOGGER)
    n = 300
    async with running(tiny_model) as (server, port):
        async with connect(f"ws://127.0.0.1:{port}/v1/realtime") as ws:
            assert json.loads(await ws.recv())["type"] == "session.created"
            for _ in range(n):
                await ws.send("{not json")
            async with asyncio.timeout(30):
                for _ in range(n):
                    assert json.loads(await ws.recv())["error"]["code"] == "invalid_json"
        await sessions_gone(server)
    assert server.metrics.errors == {"invalid_json": n}
    full = logged_in_full(caplog, "invalid_json")
    counts = summarised(caplog, "invalid_json")
    assert full == 5 and full + sum(counts) == n  # every error accounted for in the log
    assert len(counts) <= 4  # one at close, plus one per 10 s the test took


# ---------------------------------------------------------------------- C: controls


@pytest.fixture
def agent(tiny_model):
    return short_reply_agent(tiny_model)


async def test_a_refused_truncate_leaves_the_reply_in_flight_alone(agent):
    rig = BridgeRig(agent, spans=[(0.2, 1.2)])
    await rig.stream(speechlike(1.4))
    await rig.idle(1.0)
    assert rig.session.reply_running
    item = rig.of("response.output_audio.delta")[0]["item_id"]
    await rig.send(type="conversation.item.truncate", item_id=item, audio_end_ms=99_000)
    assert rig.session.reply_running and rig.of("response.done") == []
    (error,) = rig.of("error")
    assert error["error"]["code"] == "invalid_value"
    assert error["error"]["param"] == "audio_end_ms"
    await rig.idle(3.0)
    done = rig.of("response.done")[0]["response"]
    assert done["status"] == "completed" and done["status_details"]["reason"] is None
    assert rig.of("conversation.item.truncated") == []
    await rig.session.aclose()


async def test_session_ids_are_unique(agent):
    first = agent.open_session(session_id="fixed")
    with pytest.raises(SessionIdError, match="already open"):
        agent.open_session(session_id="fixed")
    with pytest.raises(SessionIdError, match="empty"):
        agent.open_session(session_id="")
    assert agent.sessions == [first]
    generated = [agent.open_session() for _ in range(20)]
    assert len({s.id for s in generated}) == 20 and "fixed" not in {s.id for s in generated}
    for s in [first, *generated]:
        await s.aclose()
    assert agent.sessions == []
    # Closed, the id is free again.
    again = agent.open_session(session_id="fixed")
    await again.aclose()


async def test_server_refuses_a_second_session_with_a_fixed_id(tiny_model, caplog):
    url_of = "ws://127.0.0.1:{}/v1/realtime".format
    async with running(tiny_model, session_options={"session_id": "fixed"}) as (server, port):
        async with connect(url_of(port)) as first:
            assert json.loads(await first.recv())["session"]["id"] == "fixed"
            async with connect(url_of(port)) as second:
                with pytest.raises(ConnectionClosed) as info:
                    await asyncio.wait_for(second.recv(), 10)
                assert info.value.rcvd.code == 1011
            (session,) = server.agent.sessions
            assert session.id == "fixed"
            await first.send(json.dumps({"type": "session.update", "session": {}}))
            assert json.loads(await asyncio.wait_for(first.recv(), 10))["type"] == (
                "session.updated"
            )
        await sessions_gone(server)


def vad_update(threshold) -> tuple[WireConfig, SessionSettings]:
    td = {"type": "server_vad", "threshold": threshold}
    raw = json.dumps(
        {"type": "session.update", "session": {"audio": {"input": {"turn_detection": td}}}}
    )
    event = P.parse_client_event(raw)
    return WireConfig().updated(event.session, SessionSettings(), "e1")


@pytest.mark.parametrize("threshold", [0.0, 1.0, 0.1, 0.95, -1.0, 2.0, math.nan, math.inf])
def test_vad_threshold_outside_the_sane_range_is_refused(threshold):
    with pytest.raises(P.ProtocolError) as info:
        vad_update(threshold)
    exc = info.value
    assert (exc.kind, exc.code) == ("invalid_request_error", "invalid_value")
    assert exc.param == "session.audio.input.turn_detection.threshold"
    assert f"between {VAD_THRESHOLD_MIN:g} and {VAD_THRESHOLD_MAX:g}" in exc.message
    with pytest.raises(ValidationError):
        SessionSettings(vad_threshold=threshold)  # the Python API holds the same bounds


@pytest.mark.parametrize("threshold", [VAD_THRESHOLD_MIN, 0.3, 0.5, VAD_THRESHOLD_MAX])
def test_vad_threshold_inside_the_range_is_taken(threshold):
    assert vad_update(threshold)[1].vad_threshold == threshold


async def test_a_refused_vad_threshold_changes_nothing(agent):
    rig = BridgeRig(agent)
    td = {"type": "server_vad", "threshold": 1.0, "silence_duration_ms": 900}
    await rig.send(type="session.update", session={"audio": {"input": {"turn_detection": td}}})
    assert rig.errors() == ["invalid_value"]
    assert rig.of("session.updated") == []
    assert rig.session.settings == SessionSettings()
    await rig.session.aclose()
