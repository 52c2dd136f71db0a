"""The harness in real time, through PulseAudio null sinks and real sounddevice streams."""

import pytest

from parley.agent.harness.metrics import score
from parley.agent.harness.realtime import run_scenario_realtime
from parley.agent.harness.scenario import load_scenario, shipped_scenarios_dir
from parley.config import load_config

pytestmark = pytest.mark.realdevice


async def test_interruption_through_real_devices(tiny_model):
    scenario = load_scenario(shipped_scenarios_dir() / "interrupt-mid-reply.yaml")
    record = await run_scenario_realtime(tiny_model, scenario, load_config("tiny").agent)
    s = score(record)
    kinds = [e["type"] for e in record.events]
    assert kinds.count("reply_started") == 2 and kinds.count("interrupted") == 1
    assert s["false_interruptions"] == 0 and s["stale_events_after_interrupt"] == 0
    assert s["barge_in_unstopped"] == 0
    # The rig's own round trip was measured and taken out; PulseAudio at "low" latency
    # lands in the tens of ms.
    assert 1.0 < record.rig_latency_ms < 200.0 and s["rig_latency_ms"] == record.rig_latency_ms
    # 150 ms is the target through devices; this machine glitches now and then under load
    # (DESIGN.md section 5), so the test allows headroom and the note reports the figure.
    assert s["barge_in_stop_ms"]["max"] <= 300
    # what the agent played really reached the room, and stopped after the cut
    cut = next(e for e in record.events if e["type"] == "interrupted")
    assert abs(record.output[: int(cut["t"] * 16000)]).max() > 0.01
