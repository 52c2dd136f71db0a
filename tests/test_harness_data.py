"""Harness data side: scenario loading, step rendering, metrics on hand-built runs, reports."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import soundfile as sf
import yaml

from parley.agent.events import (
    AgentState,
    AudioPlayed,
    FirstAudio,
    Interrupted,
    PlaybackPaused,
    PlaybackResumed,
    ReplyStarted,
    StateChanged,
)
from parley.agent.harness import render
from parley.agent.harness.metrics import aggregate, check_targets, score
from parley.agent.harness.record import RunRecord, UserSegment
from parley.agent.harness.render import render_step, speech_span
from parley.agent.harness.report import write_report
from parley.agent.harness.scenario import (
    Scenario,
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


# ---------------------------------------------------------------- metrics


def _scenario(name: str = "hand-built") -> Scenario:
    return Scenario(name=name, timeline=[Step(at=0, silence=1.0)])


def _record(
    output: np.ndarray | None = None,
    events: list[Any] = (),  # type: ignore[assignment]
    segments: list[UserSegment] = (),  # type: ignore[assignment]
    seconds: float = 4.0,
    name: str = "hand-built",
    endpoint_ms: float = 500.0,
) -> RunRecord:
    n = int(seconds * SR)
    out = np.zeros(n, np.float32) if output is None else output
    return RunRecord(
        scenario=_scenario(name),
        sample_rate=SR,
        input=np.zeros(n, np.float32),
        mic=np.zeros(n, np.float32),
        output=out,
        events=[e.to_dict() for e in events],
        segments=list(segments),
        endpoint_silence_ms=endpoint_ms,
    )


def _speaking(n: int, until: int, start: int = 0) -> np.ndarray:
    x = np.zeros(n, np.float32)
    x[start:until] = 0.1
    return x


@pytest.mark.parametrize("role", ["interrupt", "backchannel"])
def test_barge_in_stop_is_exact(role: str) -> None:
    out = _speaking(4 * SR, 20000)
    out[16800:17000] = 0.0  # a 12.5 ms dip between words is not a stop
    rec = _record(out, segments=[UserSegment(1, role, 16000, 24000)])
    m = score(rec)
    assert m["barge_in_stop_ms"]["values"] == [250.0]  # (20000 - 16000) / 16 kHz
    assert m["barge_in_stop_ms"]["p95"] == 250.0 and m["barge_ins"] == 1
    assert m["barge_in_unstopped"] == 0


def test_barge_in_counts_only_over_audible_output_and_flags_never_stopping() -> None:
    quiet_before = _speaking(4 * SR, 30000, start=16000 + 1)
    rec = _record(quiet_before, segments=[UserSegment(1, "interrupt", 16000, 24000)])
    assert score(rec)["barge_in_stop_ms"]["values"] == [] and score(rec)["barge_ins"] == 0
    turn = _record(_speaking(4 * SR, 20000), segments=[UserSegment(0, "turn", 16000, 24000)])
    assert score(turn)["barge_ins"] == 0  # a plain turn is not a barge-in
    never = _record(_speaking(4 * SR, 4 * SR), segments=[UserSegment(1, "interrupt", 16000, 24000)])
    m = score(never)
    assert m["barge_in_unstopped"] == 1 and m["barge_in_stop_ms"]["p95"] is None
    assert check_targets(m)["barge_in_unstopped"] is False


def test_response_latency_and_overhead() -> None:
    events = [
        FirstAudio(t=0.5, epoch=0, reply_id=0, output_sample=8000),  # before the turn ended
        FirstAudio(t=1.5, epoch=0, reply_id=1, output_sample=24000),
    ]
    segs = [UserSegment(0, "turn", 0, 16000), UserSegment(1, "interrupt", 30000, 32000)]
    m = score(_record(events=events, segments=segs, endpoint_ms=400.0))
    assert m["response_latency_ms"]["values"] == [500.0]  # the interrupt has no answer: skipped
    assert m["response_overhead_ms"]["values"] == [100.0]
    noise_only = score(_record(events=events, segments=[UserSegment(0, "noise", 0, 16000)]))
    assert noise_only["response_latency_ms"]["values"] == []


@pytest.mark.parametrize(("reply_t", "takeover"), [(1.1, 1), (2.5, 0)])
def test_pause_takeover(reply_t: float, takeover: int) -> None:
    segs = [UserSegment(0, "turn", 0, 16000), UserSegment(1, "continuation", 20800, 32000)]
    events = [ReplyStarted(t=reply_t, epoch=0, reply_id=0)]
    m = score(_record(events=events, segments=segs))
    assert (m["pause_takeovers"], m["pause_segments"]) == (takeover, 1)
    assert m["pause_takeover_rate"] == float(takeover)
    lone = score(_record(events=events, segments=[UserSegment(0, "continuation", 0, 100)]))
    assert lone["pause_segments"] == 0 and lone["pause_takeover_rate"] is None


def _interrupted(t: float, reply_id: int = 0, epoch: int = 0) -> Interrupted:
    return Interrupted(
        t=t, epoch=epoch, reply_id=reply_id, played=0, heard_text="", output_sample=0
    )


@pytest.mark.parametrize(("t", "takeover"), [(1.0, 1), (2.4, 1), (2.45, 0), (0.9, 0)])
def test_backchannel_takeover_window(t: float, takeover: int) -> None:
    segs = [UserSegment(1, "backchannel", 16000, 22400)]  # 1.0 s to 1.4 s, window to 2.4 s
    m = score(_record(events=[_interrupted(t)], segments=segs))
    assert (m["backchannel_takeovers"], m["backchannel_segments"]) == (takeover, 1)
    assert m["backchannel_takeover_rate"] == float(takeover)
    # No interrupt segment at all, so any interruption is a false one.
    assert m["false_interruptions"] == 1 and m["interruptions"] == 1


def test_false_interruptions() -> None:
    segs = [UserSegment(1, "interrupt", 16000, 24000)]  # 1.0 s to 1.5 s, window to 2.5 s
    events = [_interrupted(1.2), _interrupted(2.5, reply_id=1), _interrupted(3.0, reply_id=2)]
    m = score(_record(events=events, segments=segs))
    assert m["false_interruptions"] == 1 and m["interruptions"] == 3
    assert check_targets(m)["false_interruptions"] is False


def _played(reply_id: int, start: int, end: int, epoch: int = 0) -> AudioPlayed:
    return AudioPlayed(
        t=start / SR, epoch=epoch, reply_id=reply_id, start=start, end=end, output_sample=start
    )


def test_lost_and_repeated_samples_on_resume() -> None:
    gap = [_played(1, 0, 1600), _played(1, 1637, 3200), _played(1, 3200, 4800)]
    m = score(_record(events=gap))
    assert (m["lost_samples_on_resume"], m["repeated_samples_on_resume"]) == (37, 0)
    overlap = [_played(1, 0, 1600), _played(1, 1500, 3200)]
    m = score(_record(events=overlap))
    assert (m["lost_samples_on_resume"], m["repeated_samples_on_resume"]) == (0, 100)
    # Each reply is walked on its own: reply 2 starting at 0 repeats nothing of reply 1.
    two = [_played(1, 0, 1600), _played(2, 0, 1600), _played(1, 1600, 3200)]
    m = score(_record(events=two))
    assert (m["lost_samples_on_resume"], m["repeated_samples_on_resume"]) == (0, 0)
    assert check_targets(m)["lost_samples_on_resume"] is True


def test_stale_events() -> None:
    clean = [
        ReplyStarted(t=0.1, epoch=0, reply_id=1),
        _played(1, 0, 1600),
        _interrupted(1.0, reply_id=1),
        ReplyStarted(t=1.5, epoch=1, reply_id=2),
        _played(2, 0, 1600, epoch=1),
    ]
    assert score(_record(events=clean))["stale_events_after_interrupt"] == 0
    old_epoch = [*clean, ReplyStarted(t=2.0, epoch=0, reply_id=3)]
    assert score(_record(events=old_epoch))["stale_events_after_interrupt"] == 1
    late_audio = [*clean[:3], _played(1, 1600, 3200)]  # same epoch, but after its interrupt
    assert score(_record(events=late_audio))["stale_events_after_interrupt"] == 1
    both = [*clean, _played(1, 1600, 3200)]  # old epoch and after interrupt: counted once
    m = score(_record(events=both))
    assert m["stale_events_after_interrupt"] == 1 and m["replies"] == 2
    assert check_targets(m)["stale_events_after_interrupt"] is False


def test_aggregate_pools_lists_and_sums_counts() -> None:
    a = _record(
        _speaking(4 * SR, 17600),
        events=[_interrupted(1.2)],
        segments=[UserSegment(1, "interrupt", 16000, 24000)],
        name="a",
    )
    b_out = _speaking(4 * SR, 19200)
    b_out[22000:36000] = 0.1
    b = _record(
        b_out,
        segments=[
            UserSegment(1, "backchannel", 16000, 17000),
            UserSegment(2, "backchannel", 33600, 34000),
        ],
        name="b",
    )
    sa, sb = score(a), score(b)
    assert sa["barge_in_stop_ms"]["values"] == [100.0]
    assert sb["barge_in_stop_ms"]["values"] == [200.0, 150.0]
    pooled = aggregate([sa, sb])
    assert pooled["scenarios"] == 2
    assert sorted(pooled["barge_in_stop_ms"]["values"]) == [100.0, 150.0, 200.0]
    assert pooled["barge_in_stop_ms"]["p50"] == 150.0 and pooled["barge_in_stop_ms"]["max"] == 200.0
    assert pooled["barge_in_stop_ms"]["p95"] == pytest.approx(195.0)
    assert pooled["barge_ins"] == 3 and pooled["interruptions"] == 1
    assert (pooled["backchannel_segments"], pooled["backchannel_takeover_rate"]) == (2, 0.0)
    assert pooled["pause_takeover_rate"] is None  # no continuation segments anywhere
    verdicts = check_targets(pooled)
    assert verdicts["barge_in_stop_ms"] is False and verdicts["response_overhead_ms"] is None
    assert verdicts["backchannel_takeover_rate"] is True
    json.dumps(pooled)  # JSON-ready


def test_run_record_rejects_misaligned_audio() -> None:
    with pytest.raises(ValueError, match="as long as input"):
        RunRecord(_scenario(), SR, np.zeros(10), np.zeros(10), np.zeros(9))
    with pytest.raises(ValueError, match="onset"):
        UserSegment(0, "turn", 20, 10)


# ---------------------------------------------------------------- report


def test_write_report(tmp_path: Path) -> None:
    out = _speaking(3 * SR, 24000, start=8000)
    events = [
        StateChanged(
            t=0.4, epoch=0, old=AgentState.LISTENING, new=AgentState.THINKING, reason="turn"
        ),
        StateChanged(
            t=0.5, epoch=0, old=AgentState.THINKING, new=AgentState.SPEAKING, reason="audio"
        ),
        FirstAudio(t=0.5, epoch=0, reply_id=0, output_sample=8000),
        PlaybackPaused(t=1.05, epoch=0, reply_id=0, position=8800, output_sample=16800),
        PlaybackResumed(t=1.3, epoch=0, reply_id=0, position=8800, output_sample=20800),
        _interrupted(1.45),
        StateChanged(
            t=1.5, epoch=1, old=AgentState.SPEAKING, new=AgentState.LISTENING, reason="cut"
        ),
    ]
    segs = [UserSegment(0, "turn", 800, 3200), UserSegment(1, "interrupt", 16000, 22000)]
    first = _record(out, events=events, segments=segs, seconds=3.0, name="first")
    first.input[16000:22000] = 0.2
    second = _record(seconds=2.0, name="second")
    records = [first, second]
    scored = [score(r) for r in records]
    assert write_report(tmp_path / "rep", records, scored) == tmp_path / "rep"
    rep = tmp_path / "rep"
    metrics = json.loads((rep / "metrics.json").read_text())
    assert set(metrics["scenarios"]) == {"first", "second"}
    assert metrics["scenarios"]["first"]["barge_in_stop_ms"]["values"] == [500.0]
    assert metrics["aggregate"]["scenarios"] == 2
    summary = (rep / "summary.md").read_text()
    assert "## Aggregate" in summary and "## first" in summary and "## second" in summary
    assert "p95 <= 100" in summary and "**FAIL**" in summary  # 500 ms barge-in misses
    for r in records:
        folder = rep / r.scenario.name
        lengths = {sf.info(folder / f"{k}.wav").frames for k in ("input", "output", "mic")}
        assert lengths == {len(r.input)}
        png = (folder / "timeline.png").read_bytes()
        assert png.startswith(b"\x89PNG") and len(png) > 10_000
    with pytest.raises(ValueError, match="records but"):
        write_report(tmp_path / "x", records, scored[:1])
