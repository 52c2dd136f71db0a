"""What `serve` gives a browser, short of running one (tests/test_browser.py does): the
page and its files, the token as a subprotocol, the plain-GET check a page makes before it
connects, and the rule that keeps other sites' pages off a server without a token."""

from __future__ import annotations

import base64
from dataclasses import replace

import httpx
import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import InvalidStatus

from parley.agent.service.pages import WEB_DIR, WebPages
from tests.test_service_hardening import TOKEN, handshake, running, sessions_gone

pytestmark = pytest.mark.slow


def parley_token(token: str) -> str:
    return "parley-token." + base64.urlsafe_b64encode(token.encode()).decode().rstrip("=")


async def test_the_page_and_its_files_are_served_with_a_strict_policy(tiny_model):
    async with running(tiny_model) as (_, port), httpx.AsyncClient() as http:
        base = f"http://127.0.0.1:{port}"
        page = await http.get(f"{base}/")
        assert page.status_code == 200
        assert page.headers["content-type"] == "text/html; charset=utf-8"
        assert page.text == (WEB_DIR / "index.html").read_text()
        csp = page.headers["content-security-policy"]
        assert "default-src 'self'" in csp and "frame-ancestors 'none'" in csp
        assert page.headers["x-content-type-options"] == "nosniff"
        assert '"/web/app.js"' in page.text and '"/web/style.css"' in page.text
        # Everything the page loads comes from this server, with the right type.
        for name in ("app.js", "audio.js", "realtime.js", "capture-worklet.js", "style.css"):
            got = await http.get(f"{base}/web/{name}")
            assert got.status_code == 200, name
            assert got.text == (WEB_DIR / name).read_text()
        assert (
            (await http.get(f"{base}/web/app.js"))
            .headers["content-type"]
            .startswith("text/javascript")
        )
        for path in ("/web/../server.py", "/web/pages.py", "/web/", "/index.html/x"):
            assert (await http.get(f"{base}{path}")).status_code == 404, path


def test_page_files_are_read_once_and_only_known_types(tmp_path):
    (tmp_path / "index.html").write_text("<p>hi</p>")
    (tmp_path / "notes.txt").write_text("not served")
    pages = WebPages(tmp_path)
    assert set(pages.assets) == {"/", "/web/index.html"}
    (tmp_path / "index.html").write_text("changed")
    assert pages.get("/").body == b"<p>hi</p>"
    (tmp_path / "index.html").unlink()
    with pytest.raises(FileNotFoundError, match="browser client is missing"):
        WebPages(tmp_path)


async def test_the_plain_get_check_says_what_a_connect_would_meet(tiny_model):
    async with running(tiny_model, token=TOKEN) as (server, port), httpx.AsyncClient() as http:
        url = f"http://127.0.0.1:{port}/v1/realtime"
        assert (await http.get(url)).status_code == 401
        wrong = await http.get(url, headers={"Authorization": "Bearer nope"})
        assert wrong.status_code == 401
        right = await http.get(url, headers={"Authorization": f"Bearer {TOKEN}"})
        assert right.status_code == 200 and right.text.startswith("ready")
        assert server.agent.sessions == []  # asking opens nothing
        server.limits = replace(server.limits, max_sessions=0)
        full = await http.get(url, headers={"Authorization": f"Bearer {TOKEN}"})
        assert full.status_code == 503 and full.headers["retry-after"] == "5"


async def test_a_browser_sends_the_token_as_a_subprotocol(tiny_model):
    url_path = "/v1/realtime"
    token = "a/b+c=d e"  # not a valid subprotocol as it is; base64url carries any token
    async with running(tiny_model, token=token) as (server, port):
        url = f"ws://127.0.0.1:{port}{url_path}"
        async with connect(url, subprotocols=["realtime", parley_token(token)]) as ws:
            assert ws.subprotocol == "realtime"
            assert len(server.agent.sessions) == 1
        await sessions_gone(server)
        # One token per handshake: more offers would be more guesses at once.
        two = ["realtime", parley_token("guess"), parley_token(token)]
        with pytest.raises(InvalidStatus) as refused:
            async with connect(url, subprotocols=two):
                pass
        assert refused.value.response.status_code == 400
        for offered in ([parley_token("wrong")], ["parley-token.!!!"], ["realtime"]):
            with pytest.raises(InvalidStatus) as refused:
                async with connect(url, subprotocols=["realtime", *offered]):
                    pass
            assert refused.value.response.status_code == 401, offered
    async with running(tiny_model, token=TOKEN) as (server, port):
        # The Realtime API's own browser clients send the token this way.
        offered = ["realtime", f"openai-insecure-api-key.{TOKEN}"]
        async with connect(f"ws://127.0.0.1:{port}{url_path}", subprotocols=offered) as ws:
            assert ws.subprotocol == "realtime"
    # Clients that offer no subprotocol are served as before, and choose none.
    async with (
        running(tiny_model) as (server, port),
        connect(f"ws://127.0.0.1:{port}{url_path}") as ws,
    ):
        assert ws.subprotocol is None


async def test_other_sites_pages_need_a_token(tiny_model):
    async with running(tiny_model) as (server, port):
        here = f"http://127.0.0.1:{port}".encode()
        assert await handshake(port, [("Origin", here)]) == 101
        await sessions_gone(server)
        assert await handshake(port, [("Origin", b"http://elsewhere.example")]) == 403
        assert await handshake(port, [("Origin", b"http://127.0.0.1:1")]) == 403
        # A site that rebinds its own name to 127.0.0.1 sends a matching Host: refused,
        # since a page of this server is only ever opened at a loopback name.
        rebound = f"evil.example:{port}".encode()
        with_host = [("Origin", b"http://" + rebound), ("Host", rebound)]
        assert await handshake(port, with_host) == 403
        local = f"localhost:{port}".encode()
        assert await handshake(port, [("Origin", b"http://" + local), ("Host", local)]) == 101
        await sessions_gone(server)
        assert await handshake(port, [("Origin", here), ("Origin", here)]) == 400
        assert server.metrics.sessions_rejected == {"cross_origin": 3, "bad_request": 1}
    async with running(tiny_model, token=TOKEN) as (server, port):
        # With a token the token decides: a page that has it may be served from anywhere.
        elsewhere = [("Origin", b"http://elsewhere.example")]
        assert await handshake(port, elsewhere) == 401
        right = elsewhere + [("Authorization", f"Bearer {TOKEN}".encode())]
        assert await handshake(port, right) == 101


def test_serve_prints_an_address_a_browser_can_open():
    from parley.agent.commands import _url_host

    # A wildcard bind is opened on loopback: a secure context, where the microphone works.
    assert _url_host("0.0.0.0") == "127.0.0.1" and _url_host("::") == "127.0.0.1"
    assert _url_host("127.0.0.1") == "127.0.0.1" and _url_host("::1") == "[::1]"
