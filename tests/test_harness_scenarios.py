"""Harness scenarios: loading YAML files and rendering their steps to audio."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import soundfile as sf
import yaml

from parley.agent.harness import render
from parley.agent.harness.render import render_step, speech_span
from parley.agent.harness.scenario import (
    Step,
    load_scenario,
    load_scenarios,
    shipped_scenarios_dir,
)
from parley.config import AgentConfig
from parley.errors import AudioInputError, ConfigError, EngineUnavailableError

SR = 16000
SHIPPED = Path(__file__).resolve().parents[1] / "configs" / "scenarios"
CLIP = SHIPPED / "clips" / "stop_please.wav"


def _write(folder: Path, data: Any, name: str = "s.yaml") -> Path:
    path = folder / name
    path.write_text(data if isinstance(data, str) else yaml.safe_dump(data))
    return path


def _rms_db(x: np.ndarray) -> float:
    return 20 * np.log10(np.sqrt(np.mean(np.asarray(x, np.float64) ** 2)))


# ---------------------------------------------------------------- loader


def test_loads_every_step_kind_with_defaults(tmp_path: Path) -> None:
    (tmp_path / "clips").mkdir()
    shutil.copy(CLIP, tmp_path / "clips" / "c.wav")
    path = _write(
        tmp_path,
        {
            "name": "all-kinds",
            "echo": {"delay_ms": 30},
            "reply": {"min_s": 1, "max_s": 2},
            "settings": {"endpoint_silence_ms": 400},
            "timeline": [
                {"at": 0.0, "say": "hello there", "voice": "en-gb", "gain_db": -3},
                {"at": 2.0, "wav": "clips/c.wav"},
                {"at": 4.0, "noise": "brown", "duration": 1.0, "level_db": -20},
                {"at": 6.0, "silence": 0.5},
                {"after_reply_start": 0.8, "reply": 2, "say": "stop", "role": "interrupt"},
            ],
        },
    )
    s = load_scenario(path)
    assert [st.kind for st in s.timeline] == ["say", "wav", "noise", "silence", "say"]
    assert [st.effective_role for st in s.timeline] == ["turn", "turn", "noise", None, "interrupt"]
    assert s.timeline[0].effective_voice == "en-gb" and s.timeline[4].effective_voice == "en-us"
    assert s.timeline[4].reply == 2 and s.timeline[4].at is None
    assert s.echo is not None and s.echo.delay_ms == 30 and s.echo.gain_db == -10
    assert s.agent_overrides() == {
        "endpoint_silence_ms": 400,
        "reply_min_s": 1.0,
        "reply_max_s": 2.0,
    }
    assert s.source == path.resolve() and s.directory == tmp_path.resolve()
    assert s.end_time(7.5) == pytest.approx(10.5)  # no duration: last step end + 3 s
    bare = _write(tmp_path, {"name": "n", "timeline": [{"at": 0, "say": "x"}]}, "b.yaml")
    assert load_scenario(bare).echo is None and load_scenario(bare).agent_overrides() == {}


def test_directory_loads_sorted_and_rejects_duplicate_names(tmp_path: Path) -> None:
    for name in ("b", "a", "c"):
        _write(
            tmp_path, {"name": f"s-{name}", "timeline": [{"at": 0, "say": "hi"}]}, f"{name}.yaml"
        )
    assert [s.name for s in load_scenarios(tmp_path)] == ["s-a", "s-b", "s-c"]
    _write(tmp_path, {"name": "s-a", "timeline": [{"at": 0, "say": "hi"}]}, "d.yaml")
    with pytest.raises(ConfigError, match="'s-a' also used by"):
        load_scenarios(tmp_path)
    (tmp_path / "empty").mkdir()
    with pytest.raises(ConfigError, match="no \\*.yaml"):
        load_scenarios(tmp_path / "empty")
    with pytest.raises(ConfigError, match="no such scenario"):
        load_scenarios(tmp_path / "missing")


_OK = {"at": 0.0, "say": "hello"}


@pytest.mark.parametrize(
    ("bad_step", "problem"),
    [
        ({"at": 1.0, "say": "a", "wav": "b.wav"}, "exactly one of say, wav, noise, silence"),
        ({"at": 1.0}, "exactly one of say, wav, noise, silence"),
        ({"say": "a"}, "exactly one of at, after_reply_start"),
        ({"at": 1.0, "after_reply_start": 0.5, "say": "a"}, "exactly one of at, after_reply_start"),
        ({"at": -1.0, "say": "a"}, "(at) = -1.0: Input should be greater than or equal to 0"),
        ({"at": 1.0, "noise": "blue", "duration": 1.0}, "(noise) = 'blue'"),
        ({"at": 1.0, "noise": "white"}, "needs duration"),
        ({"at": 1.0, "say": "a", "role": "boss"}, "(role) = 'boss'"),
        ({"at": 1.0, "silence": 1.0, "role": "turn"}, "silence step has no role"),
        ({"at": 1.0, "say": "a", "sya": 1}, "(sya) = 1: Extra inputs"),
        ({"at": 1.0, "say": "a", "reply": 2}, "reply is only meaningful"),
        ({"at": 1.0, "wav": "nope.wav"}, "wav file not found"),
        ({"at": 1.0, "say": "   "}, "blank"),
        ("just a string", "valid dictionary"),
    ],
)
def test_bad_step_names_file_step_and_problem(tmp_path: Path, bad_step: Any, problem: str) -> None:
    path = _write(tmp_path, {"name": "bad", "timeline": [_OK, bad_step]}, "broken.yaml")
    with pytest.raises(ConfigError) as info:
        load_scenario(path)
    message = str(info.value)
    assert str(path) in message and "step 1" in message and problem in message


@pytest.mark.parametrize(
    ("data", "problem"),
    [
        ("name: [unclosed", "not valid YAML"),
        ("- a list", "mapping at the top level"),
        ({"name": "x", "timeline": []}, "timeline"),
        ({"name": "has space", "timeline": [_OK]}, "name = 'has space'"),
        ({"name": "x", "settings": {"bogus": 1}, "timeline": [_OK]}, "unknown setting(s) bogus"),
        (
            {"name": "x", "settings": {"endpoint_silence_ms": 5}, "timeline": [_OK]},
            "endpoint_silence_ms = 5",
        ),
        ({"name": "x", "reply": {"min_s": 9, "max_s": 3}, "timeline": [_OK]}, "must not exceed"),
        ({"name": "x", "echo": {"delay_ms": -1}, "timeline": [_OK]}, "echo.delay_ms"),
    ],
)
def test_bad_file_names_file_and_problem(tmp_path: Path, data: Any, problem: str) -> None:
    path = _write(tmp_path, data, "broken.yaml")
    with pytest.raises(ConfigError) as info:
        load_scenario(path)
    assert str(path) in str(info.value) and problem in str(info.value)


SHIPPED_ROLES = {
    "plain-turn": ["turn"],
    "interrupt-mid-reply": ["turn", "interrupt"],
    "interrupt-first-chunk": ["turn", "interrupt"],
    "backchannel": ["turn", "backchannel"],
    "pause-in-turn": ["turn", "continuation"],
    "echo-barge-in": ["turn", "interrupt"],
    "noise-burst": ["turn", "noise"],
}


@pytest.mark.parametrize("name", sorted(SHIPPED_ROLES))
def test_shipped_scenario_loads(name: str) -> None:
    (s,) = load_scenarios(SHIPPED / f"{name}.yaml")
    assert s.name == name
    assert [st.effective_role for st in s.timeline] == SHIPPED_ROLES[name]
    assert s.reply is not None and (s.reply.min_s, s.reply.max_s) == (4, 8)


def test_shipped_set_is_complete_and_specific() -> None:
    assert shipped_scenarios_dir().resolve() == SHIPPED
    by_name = {s.name: s for s in load_scenarios(shipped_scenarios_dir())}
    assert set(by_name) == set(SHIPPED_ROLES)
    assert by_name["interrupt-mid-reply"].timeline[1].wav == "clips/stop_please.wav"
    assert by_name["interrupt-first-chunk"].timeline[1].after_reply_start == pytest.approx(0.1)
    assert by_name["backchannel"].timeline[1].after_reply_start == pytest.approx(1.5)
    echo = by_name["echo-barge-in"].echo
    assert echo is not None and (echo.delay_ms, echo.gain_db) == (60, -6)
    burst = by_name["noise-burst"].timeline[1]
    assert (burst.noise, burst.duration, burst.level_db) == ("white", 0.5, -25)
    assert CLIP.stat().st_size < 50_000
    info = sf.info(CLIP)
    assert (info.samplerate, info.channels, info.subtype) == (16000, 1, "PCM_16")


def test_shipped_speech_lengths_match_their_roles(tmp_path: Path) -> None:
    """Interruptions outlast the interruption threshold, the backchannel does not, and the
    pause inside pause-in-turn is 300 ms of real silence."""
    threshold = AgentConfig().min_interruption_ms / 1000
    for s in load_scenarios(SHIPPED):
        for step in s.timeline:
            if step.effective_role in ("interrupt", "backchannel"):
                audio = render_step(step, s.directory, cache_dir=tmp_path)
                longer = audio.content_s > threshold
                assert longer == (step.effective_role == "interrupt"), (s.name, audio.content_s)
    (s,) = load_scenarios(SHIPPED / "pause-in-turn.yaml")
    first, second = (render_step(st, s.directory, cache_dir=tmp_path) for st in s.timeline)
    assert s.timeline[0].at is not None and s.timeline[1].at is not None
    gap = (s.timeline[1].at + second.onset / SR) - (s.timeline[0].at + first.offset / SR)
    assert gap == pytest.approx(0.3, abs=0.02)
    assert gap * 1000 < AgentConfig().endpoint_silence_ms


# ---------------------------------------------------------------- renderer


def test_speech_span_is_sample_exact() -> None:
    x = np.zeros(SR, np.float32)
    x[1234:5678] = 0.05 * np.where(np.arange(5678 - 1234) % 2, 1.0, -1.0)
    assert speech_span(x) == (1234, 5678)
    assert speech_span(x * 0.05) is None  # -52 dBFS: below the -45 dBFS threshold
    assert speech_span(np.zeros(0, np.float32)) is None


def test_say_onset_offset_are_plausible(tmp_path: Path) -> None:
    audio = render_step(Step(at=0, say="what is the weather like today"), tmp_path, tmp_path)
    x = audio.samples
    assert x.dtype == np.float32 and x.ndim == 1 and audio.sample_rate == SR
    assert 1.0 < audio.duration_s < 3.0
    assert 0 <= audio.onset < 0.1 * SR  # espeak-ng starts almost at once
    assert 1.0 < audio.content_s < 2.0
    # espeak-ng pads the end with silence; the offset must fall where the voice stops.
    assert len(x) - audio.offset > 0.1 * SR
    assert _rms_db(x[audio.offset :]) < -45 and _rms_db(x[audio.onset : audio.offset]) > -30
    louder = render_step(
        Step(at=0, say="what is the weather like today", gain_db=6), tmp_path, tmp_path
    )
    np.testing.assert_allclose(louder.samples, x * 10 ** (6 / 20), rtol=1e-5)


def test_say_cache_hit_needs_no_espeak(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    step = Step(at=0, say="cache me please")
    first = render_step(step, tmp_path, cache_dir=tmp_path / "tts")
    assert len(list((tmp_path / "tts").glob("*.npy"))) == 1
    monkeypatch.setattr(render.shutil, "which", lambda name: None)
    again = render_step(step, tmp_path, cache_dir=tmp_path / "tts")
    np.testing.assert_array_equal(first.samples, again.samples)
    assert (again.onset, again.offset) == (first.onset, first.offset)
    # A different voice is a different cache entry, so it needs espeak-ng again.
    with pytest.raises(EngineUnavailableError, match="espeak-ng"):
        render_step(Step(at=0, say="cache me please", voice="en-gb"), tmp_path, tmp_path / "tts")


@pytest.mark.parametrize("color", ["white", "brown", "pink"])
def test_noise_level_span_and_determinism(color: str, tmp_path: Path) -> None:
    step = Step(at=0, noise=color, duration=1.5, level_db=-25)
    a = render_step(step, tmp_path, seed=3)
    assert a.samples.dtype == np.float32 and len(a.samples) == 24000
    assert (a.onset, a.offset) == (0, 24000)
    assert _rms_db(a.samples) == pytest.approx(-25.0, abs=0.01)
    assert abs(float(a.samples.mean())) < 1e-3
    np.testing.assert_array_equal(a.samples, render_step(step, tmp_path, seed=3).samples)
    assert not np.array_equal(a.samples, render_step(step, tmp_path, seed=4).samples)


def test_noise_colours_tilt_towards_low_frequencies(tmp_path: Path) -> None:
    def low_share(color: str) -> float:
        x = render_step(Step(at=0, noise=color, duration=2.0), tmp_path).samples
        power = np.abs(np.fft.rfft(x)) ** 2
        f = np.fft.rfftfreq(len(x), 1 / SR)
        return float(power[f < 500].sum() / power.sum())

    white, pink, brown = low_share("white"), low_share("pink"), low_share("brown")
    assert white == pytest.approx(500 / 8000, rel=0.15)
    assert white < pink < brown and brown > 0.8


def test_wav_and_silence_steps(tmp_path: Path) -> None:
    clip = render_step(Step(at=0, wav="clips/stop_please.wav"), SHIPPED)
    quieter = render_step(Step(at=0, wav="clips/stop_please.wav", gain_db=-6), SHIPPED)
    np.testing.assert_allclose(quieter.samples, clip.samples * 10 ** (-6 / 20), rtol=1e-5)
    assert 0.5 < clip.content_s < 1.0 and clip.onset < 0.05 * SR
    quiet = render_step(Step(at=0, silence=0.25), tmp_path)
    assert len(quiet.samples) == 4000 and not quiet.samples.any()
    assert (quiet.onset, quiet.offset) == (0, 0)
    with pytest.raises(AudioInputError, match="nothing above -45 dBFS"):
        render_step(Step(at=0, wav="clips/stop_please.wav", gain_db=-60), SHIPPED)
