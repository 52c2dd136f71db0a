"""Per-connection budgets: a client that asks for more than real time waits for it alone."""

from __future__ import annotations

import asyncio
import contextlib
import json

import pytest
from websockets.asyncio.client import connect

from parley.agent.core.clock import VirtualClock
from parley.agent.service.budget import Budget
from parley.agent.service.limits import ServiceLimits
from parley.agent.service.server import RealtimeServer
from tests.service_support import BridgeRig, b64, short_reply_agent, speechlike


def test_budget_lends_its_burst_then_charges_time():
    clock = VirtualClock()
    budget = Budget(rate=10.0, burst=5.0, now=clock.now)
    assert [budget.spend(1) for _ in range(5)] == [0.0] * 5
    assert budget.spend(1) == pytest.approx(0.1)  # one unit in debt at 10 a second
    assert budget.spend(2) == pytest.approx(0.3)
    clock.advance(0.3)
    assert budget.wait() == 0.0
    clock.advance(100.0)  # saving up stops at the burst
    assert budget.spend(5) == 0.0 and budget.spend(1) == pytest.approx(0.1)
    with pytest.raises(ValueError):
        Budget(rate=0, burst=1, now=clock.now)


async def test_committed_clips_beyond_real_time_make_the_sender_wait(tiny_model):
    agent = short_reply_agent(tiny_model)
    rig = BridgeRig(agent, spans=[(0.1, 0.9)], limits=ServiceLimits(max_buffered_audio_s=4.0))
    await rig.send(type="session.update", session={"audio": {"input": {"turn_detection": None}}})
    waits = []
    for _ in range(3):
        # 3 s clips: the first fits the 4 s burst, the next ones are paid in time.
        for chunk in range(3):
            await rig.send(type="input_audio_buffer.append", audio=b64(speechlike(1.0, seed=chunk)))
        await rig.send(type="input_audio_buffer.commit")
        await rig.send(type="response.create")
        waits.append(rig.bridge.backoff())
        if rig.session.reply_running:
            await rig.send(type="response.cancel")
    assert waits[0] == 0.0
    assert waits[1] > 1.0 and waits[2] > waits[1]
    await rig.session.aclose()


@contextlib.asynccontextmanager
async def running(model, **limits):
    server = RealtimeServer(short_reply_agent(model), ServiceLimits(**limits))
    async with server.serve("127.0.0.1", 0) as srv:
        yield server, srv.sockets[0].getsockname()[1]


async def test_a_message_flood_is_handled_at_the_budgeted_rate(tiny_model):
    rate, burst, n = 100.0, 20, 120
    limits = {"max_messages_per_s": rate, "message_burst": burst}
    async with (
        running(tiny_model, **limits) as (server, port),
        connect(f"ws://127.0.0.1:{port}/v1/realtime") as ws,
    ):
        await ws.recv()  # session.created
        loop = asyncio.get_running_loop()
        t0 = loop.time()
        for _ in range(n):
            await ws.send(json.dumps({"type": "session.update", "session": {}}))
        answered = 0
        async with asyncio.timeout(60):
            while answered < n:
                event = json.loads(await ws.recv())
                answered += event["type"] == "session.updated"
        took = loop.time() - t0
    # A lower bound, so a slow machine cannot make it fail: past the burst, one message
    # per 1/rate seconds.
    assert took >= (n - burst - 1) / rate
    assert server.metrics.throttled["messages"] > 0
    assert "parley_throttled_total" in server.metrics.render()
