"""How fast the virtual-time harness runs, and the pipeline figures it measures.

    python benchmarks/bench_duplex.py [--scenario DIR] [--repeats 3] [--threads 1]

For each scenario: median wall time over ``--repeats`` runs against its virtual length
(speed-up = virtual seconds / wall seconds), the model compute inside it, and the pooled
barge-in and response-overhead figures (identical on every run: virtual time is
deterministic).
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time

import torch

from parley.agent.core.model import AgentModel
from parley.agent.harness.metrics import aggregate, score
from parley.agent.harness.runner import run_scenario
from parley.agent.harness.scenario import load_scenarios, shipped_scenarios_dir
from parley.agent.runtime import default_checkpoint
from parley.config import load_config


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--scenario", default=None)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    cfg = load_config("tiny")
    model = AgentModel.load(default_checkpoint(print), cfg)
    scored = []
    total_virtual = total_wall = 0.0
    for scenario in load_scenarios(args.scenario or shipped_scenarios_dir()):
        walls, record = [], None
        for _ in range(args.repeats):
            t0 = time.perf_counter()
            record = asyncio.run(run_scenario(model, scenario, cfg.agent))
            walls.append(time.perf_counter() - t0)
        wall = statistics.median(walls)
        scored.append(score(record))
        total_virtual += record.duration_s
        total_wall += wall
        print(
            f"{scenario.name:<24} {record.duration_s:5.1f} s virtual in {wall:5.2f} s wall "
            f"({record.duration_s / wall:5.1f}x), model compute {record.model_compute_s:.2f} s"
        )
    pooled = aggregate(scored)
    print(
        f"all: {total_virtual:.1f} s virtual in {total_wall:.2f} s wall ({total_virtual / total_wall:.1f}x real time)"
    )
    b, r = pooled["barge_in_stop_ms"], pooled["response_overhead_ms"]
    print(
        f"barge-in stop: p50 {b['p50']:.1f} ms, p95 {b['p95']:.1f} ms, max {b['max']:.1f} ms (n={len(b['values'])})"
    )
    print(f"response overhead beyond the turn wait: p50 {r['p50']:.1f} ms, p95 {r['p95']:.1f} ms")


if __name__ == "__main__":
    main()
