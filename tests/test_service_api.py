"""The Python embedding API: the shipped example runs, sessions share one engine and
stay isolated, settings and capacity rules hold."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest

import parley
from parley.agent.service.api import CapacityError, SessionControlError
from parley.agent.service.settings import SessionSettings
from tests.service_support import short_reply_agent

EXAMPLE = Path(__file__).resolve().parent.parent / "examples" / "embed.py"


async def test_embedding_example_runs_two_sessions_on_one_engine(tiny_checkpoint, capsys):
    spec = importlib.util.spec_from_file_location("embed_example", EXAMPLE)
    example = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(example)
    logs = await example.main(tiny_checkpoint)
    assert len(logs) == 2
    for log in logs:
        assert log.count("reply_started") == 1 and log.count("reply_ended") == 1
        assert log.index("user_turn_ended") < log.index("reply_started")
    out = capsys.readouterr().out
    assert "A: " in out and "B: " in out and "kept" in out


async def test_sessions_settings_capacity_and_isolation(tiny_model):
    agent = short_reply_agent(tiny_model, max_sessions=2)
    assert parley.Agent is type(agent)
    a = agent.open_session(SessionSettings(endpoint_silence_ms=300))
    b = agent.open_session()
    with pytest.raises(CapacityError):
        agent.open_session()
    assert a.session.config.endpoint_silence_ms == 300
    assert a.session.context is not b.session.context
    assert a.session.model is b.session.model  # one engine
    # Settings rebuild the session before the first audio, and apply live after it.
    await b.update(SessionSettings(endpoint_silence_ms=700, preroll_ms=50))
    assert (b.session.config.endpoint_silence_ms, b.session.config.preroll_ms) == (700, 50)
    built = b.session
    b.push_audio(np.zeros(2400, np.float32), sample_rate=24000)  # 100 ms
    await b.update(SessionSettings(endpoint_silence_ms=900, vad_threshold=0.6))
    assert b.session is built and b.session.config.endpoint_silence_ms == 900
    assert b.session.input.detector.options.confirm_threshold == 0.6
    await b.update(b.settings.model_copy(update={"instructions": "short answers"}))
    assert b.settings.instructions == "short answers"
    with pytest.raises(SessionControlError, match="no reply"):
        await b.truncate(100)
    assert await b.interrupt() is False
    # A closed session frees its place and leaves the other untouched.
    await b.aclose()
    assert agent.sessions == [a]
    with pytest.raises(RuntimeError, match="closed"):
        b.push_audio(np.zeros(160, np.float32))
    a.push_audio(np.zeros(160, np.float32))
    assert a.pull_audio(160).shape == (160,)
    c = agent.open_session()
    for s in (a, c):
        await s.aclose()
    assert agent.sessions == []
