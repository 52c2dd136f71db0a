"""`run_agent.py chat` end to end: in tmux, on PulseAudio null sinks, with real VAD.

The agent plays into `agent_out` (recorded here from its monitor) and hears `user_in`'s
monitor (this test plays the user into `user_in`). The screen is read with
`tmux capture-pane`. Under CPU load the sinks glitch now and then (DESIGN.md section 5),
so levels are asserted with tolerance.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from parley.agent.harness.render import say, speech_span
from parley.agent.harness.scenario import DEFAULT_VOICE
from parley.speech_io.pulse import pulse_null_sinks

pytestmark = pytest.mark.realdevice

SR = 16000
ROOT = Path(__file__).resolve().parent.parent


class _Stream:
    """The test's mouth and ear: a player into one sink, a recorder on another's monitor."""

    def __init__(self, play_to: int, record_from: int) -> None:
        import sounddevice as sd

        self.queue = np.zeros(0, np.float32)
        self._next: np.ndarray | None = None  # handed over to the callback, which owns queue
        self.blocks: list[np.ndarray] = []
        self.recorded = 0
        self.out = sd.OutputStream(device=play_to, samplerate=SR, channels=1, blocksize=160,
                                   latency="low", callback=self._play)  # fmt: skip
        self.inp = sd.InputStream(device=record_from, samplerate=SR, channels=1, blocksize=160,
                                  latency="low", callback=self._record)  # fmt: skip

    def _play(self, outdata: np.ndarray, frames: int, _t: Any, _s: Any) -> None:
        if self._next is not None:
            self.queue, self._next = self._next, None
        chunk, self.queue = self.queue[:frames], self.queue[frames:]
        outdata.fill(0)
        outdata[: len(chunk), 0] = chunk

    def _record(self, indata: np.ndarray, frames: int, _t: Any, _s: Any) -> None:
        self.blocks.append(indata[:, 0].copy())
        self.recorded += frames

    def say(self, clip: np.ndarray) -> int:
        """Queue ``clip``; return the recorder position when it starts to play."""
        self._next = clip.astype(np.float32)
        return self.recorded

    def __enter__(self) -> _Stream:
        self.out.start()
        self.inp.start()
        return self

    def __exit__(self, *exc: object) -> None:
        for s in (self.out, self.inp):
            s.abort()
            s.close()

    def samples(self) -> np.ndarray:
        return np.concatenate(self.blocks)


class _Tmux:
    def __init__(self, name: str) -> None:
        self.base = ["tmux", "-L", name]

    def __call__(self, *args: str) -> str:
        res = subprocess.run([*self.base, *args], capture_output=True, text=True, timeout=10)
        return res.stdout

    def screen(self) -> str:
        return self("capture-pane", "-p", "-t", "chat")

    def wait_for(self, text: str, timeout: float) -> str:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            shown = self.screen()
            if text in shown:
                return shown
            time.sleep(0.1)
        raise AssertionError(f"{text!r} not on screen within {timeout} s; screen:\n{self.screen()}")


def _rms_db(x: np.ndarray) -> float:
    return 20 * np.log10(np.sqrt(np.mean(np.square(x, dtype=np.float64))) + 1e-12)


def test_chat_in_tmux_on_null_sinks(tiny_checkpoint, tmp_path):
    if shutil.which("tmux") is None:
        if os.environ.get("CI"):
            pytest.fail("tmux is required in CI (.ci/run installs it)")
        pytest.skip("needs tmux (apt-get install tmux)")
    cache = tmp_path / "tts"
    question = say("tell me a long story about the sea", DEFAULT_VOICE, cache)
    cut = say("no no, stop, please stop talking now", DEFAULT_VOICE, cache)
    onset, speech_end = speech_span(cut)
    tmux = _Tmux(f"parley-chat-test-{os.getpid()}")
    with pulse_null_sinks(["agent_out", "user_in"]) as dev:
        env = {k: os.environ[k] for k in ("PULSE_SERVER", "ALSA_CONFIG_PATH")}
        cmd = (
            " ".join(f"{k}={v}" for k, v in env.items())
            + f" HF_HUB_OFFLINE=1 {sys.executable} run_agent.py chat --checkpoint "
            f"{tiny_checkpoint} --input-device user_in_monitor --output-device agent_out"
            f" --save-dir {tmp_path}; sleep 30"  # keep an error on screen for the capture
        )
        tmux("new-session", "-d", "-s", "chat", "-x", "150", "-y", "40", "-c", str(ROOT), cmd)
        try:
            with _Stream(dev.sinks["user_in"], dev.monitors["agent_out"]) as room:
                tmux.wait_for("LISTENING", 40)
                room.say(question)
                tmux.wait_for("SPEAKING", 20)
                time.sleep(1.0)  # let a second of reply play before cutting in
                at = room.say(cut)
                shown = tmux.wait_for("✂ cut", 10)
                time.sleep(0.2)
                played = room.samples()
            assert "agent" in shown and "interrupted" in shown and "barge-in stop" in shown
            tmux("send-keys", "-t", "chat", "q")
        finally:
            tmux("kill-server")
    # The reply was audible before the cut, and silent while the user kept speaking.
    before = played[at - SR // 2 : at]
    silent = played[at + onset + int(0.35 * SR) : at + speech_end]
    print(
        f"\nchat e2e: reply {_rms_db(before):.0f} dB before the cut, {_rms_db(silent):.0f} dB after"
    )
    assert _rms_db(before) > -40, f"reply not heard before the cut ({_rms_db(before):.0f} dB)"
    assert len(silent) > SR // 2
    assert _rms_db(silent) < -55, f"agent still audible after the cut ({_rms_db(silent):.0f} dB)"
