"""The harness over the wire: a shipped scenario against a live server, in real time."""

from __future__ import annotations

import contextlib
import socket

import pytest

from parley.agent import runtime
from parley.agent.cli import main as cli_main
from parley.agent.core.model import AgentModel
from parley.agent.harness.metrics import score
from parley.agent.harness.runner import agent_config_for
from parley.agent.harness.scenario import load_scenario, shipped_scenarios_dir
from parley.agent.harness.wire import WireError, realtime_url, run_scenario_wire
from parley.agent.runtime import shipped_checkpoint
from parley.agent.service.api import Agent
from parley.agent.service.server import RealtimeServer
from parley.config import load_config

pytestmark = pytest.mark.slow


@contextlib.asynccontextmanager
async def serving(model, scenario, token: str | None = None):
    # The protocol cannot carry reply bounds; the server is started with the scenario's,
    # as `serve` would be with PARLEY_AGENT__REPLY_MIN_S=...
    agent_cfg = agent_config_for(model.config.agent, scenario)
    agent = Agent(model, config=model.config.model_copy(update={"agent": agent_cfg}))
    async with RealtimeServer(agent, token=token).serve("127.0.0.1", 0) as srv:
        yield f"ws://127.0.0.1:{srv.sockets[0].getsockname()[1]}"


def test_realtime_url_accepts_base_urls():
    assert realtime_url("ws://h:1") == "ws://h:1/realtime"
    assert realtime_url("ws://h:1/v1/") == "ws://h:1/v1/realtime"
    assert realtime_url("http://h:1/v1/realtime?model=x") == "ws://h:1/v1/realtime?model=x"
    with pytest.raises(WireError):
        realtime_url("127.0.0.1:8765")


async def test_interrupt_mid_reply_over_the_wire(tiny_model):
    scenario = load_scenario(shipped_scenarios_dir() / "interrupt-mid-reply.yaml")
    async with serving(tiny_model, scenario) as url:
        record = await run_scenario_wire(url + "/v1", scenario)
    s = score(record)
    kinds = [e["type"] for e in record.events]
    assert record.realtime and len(record.output) == len(record.input)
    assert "wire_error" not in kinds
    assert s["interruptions"] == 1 and s["false_interruptions"] == 0
    assert s["barge_ins"] == 1 and s["barge_in_unstopped"] == 0
    # Real time on a loaded 2-core machine: chunking, server VAD and a tick or two.
    assert 0 < s["barge_in_stop_ms"]["max"] <= 400
    assert s["replies"] >= 2 and s["stale_events_after_interrupt"] == 0
    # The reply to the interruption was heard too: two first audios, latency measured.
    assert kinds.count("first_audio") >= 2
    assert len(s["response_latency_ms"]["values"]) >= 1
    assert all(v > record.endpoint_silence_ms for v in s["response_latency_ms"]["values"])
    # The cut reply's audio_end_ms was accepted: the server confirmed the truncate.
    paused = next(e for e in record.events if e["type"] == "playback_paused")
    cut = next(e for e in record.events if e["type"] == "interrupted")
    assert cut["reply_id"] == paused["reply_id"] == 1 and cut["played"] == paused["position"]


async def test_semantic_turns_over_the_wire(tmp_path):
    # The shipped model has an end-of-turn detector, so its sessions run semantic_vad by
    # default; the harness used to refuse any server without server_vad.
    path = shipped_checkpoint()
    assert path is not None, "configs/model/ must hold the trained default model"
    model = AgentModel.load(path, load_config("tiny"))
    (tmp_path / "ask.yaml").write_text(
        "name: ask\nduration: 5.0\ntimeline:\n  - {at: 0.3, say: what is seven times eight}\n"
    )
    scenario = load_scenario(tmp_path / "ask.yaml")
    try:
        async with serving(model, scenario) as url:
            record = await run_scenario_wire(url, scenario)
    finally:
        await model.aclose()
    turns = [e for e in record.events if e["type"] == "user_turn_ended"]
    assert len(turns) == 1 and turns[0]["decided_sample"] is not None
    s = score(record)
    (latency,), (wait,) = s["response_latency_ms"]["values"], s["turn_wait_ms"]["values"]
    # No sooner than the detector's first ask (200 ms into the silence), no later than the
    # timer's 500 ms and the lag of the commit's message on a loaded machine.
    assert 190 <= wait <= 800, wait
    assert latency > wait and s["response_overhead_ms"]["values"] == [latency - wait]


def test_scenario_turn_detection_goes_over_the_wire(tmp_path):
    from parley.agent.harness.wire import _WireRun

    (tmp_path / "a.yaml").write_text(
        "name: a\nsettings: {turn_detection: semantic_vad, eagerness: medium}\n"
        "timeline:\n  - {at: 0.3, silence: 1.0}\n"
    )
    (tmp_path / "b.yaml").write_text(
        "name: b\nsettings: {preroll_ms: 200}\ntimeline:\n  - {at: 0.3, silence: 1.0}\n"
    )
    running = {"audio": {"input": {"turn_detection": {"type": "semantic_vad"}}}}

    def sent(name: str) -> dict:
        run = _WireRun(load_scenario(tmp_path / f"{name}.yaml"), 0, True, lambda _m: None)
        return run.session_update(running)["audio"]["input"]["turn_detection"]

    assert sent("a") == {"type": "semantic_vad", "eagerness": "medium"}
    # Another setting alone keeps the detection the server runs.
    assert sent("b") == {"type": "semantic_vad", "prefix_padding_ms": 200}


async def test_wrong_token_is_one_clear_error(tiny_model):
    scenario = load_scenario(shipped_scenarios_dir() / "plain-turn.yaml")
    async with serving(tiny_model, scenario, token="s3cret") as url:
        with pytest.raises(WireError, match="refused the token"):
            await run_scenario_wire(url, scenario, token="wrong")


def test_bench_url_to_a_closed_port_exits_2(capsys, monkeypatch, tmp_path):
    with socket.socket() as s:  # a port nobody listens on: bound, never listening
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]

        def no_model(*_a, **_k):
            raise AssertionError("bench --url must not load a model")

        monkeypatch.setattr(runtime, "load_model", no_model)
        scenario = str(shipped_scenarios_dir() / "plain-turn.yaml")
        argv = ["bench", "--url", f"ws://127.0.0.1:{port}", "--scenario", scenario]
        assert cli_main([*argv, "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("error: cannot reach a Parley server at ws://127.0.0.1:")
    assert [line for line in err if not line.startswith("[parley]")] == [err[-1]]
