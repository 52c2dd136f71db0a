"""What the CLI says about a run that went wrong for the agent, not for the user."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from parley.agent import commands
from parley.agent.cli import main
from parley.agent.harness import metrics
from parley.agent.harness.scenario import load_scenario, shipped_scenarios_dir
from parley.agent.harness.wire import _WireRun

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize(("flags", "code"), [([], 1), (["--report-only"], 0)])
def test_bench_fails_when_a_target_is_missed(tiny_checkpoint, tmp_path, monkeypatch, flags, code):
    monkeypatch.setattr(metrics, "check_targets", lambda _s: {"barge_in_stop_ms": False})
    scenario = str(shipped_scenarios_dir() / "plain-turn.yaml")
    argv = ["bench", "--checkpoint", str(tiny_checkpoint), "--scenario", scenario]
    assert main([*argv, "--out", str(tmp_path / "o"), *flags]) == code


def test_wire_settings_note_is_said_once():
    lines: list[str] = []
    say = commands.once(lines.append)
    created = {"audio": {}}
    for name in ("plain-turn", "backchannel", "interrupt-mid-reply"):
        scenario = load_scenario(shipped_scenarios_dir() / f"{name}.yaml")
        _WireRun(scenario, 0, True, say).session_update(created)
    assert len(lines) == 1 and "cannot be set over the wire" in lines[0], lines


def test_duplex_without_trailing_silence_says_why(tiny_checkpoint, tmp_path, capsys):
    speech, rate = sf.read(ROOT / "configs" / "samples" / "what_time.wav")
    # Speech to the last sample: the turn never ends, so nothing is answered.
    sf.write(tmp_path / "in.wav", np.concatenate([np.zeros(rate // 2), speech]), rate)
    argv = ["duplex", "--checkpoint", str(tiny_checkpoint), "--input", str(tmp_path / "in.wav")]
    assert main([*argv, "--output", str(tmp_path / "out.wav")]) == 0
    captured = capsys.readouterr()
    assert "0 replies" in captured.out
    assert "trailing silence" in captured.err and "500 ms of silence" in captured.err
