"""The WebSocket server: Realtime sessions at ``/v1/realtime``, ``/healthz``, ``/metrics``,
and the browser client at ``/``.

One :class:`Agent` (one engine) serves every connection. Each connection gets its own
:class:`RealtimeBridge`, audio-clock task and send queue, and everything that can go
wrong with a connection ends at its own handler: a bad message is an ``error`` event, a
failure inside a session closes that session, a client that leaves has its engine work
aborted. Nothing a client does reaches another session.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import json
import logging
import time
from collections.abc import AsyncIterator, Sequence
from http import HTTPStatus
from typing import Any
from urllib.parse import urlsplit

from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.datastructures import Headers
from websockets.exceptions import ConnectionClosed
from websockets.http11 import Request, Response
from websockets.typing import Subprotocol

from parley.agent.core.clock import Clock
from parley.agent.service.api import Agent, CapacityError, SessionIdError
from parley.agent.service.auth import AuthHeaderError, authorized, check_token
from parley.agent.service.bridge import RealtimeBridge
from parley.agent.service.budget import Budget
from parley.agent.service.limits import ServiceLimits
from parley.agent.service.metrics import ServiceMetrics
from parley.agent.service.pages import SECURITY_HEADERS, WebPages
from parley.agent.service.protocol import ProtocolError
from parley.agent.service.watch import CLOSE_SLOW_CONSUMER, ConnectionWatch, Expiry

log = logging.getLogger("parley.service")

# A stock Realtime client connects to ``<base>/realtime?model=...``; with the base
# ``ws://HOST:PORT/v1`` that is /v1/realtime.
REALTIME_PATHS = ("/v1/realtime", "/realtime")
CLOSE_GRACE_S = 2.0
"""How long a connection closed for misuse has to complete the close handshake."""
SUBPROTOCOL = "realtime"
"""Chosen when offered: a browser must offer one to send its token (see ``auth``), and it
drops a connection whose server does not choose one of those it offered."""


class RealtimeServer:
    """Serves an :class:`Agent` over the Realtime protocol (``docs/protocol.md``)."""

    def __init__(
        self,
        agent: Agent,
        limits: ServiceLimits | None = None,
        token: str | None = None,
        metrics: ServiceMetrics | None = None,
        clock_factory: type[Clock] | None = None,
        session_options: dict[str, Any] | None = None,
    ) -> None:
        self.agent = agent
        self.limits = limits or ServiceLimits()
        # Checked here too, for servers built in Python: a token no client can send
        # would refuse everyone.
        self.token = None if token is None else check_token(token, "token")
        self.metrics = metrics or ServiceMetrics()
        self.clock_factory = clock_factory
        self.session_options = session_options or {}  # passed to Agent.open_session (tests)
        agent.max_sessions = self.limits.max_sessions
        self.pages = WebPages()

    # ------------------------------------------------------------------ HTTP side

    def _respond(
        self,
        connection: ServerConnection,
        status: HTTPStatus,
        body: str | bytes,
        content_type: str,
        extra: Sequence[tuple[str, str]] = (),
    ) -> Response:
        data = body.encode() if isinstance(body, str) else body
        response = connection.respond(status, "")
        response.body = data
        response.headers = Headers(
            [
                ("Content-Type", content_type),
                ("Content-Length", str(len(data))),
                ("Connection", "close"),
                *extra,
            ]
        )
        return response

    def _refuse_unauthorized(
        self, connection: ServerConnection, request: Request
    ) -> Response | None:
        """None if the request may go on; else the response that refuses it."""
        if self.token is None:
            return None
        try:
            if authorized(request.headers, self.token):
                return None
        except AuthHeaderError as exc:
            # Malformed rather than wrong: 400, and one line (not a handshake traceback).
            self.metrics.sessions_rejected["bad_request"] += 1
            log.info("refused %r from %s: %s", request.path[:64], connection.remote_address, exc)
            return self._respond(connection, HTTPStatus.BAD_REQUEST, f"{exc}\n", "text/plain")
        self.metrics.sessions_rejected["unauthorized"] += 1
        return self._respond(
            connection, HTTPStatus.UNAUTHORIZED, "missing or wrong bearer token\n", "text/plain"
        )

    def process_request(self, connection: ServerConnection, request: Request) -> Response | None:
        path = urlsplit(request.path).path
        asset = self.pages.get(path)
        if asset is not None:
            # The page is public: what it may do is up to the token, checked on connect.
            return self._respond(
                connection, HTTPStatus.OK, asset.body, asset.content_type, SECURITY_HEADERS
            )
        if path == "/healthz":
            body = json.dumps({"status": "ok", "sessions": len(self.agent.sessions)})
            return self._respond(connection, HTTPStatus.OK, body + "\n", "application/json")
        if path == "/metrics":
            # What the server counts tells how it is used; with a token it is as private
            # as the sessions. /healthz stays open: it says no more than "up, N sessions".
            refused = self._refuse_unauthorized(connection, request)
            if refused is not None:
                return refused
            self.metrics.sessions_active = len(self.agent.sessions)
            return self._respond(
                connection,
                HTTPStatus.OK,
                self.metrics.render(),
                "text/plain; version=0.0.4; charset=utf-8",
            )
        if path not in REALTIME_PATHS:
            return self._respond(
                connection,
                HTTPStatus.NOT_FOUND,
                f"not found; Realtime sessions are at {REALTIME_PATHS[0]}\n",
                "text/plain",
            )
        refused = self._refuse_cross_origin(connection, request)
        if refused is None:
            refused = self._refuse_unauthorized(connection, request)
        if refused is not None:
            return refused
        if len(self.agent.sessions) >= self.limits.max_sessions:
            self.metrics.sessions_rejected["capacity"] += 1
            response = self._respond(
                connection,
                HTTPStatus.SERVICE_UNAVAILABLE,
                f"the server already runs {self.limits.max_sessions} sessions, all it can "
                "hold in real time; try again later\n",
                "text/plain",
            )
            response.headers["Retry-After"] = "5"
            return response
        if "websocket" not in [v.lower() for v in request.headers.get_all("Upgrade")]:
            # A page cannot read why a WebSocket handshake was refused, so it asks first
            # with a plain GET: the same checks, and 200 where a connection would be taken.
            return self._respond(
                connection,
                HTTPStatus.OK,
                "ready: a WebSocket upgrade here opens a session\n",
                "text/plain",
            )
        return None

    def _refuse_cross_origin(
        self, connection: ServerConnection, request: Request
    ) -> Response | None:
        """Without a token, only this server's own page may open a session from a
        browser: any site the user visits could otherwise use the agent behind their back.
        The host must be a loopback name too, or a site could rebind its own name to
        127.0.0.1 and be "this server". Clients that are not browsers send no Origin."""
        try:
            origin = _one_header(request, "Origin")
            host = _one_header(request, "Host")
        except ValueError as exc:
            self.metrics.sessions_rejected["bad_request"] += 1
            return self._respond(connection, HTTPStatus.BAD_REQUEST, f"{exc}\n", "text/plain")
        if self.token is not None or origin is None:
            return None
        if urlsplit(origin).netloc == host and _is_loopback_name(urlsplit(origin).hostname):
            return None
        self.metrics.sessions_rejected["cross_origin"] += 1
        return self._respond(
            connection,
            HTTPStatus.FORBIDDEN,
            "without a token, only this server's own page at a loopback address "
            "(http://127.0.0.1:PORT/, http://localhost:PORT/) may connect\n",
            "text/plain",
        )

    # ------------------------------------------------------------------ sessions

    async def handler(self, ws: ServerConnection) -> None:
        try:
            session = self.agent.open_session(
                clock=self.clock_factory() if self.clock_factory else None, **self.session_options
            )
        except CapacityError:
            # Two handshakes raced for the last place; the loser is told why.
            self.metrics.sessions_rejected["capacity"] += 1
            await ws.close(1013, "too many sessions")
            return
        except SessionIdError as exc:
            # Ids are generated unless session_options fixes one; a second connection
            # with it must not take the first one's place in the registry.
            log.error("refused a connection: %s", exc)
            await ws.close(1011, "session id already in use")
            return
        self.metrics.sessions_total += 1
        try:
            await self._run_session(ws, session)
        finally:
            # Aborts the reply on the engine if one is still running: the client is gone.
            await session.aclose()

    async def _run_session(self, ws: ServerConnection, session) -> None:
        outbox: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        overflow = asyncio.Event()

        def send(event: dict[str, Any]) -> None:
            if outbox.qsize() >= self.limits.max_pending_events:
                overflow.set()  # the client reads nothing; never grow without bound
                return
            outbox.put_nowait(event)

        bridge = RealtimeBridge(
            session,
            send,
            self.limits,
            self.metrics,
            clock=session.session.clock,
            model_name=_model_name(ws.request.path if ws.request else ""),
        )
        slog = bridge.log
        slog.info("opened from %s", ws.remote_address)
        watch = ConnectionWatch(self.limits.slow_consumer_timeout_s, self.limits.idle_timeout_s)
        watching = asyncio.create_task(watch.wait(outbox.qsize), name="watch")
        tasks = [
            asyncio.create_task(self._send_loop(ws, outbox, watch), name="send"),
            asyncio.create_task(bridge.run(), name="clock"),
            asyncio.create_task(self._receive_loop(ws, bridge, outbox, watch), name="receive"),
            asyncio.create_task(overflow.wait(), name="overflow"),
            watching,
        ]
        bridge.open()
        try:
            await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in tasks:
                task.cancel()
            # The session handles no more messages: what the error log only counted is
            # told now, whichever way the connection ends.
            bridge.out.error_log.flush()
            results = await asyncio.gather(*tasks, return_exceptions=True)
        failures = self._failures(tasks, results, slog)
        if failures:
            with contextlib.suppress(ConnectionClosed):
                await ws.send(json.dumps(_server_error(failures[0][1])))
            await ws.close(1011, "internal error")
        elif overflow.is_set():
            await self._expire(
                ws,
                Expiry(CLOSE_SLOW_CONSUMER, "client does not read its events", "client_too_slow"),
                outbox.qsize(),
                slog,
            )
        elif watching.done() and not watching.cancelled():
            await self._expire(ws, watching.result(), outbox.qsize(), slog)
        slog.info("closed (code %s)", ws.close_code)

    def _failures(
        self,
        tasks: Sequence[asyncio.Task[Any]],
        results: Sequence[Any],
        slog: logging.LoggerAdapter,
    ) -> list[tuple[asyncio.Task[Any], Exception]]:
        """The session's tasks that failed, each logged and counted. A closed connection is
        how a session normally ends, not a failure."""
        failures = [
            (task, exc)
            for task, exc in zip(tasks, results, strict=True)
            if isinstance(exc, Exception) and not isinstance(exc, ConnectionClosed)
        ]
        for task, exc in failures:
            slog.error("failed in %s: %r", task.get_name(), exc, exc_info=exc)
            self.metrics.errors["server_error"] += 1
        return failures

    async def _expire(
        self, ws: ServerConnection, why: Expiry, pending: int, slog: logging.LoggerAdapter
    ) -> None:
        slog.warning("closing (%s): %s; %d events pending", why.code, why.reason, pending)
        self.metrics.errors[why.metric] += 1
        try:
            async with asyncio.timeout(CLOSE_GRACE_S):
                await ws.close(why.code, why.reason)
        except TimeoutError:
            # A client that reads nothing cannot answer the close either: its close frame
            # waits behind everything it left unread. Drop the connection.
            ws.transport.abort()

    async def _receive_loop(
        self,
        ws: ServerConnection,
        bridge: RealtimeBridge,
        outbox: asyncio.Queue,
        watch: ConnectionWatch,
    ) -> None:
        limits = self.limits
        messages = Budget(limits.max_messages_per_s, limits.message_burst, time.monotonic)
        volume = Budget(limits.max_bytes_per_s, 2 * limits.max_message_bytes, time.monotonic)
        async for message in ws:
            watch.received()
            await self._throttle(
                {
                    "messages": messages.spend(1),
                    "bytes": volume.spend(len(message)),
                    "audio": bridge.backoff(),
                }
            )
            if outbox.qsize() > self.limits.max_pending_events // 2:
                # Read no more from a client that does not read its answers: its own
                # messages then wait in its socket, not in our memory.
                await outbox.join()
            if len(message) > self.limits.max_message_bytes:
                bridge.out.error(
                    ProtocolError(
                        "message_too_large",
                        f"message of {len(message)} bytes; at most "
                        f"{self.limits.max_message_bytes} (send audio in smaller chunks)",
                    )
                )
                continue
            await bridge.handle(message)

    async def _throttle(self, waits: dict[str, float]) -> None:
        """Wait out the longest debt before handling the message: only this connection's
        messages are delayed, and nothing it sends meanwhile is read."""
        name, delay = max(waits.items(), key=lambda kv: kv[1])
        if delay <= 0:
            return
        self.metrics.throttled[name] += 1
        self.metrics.throttled_s += delay
        await asyncio.sleep(delay)

    @staticmethod
    async def _send_loop(
        ws: ServerConnection, outbox: asyncio.Queue[dict[str, Any]], watch: ConnectionWatch
    ) -> None:
        while True:
            event = await outbox.get()
            watch.sending()
            try:
                await ws.send(json.dumps(event))
            finally:
                outbox.task_done()
                watch.sent()

    # ------------------------------------------------------------------ serving

    @contextlib.asynccontextmanager
    async def serve(self, host: str = "127.0.0.1", port: int = 8765) -> AsyncIterator[Server]:
        """Listen until the context exits (port 0 picks a free port: see ``server.sockets``)."""
        async with serve(
            self.handler,
            host,
            port,
            process_request=self.process_request,
            select_subprotocol=_select_subprotocol,
            max_size=2 * self.limits.max_message_bytes,
            compression=None,
            server_header="parley",
        ) as server:
            yield server
        for session in self.agent.sessions:
            await session.aclose()


def _one_header(request: Request, name: str) -> str | None:
    values = request.headers.get_all(name)
    if len(values) > 1:
        raise ValueError(f"{len(values)} {name} headers; send at most one")
    return values[0] if values else None


def _is_loopback_name(hostname: str | None) -> bool:
    if hostname in ("localhost", "localhost."):
        return True
    try:
        return ipaddress.ip_address(hostname or "").is_loopback
    except ValueError:
        return False


def _select_subprotocol(
    connection: ServerConnection, offered: Sequence[Subprotocol]
) -> Subprotocol | None:
    return Subprotocol(SUBPROTOCOL) if SUBPROTOCOL in offered else None


def _model_name(path: str) -> str:
    from urllib.parse import parse_qs

    model = parse_qs(urlsplit(path).query).get("model", ["parley"])[0]
    return model[:128]


def _server_error(exc: BaseException) -> dict[str, Any]:
    return {
        "type": "error",
        "event_id": "event_server_error",
        "error": {
            "type": "server_error",
            "code": "server_error",
            "message": f"the session failed and is closed: {type(exc).__name__}",
            "param": None,
            "event_id": None,
        },
    }
