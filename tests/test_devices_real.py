"""Sound devices for real: DeviceTransport on private PulseAudio null sinks.

These tests print their measurements (run with ``-s`` to see them). Under CPU load about
one run in five glitches (DESIGN.md section 5), so they assert with tolerance.
"""

from __future__ import annotations

import asyncio
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from parley.speech_io.devices import (
    AudioDeviceError,
    DeviceTransport,
    TransportStats,
    find_device,
)
from parley.speech_io.pulse import pulse_null_sinks
from tests.device_endpoint import BLOCK, SR, _Endpoint, _tone

# ---------------------------------------------------------------- real streams on null sinks
# The agent plays into `agent_out` (the test listens to its monitor) and hears `user_in`'s
# monitor (the test plays into `user_in`).

realdevice = pytest.mark.realdevice
ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def pulse() -> Any:
    with pulse_null_sinks(["agent_out", "user_in"]) as devices:
        yield devices


class _Recorder:
    """The test's ear: a plain sounddevice input stream on a sink monitor."""

    def __init__(self, device: int) -> None:
        import sounddevice as sd

        self.blocks: list[np.ndarray] = []
        self.count = self.glitches = 0
        self.stream = sd.InputStream(
            device=device, samplerate=SR, channels=1, blocksize=BLOCK, latency="low",
            callback=self._callback,
        )  # fmt: skip

    def _callback(self, indata: np.ndarray, frames: int, time: Any, status: Any) -> None:
        self.blocks.append(indata[:, 0].copy())
        self.count += frames
        self.glitches += bool(status)

    def __enter__(self) -> _Recorder:
        self.stream.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stream.abort()
        self.stream.close()

    def samples(self) -> np.ndarray:
        return np.concatenate(self.blocks)


class _Player:
    """The test's mouth: a plain sounddevice output stream playing ``signal`` once."""

    def __init__(self, device: int, signal: np.ndarray) -> None:
        import sounddevice as sd

        self.signal, self.pos, self.glitches = signal, 0, 0
        self.stream = sd.OutputStream(
            device=device, samplerate=SR, channels=1, blocksize=BLOCK, latency="low",
            callback=self._callback,
        )  # fmt: skip

    def _callback(self, outdata: np.ndarray, frames: int, time: Any, status: Any) -> None:
        chunk = self.signal[self.pos : self.pos + frames]
        outdata.fill(0)
        outdata[: len(chunk), 0] = chunk
        self.pos += frames
        self.glitches += bool(status)

    def __enter__(self) -> _Player:
        self.stream.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stream.abort()
        self.stream.close()


def _chirp(n: int, f0: float = 200.0, f1: float = 4000.0, amp: float = 0.5) -> np.ndarray:
    t = np.arange(n) / SR
    dur = n / SR
    return (amp * np.sin(2 * np.pi * (f0 * t + (f1 - f0) * t**2 / (2 * dur)))).astype(np.float32)


def _lag(rec: np.ndarray, ref: np.ndarray) -> int:
    """Where ``ref`` starts in ``rec`` (best cross-correlation, ``ref`` wholly inside)."""
    n = len(rec) + len(ref)
    c = np.fft.irfft(np.fft.rfft(rec, n) * np.conj(np.fft.rfft(ref, n)), n)
    return int(np.argmax(c[: len(rec) - len(ref) + 1]))


def _aligned_corr(rec: np.ndarray, ref: np.ndarray) -> tuple[int, float]:
    lag = _lag(rec, ref)
    return lag, float(np.corrcoef(rec[lag : lag + len(ref)], ref)[0, 1])


def _glitches(stats: TransportStats, *test_side: int) -> int:
    """Glitches anyone reported: PortAudio flags, underruns, overruns, the test's own streams."""
    return (
        sum(stats.status_flags.values()) + stats.output_underruns + stats.input_overruns
        + sum(test_side)
    )  # fmt: skip


def _check_match(what: str, rec: np.ndarray, ref: np.ndarray, glitches: int) -> None:
    """``ref`` must come out of ``rec`` with correlation >= 0.9, aligned by cross-correlation.

    Judged per 100 ms window, each re-aligned within 100 ms of where the one before it was
    found, so that a reported glitch (samples lost or inserted) spoils its window, not all
    that follow: with no glitch reported every window must pass, with some 80 % of them
    (DESIGN.md section 5).
    """
    assert len(rec) >= len(ref), f"{what}: only {len(rec)} samples for {len(ref)}"
    base, whole = _aligned_corr(rec, ref)
    win = slack = 1600
    corrs = []
    for w in range(0, len(ref) - win + 1, win):
        lo, hi = max(0, base + w - slack), min(len(rec), base + w + win + slack)
        k, corr = _aligned_corr(rec[lo:hi], ref[w : w + win]) if hi - lo >= win else (0, 0.0)
        corrs.append(corr)
        if corr >= 0.9:
            base = lo + k - w
    good = float(np.mean(np.array(corrs) >= 0.9))
    print(f"\n{what}: correlation {whole:.4f} overall, {good:.0%} of 100 ms windows >= 0.9, "
          f"glitches reported: {glitches}")  # fmt: skip
    assert good >= (0.8 if glitches else 1.0), f"{what}: window correlations {np.round(corrs, 3)}"


@realdevice
async def test_tone_from_transport_reaches_the_sink(pulse: Any) -> None:
    ep = _Endpoint(_tone(2 * SR))
    with _Recorder(pulse.monitors["agent_out"]) as rec:
        async with DeviceTransport(ep, pulse.monitors["user_in"], pulse.sinks["agent_out"]) as t:
            await asyncio.sleep(1.0)
        stats = t.stats
    print(f"\n{stats}", end="")
    _check_match(
        "tone out", rec.samples(), ep.signal[: int(0.8 * SR)], _glitches(stats, rec.glitches)
    )


@realdevice
async def test_user_audio_reaches_the_endpoint(pulse: Any) -> None:
    ep = _Endpoint(np.zeros(0, np.float32))
    speech = _chirp(SR)
    async with DeviceTransport(ep, pulse.monitors["user_in"], pulse.sinks["agent_out"]) as t:
        with _Player(pulse.sinks["user_in"], speech) as player:
            for _ in range(300):  # a player's first callbacks can come late; allow 3 s
                if player.pos >= len(speech) + 2 * BLOCK:
                    break
                await asyncio.sleep(0.01)
            await asyncio.sleep(0.2)  # the way back: sink, monitor, transport
        stats = t.stats
    print(f"\n{stats}", end="")
    _check_match("mic in", ep.mic(), speech, _glitches(stats, player.glitches))


@realdevice
async def test_clear_output_silences_within_device_latency(pulse: Any) -> None:
    # Noise, not a tone: every stretch of it identifies its place in the signal.
    voice = np.random.default_rng(1).uniform(-0.5, 0.5, 3 * SR).astype(np.float32)
    ep = _Endpoint(voice)
    with _Recorder(pulse.monitors["agent_out"]) as rec:
        async with DeviceTransport(ep, pulse.monitors["user_in"], pulse.sinks["agent_out"]) as t:
            await asyncio.sleep(0.6)
            heard_at_clear = rec.count
            ep.silent = True  # a paused session pulls silence from now on
            dropped = t.clear_output()
            await asyncio.sleep(0.4)
            stats = t.stats
        assert t.output_format is not None
        device_ms = (t.output_format.latency + rec.stream.latency) * 1000
    r = rec.samples()
    # The endpoint was told it played voice[:ep.pos]: find its last 100 ms in the recording.
    lag, corr = _aligned_corr(r, voice[ep.pos - 1600 : ep.pos])
    end = lag + 1600  # where voice[ep.pos], the first dropped sample, would have been heard
    silent_after_ms = (end - heard_at_clear) * 1000 / SR
    print(f"\nclear_output: dropped {dropped} samples; output stopped {silent_after_ms:.1f} ms "
          f"after the call (bound: 2 blocks + device latencies {device_ms:.0f} ms); "
          f"{stats}, glitches reported: {_glitches(stats, rec.glitches)}")  # fmt: skip
    assert dropped == ep.rewound and dropped > 0
    assert corr >= 0.9
    # Exact to the sample: the last samples reported played were heard (the sink's int16
    # rounding aside), and not one sample reported dropped was.
    np.testing.assert_allclose(r[end - BLOCK : end], voice[ep.pos - BLOCK : ep.pos], atol=2e-3)
    assert np.abs(r[end : end + 1600]).max() < 2e-3
    assert silent_after_ms <= 2 * 10 + device_ms + 10


@realdevice
async def test_round_trip_latency_through_a_loopback(pulse: Any) -> None:
    loop = asyncio.get_running_loop()
    rng = np.random.default_rng(0)
    burst = (0.5 * rng.uniform(-1, 1, 320)).astype(np.float32)
    signal = np.zeros(int(1.6 * SR), np.float32)
    starts = [3200 + k * 4000 for k in range(5)]  # block-aligned, 250 ms apart
    for s in starts:
        signal[s : s + len(burst)] = burst
    ep = _Endpoint(signal, clock=loop.time)
    out, mon = pulse.sinks["agent_out"], pulse.monitors["agent_out"]
    async with DeviceTransport(ep, mon, out) as t:
        await asyncio.sleep(1.8)
        stats = t.stats
    mic = ep.mic()
    pulled_at = dict(ep.pull_log)
    # Matched filter over the whole recording: start-up can delay the first sound by a few
    # hundred ms, so no window is assumed. Peaks in order are the bursts in order.
    n = len(mic) + len(burst)
    score = np.fft.irfft(np.fft.rfft(mic, n) * np.conj(np.fft.rfft(burst, n)), n)[: len(mic)]
    found: list[int] = []
    for k in np.argsort(score)[::-1]:
        if all(abs(int(k) - f) > 2000 for f in found):
            found.append(int(k))
        if len(found) == len(starts):
            break
    found.sort()
    trips = []
    for s, at in zip(starts, found, strict=True):
        corr = np.corrcoef(mic[at : at + len(burst)], burst)[0, 1]
        assert corr >= 0.9, f"burst sent at {s} not found back (best: {at}, correlation {corr:.3f})"
        trips.append((ep.push_log[at // BLOCK] - pulled_at[s]) * 1000)
    print(f"\nround trip pull_output -> push_input: median {np.median(trips):.1f} ms, "
          f"all {[round(x, 1) for x in trips]} ms; device latencies "
          f"out {t.output_format.latency * 1000:.0f} ms / in {t.input_format.latency * 1000:.0f} ms, "
          f"{stats}")  # fmt: skip
    assert np.median(trips) < 150


@realdevice
async def test_48k_stereo_device_round_trips_through_soxr(pulse: Any) -> None:
    ep = _Endpoint(_tone(2 * SR))
    out, mon = pulse.sinks["agent_out"], pulse.monitors["agent_out"]
    async with DeviceTransport(ep, mon, out, device_sample_rate=48000, device_channels=2) as t:
        await asyncio.sleep(1.0)
        stats = t.stats
    assert t.output_format is not None and t.input_format is not None
    assert (t.output_format.sample_rate, t.output_format.channels) == (48000, 2)
    print(f"\n{stats}", end="")
    _check_match("48 kHz stereo loopback", ep.mic(), ep.signal[: SR // 2], _glitches(stats))


@realdevice
def test_unknown_device_error_lists_the_sinks(pulse: Any) -> None:
    with pytest.raises(AudioDeviceError) as err:
        find_device("no_such_sink", "output")
    assert "'agent_out'" in str(err.value) and "'user_in_monitor'" in str(err.value)


@realdevice
@pytest.mark.parametrize("delay", [0.3, 0.0])
def test_sound_server_crash_stops_transport_with_clear_error(delay: float) -> None:
    # A child process (tests/sound_server_crash.py): a server killed as the streams start can
    # leave PortAudio spinning in that process for good. The child must still say what
    # happened and exit.
    run = subprocess.run(
        [sys.executable, "-m", "tests.sound_server_crash", str(delay)],
        capture_output=True, text=True, timeout=60, cwd=ROOT,
    )  # fmt: skip
    assert run.returncode == 0, run.stderr[-3000:]
    assert re.search(r"^stopped: (input|output) device .*'doomed(_monitor)?'", run.stdout, re.M), (
        run.stdout
    )
