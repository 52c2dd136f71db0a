"""Does an abusive client take latency from a real-time one beside it?

    python benchmarks/bench_neighbour.py [--checkpoint DIR] [--repeats 3]
        [--abuse updates|manual|none] [--unbudgeted]

One server in this process (the default model), one real-time client running the shipped
``plain-turn`` and ``interrupt-mid-reply`` scenarios over the wire, and beside it an
abusive client: ``updates`` floods ``session.update`` as fast as its socket takes them;
``manual`` turns detection off and loops commit 9 s / response.create / cancel. Printed:
the real-time client's response latency and barge-in stop time (medians and p95 over
``--repeats`` rounds of the scenarios), the abuser's message count, and the server's
throttling counts. ``--unbudgeted`` lifts the per-connection budgets, for the before.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import json
import statistics
from pathlib import Path

import numpy as np
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from parley.agent.core.model import AgentModel
from parley.agent.harness.metrics import score
from parley.agent.harness.scenario import load_scenarios, shipped_scenarios_dir
from parley.agent.harness.wire import run_scenario_wire
from parley.agent.runtime import default_checkpoint, load_runtime_config
from parley.agent.service.api import Agent
from parley.agent.service.limits import ServiceLimits
from parley.agent.service.server import RealtimeServer

SCENARIOS = ("plain-turn", "interrupt-mid-reply")


async def _flood_updates(url: str, stop: asyncio.Event, sent: list[int]) -> None:
    async with connect(url, compression=None) as ws:
        msg = json.dumps({"type": "session.update", "session": {}})
        while not stop.is_set():
            await ws.send(msg)  # never reads its answers: the socket decides the pace
            sent[0] += 1


async def _manual_bursts(url: str, stop: asyncio.Event, sent: list[int]) -> None:
    rng = np.random.default_rng(0)
    clip = (0.1 * rng.standard_normal(24000)).astype("<f4")
    pcm = base64.b64encode((np.clip(clip, -1, 1) * 32767).astype("<i2").tobytes()).decode()
    async with connect(url, compression=None) as ws:
        update = {
            "type": "session.update",
            "session": {"audio": {"input": {"turn_detection": None}}},
        }
        await ws.send(json.dumps(update))
        reader = asyncio.create_task(_drain(ws))
        try:
            while not stop.is_set():
                for _ in range(9):
                    await ws.send(json.dumps({"type": "input_audio_buffer.append", "audio": pcm}))
                for kind in ("input_audio_buffer.commit", "response.create", "response.cancel"):
                    await ws.send(json.dumps({"type": kind}))
                sent[0] += 12
        finally:
            reader.cancel()


async def _drain(ws) -> None:
    with contextlib.suppress(ConnectionClosed):
        async for _ in ws:
            pass


async def run(args: argparse.Namespace) -> None:
    cfg = load_runtime_config(argparse.Namespace())
    model = AgentModel.load(args.checkpoint or default_checkpoint(print), cfg)
    limits = ServiceLimits(max_sessions=4)
    if args.unbudgeted:
        limits = ServiceLimits(max_sessions=4, max_messages_per_s=1e9, max_bytes_per_s=1e12,
                               max_buffered_audio_s=1e6)  # fmt: skip
    server = RealtimeServer(Agent(model), limits)
    scenarios = [s for s in load_scenarios(shipped_scenarios_dir()) if s.name in SCENARIOS]
    latency, stops, sent = [], [], [0]
    async with server.serve("127.0.0.1", 0) as srv:
        url = f"ws://127.0.0.1:{srv.sockets[0].getsockname()[1]}/v1/realtime"
        stop = asyncio.Event()
        abuser = {"updates": _flood_updates, "manual": _manual_bursts}.get(args.abuse)
        task = asyncio.create_task(abuser(url, stop, sent)) if abuser else None
        try:
            for _ in range(args.repeats):
                for scenario in scenarios:
                    s = score(await run_scenario_wire(url, scenario))
                    latency += s["response_latency_ms"]["values"]
                    stops += s["barge_in_stop_ms"]["values"]
        finally:
            stop.set()
            if task is not None:
                task.cancel()
                # A send cancelled while the server throttles it aborts a transport that
                # may already be gone (asyncio then raises AttributeError on its loop).
                with contextlib.suppress(asyncio.CancelledError, ConnectionClosed, AttributeError):
                    await task
    await model.aclose()
    print(f"abuse={args.abuse} budgets={'off' if args.unbudgeted else 'on'} repeats={args.repeats}")
    for name, values in (("response latency", latency), ("barge-in stop", stops)):
        if values:
            p95 = sorted(values)[max(0, round(0.95 * len(values)) - 1)]
            print(f"  {name}: median {statistics.median(values):.0f} ms, p95 {p95:.0f} ms, "
                  f"max {max(values):.0f} ms (n={len(values)})")  # fmt: skip
    print(f"  abuser messages sent: {sent[0]}; throttled: {dict(server.metrics.throttled)} "
          f"({server.metrics.throttled_s:.1f} s)")  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", type=Path, default=None)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--abuse", choices=("updates", "manual", "none"), default="updates")
    parser.add_argument("--unbudgeted", action="store_true")
    asyncio.run(run(parser.parse_args()))


if __name__ == "__main__":
    main()
