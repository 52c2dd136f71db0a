import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from parley.agent.cli import main

ROOT = Path(__file__).resolve().parents[1]


def run_cli(*args, env=None, cwd=None):
    full_env = {**os.environ, **(env or {})}
    return subprocess.run(
        [sys.executable, str(ROOT / "run_agent.py"), *args],
        capture_output=True,
        text=True,
        env=full_env,
        cwd=cwd or ROOT,
        timeout=300,
    )


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    out = tmp_path_factory.mktemp("cli") / "ck"
    assert main(["make-checkpoint", "--preset", "tiny", "--out", str(out), "--seed", "2"]) == 0
    return out


def test_help_everywhere():
    for args in ([], ["make-checkpoint"], ["demo"]):
        res = run_cli(*args, "--help")
        assert res.returncode == 0 and "usage:" in res.stdout, res.stderr


def test_demo_with_defaults_answers_the_sample_question(tmp_path):
    res = run_cli(env={"PARLEY_CACHE_DIR": str(tmp_path / "cache")}, cwd=tmp_path)
    assert res.returncode == 2  # no command given: argparse usage error
    res = run_cli("demo", env={"PARLEY_CACHE_DIR": str(tmp_path / "cache")}, cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    # The shipped trained model, not a random one: nothing is built into the cache.
    assert "configs/model" in res.stderr and not (tmp_path / "cache" / "checkpoints").exists()
    assert "random weights" not in res.stdout and "first_audio_out" in res.stdout
    # The sample asks "what is seven times eight"; the reply's own text answers it.
    assert "fifty six" in res.stdout
    audio, rate = sf.read(tmp_path / "reply.wav")
    assert rate == 16000 and len(audio) > rate  # a spoken sentence
    assert "Traceback" not in res.stderr


def test_random_checkpoint_is_built_once_when_asked(tmp_path, monkeypatch):
    from parley.agent import runtime

    monkeypatch.setenv("PARLEY_CACHE_DIR", str(tmp_path))
    path = runtime.random_checkpoint(lambda _m: None)
    assert path == tmp_path / "checkpoints" / "tiny-seed0" and (path / "parley.json").is_file()
    stamp = (path / "parley.json").stat().st_mtime_ns
    assert runtime.random_checkpoint(lambda _m: None) == path
    assert (path / "parley.json").stat().st_mtime_ns == stamp


def test_demo_writes_audio_and_event_log(checkpoint, tmp_path):
    out, events = tmp_path / "r.wav", tmp_path / "e.json"
    code = main(
        ["demo", "--checkpoint", str(checkpoint), "--output", str(out), "--events", str(events)]
    )
    assert code == 0
    log = json.loads(events.read_text())
    names = [e["event"] for e in log["events"]]
    assert names[:3] == ["audio_in_start", "audio_in_end", "encoder_done"]
    assert names[-1] == "reply_end"
    for stage in ("first_text_token", "first_speech_token", "first_audio_out"):
        assert stage in names
    times = [e["t_s"] for e in log["events"]]
    assert times == sorted(times)
    after = log["after_audio_in_end_ms"]
    assert 0 <= after["first_speech_token"] <= after["first_audio_out"] <= after["reply_end"]
    audio, rate = sf.read(out)
    assert abs(len(audio) / rate - log["reply"]["audio_s"]) < 1e-3
    assert log["random_weights"] is True


def test_demo_resamples_stereo_input(checkpoint, tmp_path):
    t = np.arange(44100) / 44100
    stereo = np.stack([np.sin(2 * np.pi * 220 * t), np.sin(2 * np.pi * 330 * t)], axis=1) * 0.3
    sf.write(tmp_path / "in.wav", stereo, 44100)
    assert (
        main(
            [
                "demo",
                "--checkpoint",
                str(checkpoint),
                "--input",
                str(tmp_path / "in.wav"),
                "--output",
                str(tmp_path / "o.wav"),
            ]
        )
        == 0
    )


@pytest.mark.parametrize(
    "case, expect",
    [
        ("nan", "NaN"),
        ("silent", "silent"),
        ("empty", "empty"),
        ("garbage", "in.wav"),
        ("missing", "nope.wav"),
    ],
)
def test_bad_input_is_one_clear_line(checkpoint, tmp_path, capsys, case, expect):
    path = tmp_path / ("nope.wav" if case == "missing" else "in.wav")
    if case == "nan":
        x = np.full(16000, 0.1)
        x[5] = np.nan
        sf.write(path, x, 16000, subtype="FLOAT")
    elif case == "silent":
        sf.write(path, np.zeros(16000), 16000)
    elif case == "empty":
        sf.write(path, np.zeros(0), 16000)
    elif case == "garbage":
        path.write_bytes(os.urandom(500))
    code = main(
        [
            "demo",
            "--checkpoint",
            str(checkpoint),
            "--input",
            str(path),
            "--output",
            str(tmp_path / "o.wav"),
        ]
    )
    err = capsys.readouterr().err
    assert code == 2
    assert err.count("error:") == 1 and expect.lower() in err.lower(), err
    assert not (tmp_path / "o.wav").exists()


def test_missing_checkpoint_part_is_named(checkpoint, tmp_path, capsys):
    code = main(
        ["demo", "--checkpoint", str(tmp_path / "none"), "--output", str(tmp_path / "o.wav")]
    )
    assert code == 2 and "checkpoint directory not found" in capsys.readouterr().err


def test_make_checkpoint_refuses_existing(checkpoint, capsys):
    assert main(["make-checkpoint", "--out", str(checkpoint)]) == 2
    assert "--force" in capsys.readouterr().err


def test_duplex_writes_same_length_channel(checkpoint, tmp_path):
    sample = ROOT / "configs" / "samples" / "what_time.wav"
    speech, _ = sf.read(sample)
    full = np.zeros(6 * 16000)
    full[8000 : 8000 + len(speech)] = speech
    sf.write(tmp_path / "in.wav", full, 16000)
    code = main(
        [
            "duplex",
            "--checkpoint",
            str(checkpoint),
            "--input",
            str(tmp_path / "in.wav"),
            "--output",
            str(tmp_path / "out.wav"),
            "--events",
            str(tmp_path / "ev.json"),
        ]
    )
    assert code == 0
    out, rate = sf.read(tmp_path / "out.wav")
    assert rate == 16000 and len(out) == len(full)
    events = json.loads((tmp_path / "ev.json").read_text())
    first = next(e for e in events if e["type"] == "first_audio")
    assert np.all(out[: first["output_sample"]] == 0) and np.any(out[first["output_sample"] :] != 0)


def test_bench_rejects_a_bad_scenario(checkpoint, tmp_path, capsys):
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: bad\ntimeline:\n  - {at: 1.0, say: hi, noise: white}\n")
    code = main(
        [
            "bench",
            "--checkpoint",
            str(checkpoint),
            "--scenario",
            str(bad),
            "--out",
            str(tmp_path / "o"),
        ]
    )
    err = capsys.readouterr().err
    assert code == 2 and "bad.yaml" in err and "step 0" in err
