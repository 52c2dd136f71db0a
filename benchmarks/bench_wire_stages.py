"""Where the time goes over the wire: barge-in and response latency, stage by stage.

    python benchmarks/bench_wire_stages.py [--checkpoint DIR] [--repeats 3] [--scenario NAME ...]
        [--turn-detection server_vad|semantic_vad]

One server in this process (the default model) and one Realtime client (``bench --url``'s,
``agent/harness/wire.py``) playing the shipped scenarios against it in real time. The
client's figures are split with the server's own events, taken from each session as it
runs. Client and server count the same samples: the server's timeline is the client's
microphone stream, sample for sample, and each frame in plays one frame out.

Response latency (the user's last sample to the client playing the first reply audio),
and its overhead as ``bench`` defines it (less the silence the turn detection waited and
the model's compute, which the protocol does not show a client), made of:

- turn end: to the server calling the turn over (the wait, plus VAD);
- server: turn end to the reply's first audio on the server's timeline (model compute
  left after the turn ended, of which the session's own account is printed beside it, plus
  waiting for the next frame; a reply started ahead did the rest in the user's silence);
- wire: that sample leaving the server to the client playing it (the client's 20 ms
  appends, the server's input resampler, the event loop, the network).

Barge-in stop (the user's onset to the client's playback going silent):

- server: onset to the server's playback pausing (the session's VAD, echo gate and
  evidence); counted apart where the session never paused before the client cut;
- wire: that pause to the client going silent.

Printed: the median, p95 and max of each stage over the runs, and each barge-in.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
from pathlib import Path
from typing import Any

from parley.agent.core.model import AgentModel
from parley.agent.harness.metrics import _barge_in
from parley.agent.harness.record import RunRecord
from parley.agent.harness.scenario import load_scenarios, shipped_scenarios_dir
from parley.agent.harness.wire import run_scenario_wire
from parley.agent.runtime import default_checkpoint, load_runtime_config
from parley.agent.service.api import Agent
from parley.agent.service.limits import ServiceLimits
from parley.agent.service.server import RealtimeServer
from parley.speech_io.audio import SAMPLE_RATE as SR


class TracedAgent(Agent):
    """An agent that keeps every event of every session it opens."""

    def __init__(self, model: AgentModel, config) -> None:
        super().__init__(model, config=config)
        self.traces: list[list[dict[str, Any]]] = []

    def open_session(self, *args, **kwargs):
        session = super().open_session(*args, **kwargs)
        trace: list[dict[str, Any]] = []
        self.traces.append(trace)
        session.subscribe(lambda ev: trace.append(ev.to_dict()))
        return session


def _ms(samples: float) -> float:
    return samples * 1000.0 / SR


def stages(record: RunRecord, server: list[dict[str, Any]]) -> dict[str, list[float]]:
    """The stage figures (ms) of one scenario run."""
    out: dict[str, list[float]] = {}
    add = lambda key, value: out.setdefault(key, []).append(value)  # noqa: E731
    # The server's timeline is the client's microphone stream, so where the session called
    # each turn over (and how long the turn detection waited) is a client sample too.
    turn_ends = [
        (e["decided_sample"], e["decided_sample"] - e["input_sample"])
        for e in server
        if e["type"] == "user_turn_ended"
    ]
    firsts = [e for e in server if e["type"] == "first_audio"]
    client_firsts = sorted(e["output_sample"] for e in record.events if e["type"] == "first_audio")
    segs = record.segments
    for i, seg in enumerate(segs):
        if seg.role not in ("turn", "interrupt", "continuation"):
            continue
        if i + 1 < len(segs) and segs[i + 1].role == "continuation":
            continue
        end, waited = next(((t, w) for t, w in turn_ends if t >= seg.offset_sample), (None, 0))
        first = next((f for f in firsts if end is not None and f["output_sample"] >= end), None)
        played = next((c for c in client_firsts if c >= seg.offset_sample), None)
        if end is None or first is None or played is None:
            continue
        # A reply started ahead of the turn's end spent that much compute in the silence.
        compute = max(0.0, first["compute_ms"] - first.get("ahead_ms", 0.0))
        add("response latency", _ms(played - seg.offset_sample))
        add(
            "  overhead: less the turn's wait and compute",
            _ms(played - seg.offset_sample - waited) - compute,
        )
        add("  turn end (the wait + VAD)", _ms(end - seg.offset_sample))
        add("  server: turn end to first audio", _ms(first["output_sample"] - end))
        add("    of it, model compute after the turn (session)", compute)
        add("  wire: server to client playing", _ms(played - first["output_sample"]))
    pauses = [e for e in server if e["type"] == "playback_paused"]
    for seg in segs:
        # One segment at a time through the harness's own scoring, so each stop is paired
        # with its segment (an unstopped or inaudible one gives none).
        stops, _ = _barge_in(record.output, [seg], SR)
        if not stops:
            continue
        stop = stops[0]
        add("barge-in stop", stop)
        pause = next((p for p in pauses if p["output_sample"] >= seg.onset_sample), None)
        if pause is not None and _ms(pause["output_sample"] - seg.onset_sample) <= stop:
            server_ms = _ms(pause["output_sample"] - seg.onset_sample)
            add("  server: onset to pause", server_ms)
            add("  wire: pause to client silent", stop - server_ms)
        else:
            add("  no server pause before the client cut", stop)
    return out


def _p95(values: list[float]) -> float:
    return sorted(values)[max(0, round(0.95 * len(values)) - 1)]


async def run(args: argparse.Namespace) -> None:
    cfg = load_runtime_config(argparse.Namespace(threads=args.threads))
    model = AgentModel.load(args.checkpoint or default_checkpoint(print), cfg)
    # The shipped scenarios' reply bounds, which the protocol cannot carry (see
    # docs/protocol.md: the same as serving with PARLEY_AGENT__REPLY_MIN_S=4 ..._MAX_S=8).
    bounds = {"reply_min_s": 4.0, "reply_max_s": 8.0}
    if args.turn_detection:
        bounds["turn_detection"] = args.turn_detection
    agent_cfg = model.config.agent.model_copy(update=bounds)
    agent = TracedAgent(model, model.config.model_copy(update={"agent": agent_cfg}))
    server = RealtimeServer(agent, ServiceLimits(max_sessions=2))
    scenarios = [
        s
        for s in load_scenarios(shipped_scenarios_dir())
        if not args.scenario or s.name in args.scenario
    ]
    totals: dict[str, list[float]] = {}
    async with server.serve("127.0.0.1", 0) as srv:
        url = f"ws://127.0.0.1:{srv.sockets[0].getsockname()[1]}/v1/realtime"
        for r in range(args.repeats):
            for scenario in scenarios:
                record = await run_scenario_wire(url, scenario)
                await asyncio.sleep(0.2)  # the session's last events
                found = stages(record, agent.traces[-1])
                for key, values in found.items():
                    totals.setdefault(key, []).extend(values)
                for stop in found.get("barge-in stop", []):
                    print(f"  round {r + 1} {scenario.name}: barge-in stop {stop:.0f} ms")
    await agent.aclose()
    print(f"{len(scenarios)} scenarios x {args.repeats} rounds, over the wire, one server")
    order = [k for k in STAGE_ORDER if k in totals]
    for key in order:
        v = totals[key]
        print(f"{key:<40} median {statistics.median(v):6.1f}  p95 {_p95(v):6.1f}  "
              f"max {max(v):6.1f}  (n={len(v)})")  # fmt: skip


STAGE_ORDER = (
    "response latency",
    "  overhead: less the turn's wait and compute",
    "  turn end (the wait + VAD)",
    "  server: turn end to first audio",
    "    of it, model compute after the turn (session)",
    "  wire: server to client playing",
    "barge-in stop",
    "  server: onset to pause",
    "  wire: pause to client silent",
    "  no server pause before the client cut",
)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", type=Path, default=None)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--scenario", nargs="*", default=None, help="shipped scenario names")
    parser.add_argument(
        "--turn-detection",
        choices=("server_vad", "semantic_vad"),
        default=None,
        help="the server's turn detection (default: the model's config, semantic_vad)",
    )
    asyncio.run(run(parser.parse_args()))


if __name__ == "__main__":
    main()
