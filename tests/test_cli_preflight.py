"""User mistakes on the command line: one line, exit 2, before torch or any model loads."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from parley.agent import cli
from parley.agent.cli import main

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def wavs(tmp_path: Path) -> dict[str, Path]:
    x = 0.3 * np.sin(np.arange(16000) / 5)
    paths = {name: tmp_path / f"{name}.wav" for name in ("good", "one", "cut", "ch8", "hz1")}
    sf.write(paths["good"], x, 16000, subtype="PCM_16")
    sf.write(paths["one"], x[:1] + 0.5, 16000)
    whole = paths["good"].read_bytes()
    paths["cut"].write_bytes(whole[: len(whole) // 2])
    sf.write(paths["ch8"], np.tile(x[:, None], (1, 8)), 16000)
    sf.write(paths["hz1"], x[:100], 1)
    (tmp_path / "afile").write_text("not a folder")
    return paths


def _cases(tmp: Path, w: dict[str, Path]) -> dict[str, tuple[list[str], str]]:
    under_file = str(tmp / "afile" / "x")
    good = str(w["good"])
    return {
        "one-sample": (["demo", "--input", str(w["one"])], "at least 160"),
        "truncated": (["demo", "--input", str(w["cut"])], "cut short"),
        "8-channel": (["demo", "--input", str(w["ch8"])], "8 channels"),
        "1-hz": (["demo", "--input", str(w["hz1"])], "1 hz is too low"),
        "demo-output-dir": (["demo", "--input", good, "--output", str(tmp)], "is a directory"),
        "demo-output-unwritable": (["demo", "--output", under_file], "not a directory"),
        "demo-events-dir": (["demo", "--events", str(tmp)], "--events"),
        "duplex-output-dir": (
            ["duplex", "--input", good, "--output", str(tmp)],
            "is a directory",
        ),
        "bench-out": (["bench", "--out", under_file], "--out"),
        "bench-out-file": (["bench", "--out", str(tmp / "afile")], "not a directory"),
        "make-checkpoint-out": (["make-checkpoint", "--out", under_file], "--out"),
        "missing-checkpoint": (
            ["demo", "--checkpoint", str(tmp / "none")],
            "checkpoint directory not found",
        ),
    }


CASES = [
    "one-sample", "truncated", "8-channel", "1-hz", "demo-output-dir", "demo-output-unwritable",
    "demo-events-dir", "duplex-output-dir", "bench-out", "bench-out-file",
    "make-checkpoint-out", "missing-checkpoint",
]  # fmt: skip


@pytest.fixture
def no_heavy_imports(monkeypatch):
    """Fail the test if the CLI gets as far as loading transformers or the commands."""

    def too_far() -> None:
        raise AssertionError("reached the heavy imports before the user error was found")

    monkeypatch.setattr(cli, "_quiet_libraries", too_far)


@pytest.mark.parametrize("case", CASES)
def test_user_error_is_one_line_before_any_import(case, wavs, tmp_path, capsys, no_heavy_imports):
    argv, expect = _cases(tmp_path, wavs)[case]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    lines = [line for line in err if not line.startswith("[parley]")]
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    assert expect.lower() in lines[0].lower(), lines[0]


@pytest.mark.parametrize("extra", [[], ["--print"]])
def test_lm_server_without_vllm(extra, monkeypatch, capsys, no_heavy_imports):
    monkeypatch.setitem(sys.modules, "vllm", None)  # what an install without vLLM looks like
    assert main(["lm-server", *extra]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: lm-server needs vLLM"), err
    assert "docs/vllm.md" in err[0]


def test_engine_vllm_without_vllm(monkeypatch, capsys, no_heavy_imports):
    monkeypatch.setitem(sys.modules, "vllm", None)
    assert main(["demo", "--engine", "vllm"]) == 2
    assert "--engine vllm needs vLLM" in capsys.readouterr().err


def test_stereo_is_mixed_down_and_said_so(wavs, tmp_path, capsys, no_heavy_imports):
    x = 0.3 * np.sin(np.arange(44100) / 5)
    sf.write(tmp_path / "st.wav", np.stack([x, x], axis=1), 44100)
    argv = ["demo", "--input", str(tmp_path / "st.wav"), "--output", str(tmp_path)]
    assert main(argv) == 2  # stopped by the output directory, after the input was described
    err = capsys.readouterr().err
    assert "stereo, mixed down to mono" in err and "44100 Hz, resampled to 16000 Hz" in err


def test_bench_sessions_without_vllm(monkeypatch, capsys):
    spec = importlib.util.spec_from_file_location(
        "bench_sessions", ROOT / "benchmarks" / "bench_sessions.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    monkeypatch.setitem(sys.modules, "vllm", None)
    monkeypatch.setattr(sys, "argv", ["bench_sessions.py"])
    monkeypatch.setattr(module, "build_checkpoint", lambda *a, **k: pytest.fail("ran"))
    with pytest.raises(SystemExit) as info:
        module.main()
    assert info.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--engines transformers" in err[0], err


def test_missing_input_is_fast_and_imports_no_torch():
    # A fresh interpreter: in this one torch is loaded already.
    code = (
        "import sys\n"
        "from parley.agent.cli import main\n"
        "rc = main(['demo', '--input', '/nonexistent.wav'])\n"
        "print(rc, 'torch' in sys.modules, 'transformers' in sys.modules)\n"
    )
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    res = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, env=env, timeout=300
    )
    assert res.stdout.split() == ["2", "False", "False"], res.stderr
    assert res.stderr.strip() == "error: /nonexistent.wav: file not found"
