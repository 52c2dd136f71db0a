"""DeviceTransport without a sound card: ring logic, and the pump over a fake PortAudio."""

from __future__ import annotations

import asyncio
import ctypes.util
import sys
import threading
from typing import Any

import numpy as np
import pytest

from parley.speech_io import pulse as pulse_helper
from parley.speech_io import soundcard
from parley.speech_io.block_pump import StallWatch
from parley.speech_io.devices import (
    AudioDeviceError,
    DeviceTransport,
    _pick,
    find_device,
    list_devices,
    refresh_devices,
)
from parley.speech_io.pulse import pulse_null_sinks
from parley.speech_io.ring import SampleFifo
from tests.device_endpoint import BLOCK, SR, _core, _dev, _Endpoint, _play, _tone

# ---------------------------------------------------------------- ring and pump, no PortAudio


def test_ring_wraps_drops_excess_and_clears_atomically() -> None:
    ring = SampleFifo(8)
    assert ring.write(np.arange(6, dtype=np.float32)) == 6
    out = np.zeros(4, np.float32)
    assert ring.read_into(out) == 4
    np.testing.assert_array_equal(out, [0, 1, 2, 3])
    assert ring.write(np.arange(10, 20, dtype=np.float32)) == 6  # 2 held + 6 = full
    np.testing.assert_array_equal(ring.read_all(), [4, 5, 10, 11, 12, 13, 14, 15])
    ring.write(np.ones(3, np.float32))
    assert ring.clear() == (3, 12) and len(ring) == 0


def test_output_prefill_play_underrun_and_exact_rewind() -> None:
    sig = _tone(SR)
    ep = _Endpoint(sig)
    t = _core(ep, ahead_blocks=2)
    t.pump.service()
    assert ep.pulled == 2 * BLOCK  # two blocks ahead, no more
    np.testing.assert_array_equal(_play(t, BLOCK)[:, 0], sig[:BLOCK])
    t.pump.service()
    played = [_play(t, BLOCK) for _ in range(3)]  # the loop is late: third block runs dry
    np.testing.assert_array_equal(np.concatenate(played[:2])[:, 0], sig[BLOCK : 3 * BLOCK])
    assert not played[2].any()
    assert (t.stats.output_underruns, t.stats.output_missing) == (1, BLOCK)
    assert ep.gaps == 0
    t.pump.service()
    assert ep.gaps == BLOCK  # the endpoint hears of the silence before it pulls again
    _play(t, 100)  # part of a block: 220 pulled samples stay unplayed
    assert t.clear_output() == 220
    assert ep.rewound == 220 and ep.pulled - ep.rewound == 3 * BLOCK + 100
    # The gap until the next top-up was asked for: no underrun counted, but it played.
    assert not _play(t, BLOCK).any() and t.stats.output_underruns == 1
    t.pump.service()
    assert ep.gaps == 2 * BLOCK
    np.testing.assert_array_equal(_play(t, BLOCK)[:, 0], sig[ep.pos - 2 * BLOCK : ep.pos - BLOCK])
    assert t.stats.cleared == 220


def test_input_frames_in_order_and_overrun_counted() -> None:
    ep = _Endpoint(np.zeros(0, np.float32))
    t = _core(ep, input_buffer_ms=50)  # 800 samples of room
    mic = np.arange(7 * 100, dtype=np.float32)
    for block in np.split(mic, 7):  # 100-sample device blocks, 160-sample frames out
        t._input_callback(block[:, None], 100, None, 0)
    t.pump.service()
    assert [len(x) for x in ep.received] == [BLOCK] * 4
    np.testing.assert_array_equal(ep.mic(), mic[:640])
    for _ in range(10):  # nobody services the ring: it fills, then drops
        t._input_callback(np.ones((100, 1), np.float32), 100, None, 0)
    assert t.stats.input_overruns == 2 and t.stats.input_dropped == 200


def test_48k_stereo_device_is_resampled_and_rewind_maps_to_16k() -> None:
    sig = _tone(SR)
    ep = _Endpoint(sig)
    t = _core(ep, rate=48000, channels=2)
    t.pump.service()
    blocks = []
    for _ in range(20):
        blocks.append(_play(t, 480, 2))
        t.pump.service()
    out = np.concatenate(blocks)
    np.testing.assert_array_equal(out[:, 0], out[:, 1])  # both channels carry the voice
    ref = _tone(len(out), rate=48000)
    assert np.corrcoef(out[960:, 0], ref[960:])[0, 1] > 0.999
    for k in range(20):  # channel 1 is noise the transport must ignore
        block = np.stack([ref[480 * k : 480 * (k + 1)], np.full(480, 0.9, np.float32)], axis=1)
        t._input_callback(block, 480, None, 0)
        t.pump.service()
    mic = ep.mic()
    assert len(mic) >= 2800  # the resampler holds a little back
    assert np.corrcoef(mic[320:2800], _tone(SR)[320:2800])[0, 1] > 0.999
    _play(t, 300, 2)
    consumed = 20 * 480 + 300
    n = t.clear_output()
    assert n == ep.pulled - consumed // 3  # floor: a part-played sample counts as unplayed
    for _ in range(3):  # 1440 device samples of silence, told at 16 kHz, none lost
        _play(t, 480, 2)
    _play(t, 100, 2)
    t.pump.service()
    assert ep.gaps == (3 * 480 + 100) // 3


def test_health_check_reports_stop_and_stall() -> None:
    t = _core(_Endpoint(np.zeros(0, np.float32)))
    watch = StallWatch(timeout=1.0, now=0.0)
    t.check_health(watch, 0.0)  # both streams seen at 0 blocks
    t.pump.device_input(np.zeros(BLOCK, np.float32))  # a microphone block arrives
    t.check_health(watch, 0.9)  # input moved on; output quiet for 0.9 s, within the limit
    with pytest.raises(AudioDeviceError, match=r"output device .*'spk'.* no audio for 1\.2 s"):
        t.check_health(watch, 1.2)
    t._on_finished("input")  # PortAudio's finished callback, unasked
    with pytest.raises(AudioDeviceError, match="input device .*'mic'.*stopped by itself"):
        t.check_health(StallWatch(timeout=1.0, now=0.0), 0.0)


def test_pick_prefers_exact_name_and_lists_devices_when_missing() -> None:
    devs = [_dev(0, "agent_out", 2, 2), _dev(1, "agent_out_monitor", 2, 2), _dev(2, "hdmi", 0, 8)]
    assert _pick(devs, "agent_out", "input").index == 0
    assert _pick(devs, "MONITOR", "input").index == 1
    assert _pick(devs, None, "output").index == 0  # no default marked: the first able one
    with pytest.raises(AudioDeviceError, match=r"named 'agent'.*2 names.*\[2\] 'hdmi'"):
        _pick(devs, "agent", "input")
    with pytest.raises(AudioDeviceError, match=r"input device with index 2; devices found"):
        _pick(devs, 2, "input")


# ---------------------------------------------------------------- the async pump, fake PortAudio


class _FakeStream:
    def __init__(self, registry: list[_FakeStream], **kw: Any) -> None:
        self.kw, self.latency, self.state = kw, 0.02, "open"
        self.callback, self.finished = kw["callback"], kw["finished_callback"]
        registry.append(self)

    def start(self) -> None:
        self.state = "started"

    def abort(self) -> None:
        self.state = "aborted"

    def close(self) -> None:
        self.state = "closed"


class _FakeSD:
    """Just enough of the sounddevice module for DeviceTransport, driven by the test."""

    class PortAudioError(Exception):
        pass

    class CallbackAbort(Exception):
        pass

    def __init__(self, devices: list[dict[str, Any]], accepts: set[tuple[int, int]]) -> None:
        self.devices, self.accepts = devices, accepts
        self.streams: list[_FakeStream] = []

    def query_devices(self, kind: str | None = None) -> Any:
        if kind is None:
            return self.devices
        able = [i for i, d in enumerate(self.devices) if d[f"max_{kind}_channels"]]
        if not able:
            raise self.PortAudioError(f"No {kind} device")
        return {"index": able[0], **self.devices[able[0]]}

    def query_hostapis(self) -> list[dict[str, Any]]:
        return [{"name": "Fake"}]

    def _check(self, device: int, channels: int, dtype: str, samplerate: int) -> None:
        if (samplerate, channels) not in self.accepts:
            raise self.PortAudioError("Invalid sample rate")

    check_input_settings = check_output_settings = _check

    def InputStream(self, **kw: Any) -> _FakeStream:  # noqa: N802 - sounddevice's name
        return _FakeStream(self.streams, **kw)

    OutputStream = InputStream


def _fake_dev(name: str, ins: int, outs: int) -> dict[str, Any]:
    return dict(name=name, hostapi=0, max_input_channels=ins, max_output_channels=outs,
                default_samplerate=48000.0)  # fmt: skip


@pytest.fixture
def fake_sd(monkeypatch: pytest.MonkeyPatch) -> _FakeSD:
    sd = _FakeSD([_fake_dev("fake mic", 1, 0), _fake_dev("fake speaker", 0, 2)], {(SR, 1)})
    monkeypatch.setitem(sys.modules, "sounddevice", sd)
    return sd


async def _settle() -> None:
    for _ in range(5):
        await asyncio.sleep(0)


async def test_pump_moves_both_ways_then_closes_streams(fake_sd: _FakeSD) -> None:
    sig = _tone(SR)
    ep = _Endpoint(sig)
    played = []
    async with DeviceTransport(ep) as t:
        inp, out = fake_sd.streams
        assert inp.kw["device"] == 0 and out.kw["blocksize"] == BLOCK and inp.state == "started"
        # Prefilled for PortAudio's start-up burst (latency 20 ms: 2 + 1 blocks) plus the lead.
        assert ep.pulled == 5 * BLOCK
        for k in range(10):
            inp.callback(np.full((BLOCK, 1), k, np.float32), BLOCK, None, 0)
            played.append(np.zeros((BLOCK, 1), np.float32))
            out.callback(played[-1], BLOCK, None, 0)
            await _settle()
        assert t.output_format is not None and t.output_format.latency == 0.02
    assert inp.state == out.state == "closed"
    np.testing.assert_array_equal(np.concatenate(played)[:, 0], sig[: 10 * BLOCK])
    np.testing.assert_array_equal(ep.mic(), np.repeat(np.arange(10, dtype=np.float32), BLOCK))
    assert t.stats.output_underruns == 0 and t.stats.input_blocks == 10


async def test_device_that_stops_raises_clear_error(fake_sd: _FakeSD) -> None:
    t = DeviceTransport(_Endpoint(np.zeros(0, np.float32)))
    with pytest.raises(AudioDeviceError, match="output device .*fake speaker.*stopped by itself"):
        async with t:
            fake_sd.streams[1].finished()
            await asyncio.wait_for(t.wait(), 2.0)
    assert all(s.state == "closed" for s in fake_sd.streams)


async def test_stalled_device_and_failing_callback(fake_sd: _FakeSD) -> None:
    t = DeviceTransport(_Endpoint(np.zeros(0, np.float32)), stall_timeout=0.2)
    await t.start()
    with pytest.raises(AudioDeviceError, match="delivered no audio"):
        await asyncio.wait_for(t.wait(), 2.0)
    await t.aclose()
    t = DeviceTransport(_Endpoint(np.zeros(0, np.float32)))
    await t.start()
    with pytest.raises(_FakeSD.CallbackAbort):
        fake_sd.streams[-1].callback(np.zeros(BLOCK, np.float32), BLOCK, None, 0)  # not 2-D
    with pytest.raises(AudioDeviceError, match="callback error: IndexError"):
        await asyncio.wait_for(t.wait(), 2.0)
    await t.aclose()


async def test_a_stream_that_never_closes_leaves_portaudio_alone(
    fake_sd: _FakeSD, monkeypatch: pytest.MonkeyPatch
) -> None:
    # What a sound server that dies as the stream starts does to PortAudio's ALSA thread:
    # it spins, and closing the stream (or terminating PortAudio) waits for it for good.
    release = threading.Event()
    calls: list[str] = []
    fake_sd._terminate = lambda: calls.append("terminate")  # type: ignore[attr-defined]
    fake_sd._initialize = lambda: calls.append("initialize")  # type: ignore[attr-defined]
    fake_sd._exit_handler = lambda: calls.append("exit")  # type: ignore[attr-defined]
    fake_sd._libname = ctypes.util.find_library("c")  # type: ignore[attr-defined]
    dropped: list[Any] = []
    monkeypatch.setattr(soundcard.atexit, "unregister", dropped.append)
    refresh_devices()
    assert calls == ["terminate", "initialize"] and not dropped
    t = DeviceTransport(_Endpoint(np.zeros(0, np.float32)), close_timeout=0.2)
    await t.start()
    monkeypatch.setattr(fake_sd.streams[0], "abort", lambda: release.wait(10))
    fake_sd.streams[1].finished()
    try:
        with pytest.raises(AudioDeviceError, match="stopped by itself"):
            await asyncio.wait_for(t.wait(), 2.0)
        await asyncio.wait_for(t.aclose(), 2.0)
        # sounddevice's exit handler would terminate PortAudio, and hang the program's exit
        assert dropped == [fake_sd._exit_handler]  # type: ignore[attr-defined]
        # and its thread still runs the library's code: the library stays loaded to the end
        assert fake_sd._libname in soundcard._pinned  # type: ignore[attr-defined]
        with pytest.raises(AudioDeviceError, match="did not close within 0.2 s.*restart"):
            refresh_devices()
        assert calls == ["terminate", "initialize"]
    finally:
        release.set()


def test_a_rescan_that_never_returns_is_an_error_not_a_hang(fake_sd: _FakeSD) -> None:
    release = threading.Event()
    fake_sd._terminate = lambda: release.wait(10)  # type: ignore[attr-defined]
    fake_sd._initialize = lambda: None  # type: ignore[attr-defined]
    try:
        with pytest.raises(AudioDeviceError, match="did not re-initialise within 0.2 s"):
            refresh_devices(timeout=0.2)
        fake_sd._terminate = lambda: None  # type: ignore[attr-defined]
        with pytest.raises(AudioDeviceError, match="restart the program"):
            refresh_devices()
    finally:
        release.set()


def test_a_failed_rescan_says_so(fake_sd: _FakeSD) -> None:
    def fail() -> None:
        raise fake_sd.PortAudioError("Error initializing PortAudio")

    fake_sd._terminate, fake_sd._initialize = (lambda: None), fail  # type: ignore[attr-defined]
    with pytest.raises(AudioDeviceError, match="cannot re-scan sound devices: Error init"):
        refresh_devices()


async def test_endpoint_error_stops_transport(fake_sd: _FakeSD) -> None:
    class Broken(_Endpoint):
        def pull_output(self, n: int) -> np.ndarray:
            if self.pulled >= 5 * BLOCK:  # after the prefill at start
                raise ValueError("boom")
            return super().pull_output(n)

    t = DeviceTransport(Broken(np.zeros(0, np.float32)))
    await t.start()
    for _ in range(4):  # play the prefill down below the lead: the pump pulls, and fails
        fake_sd.streams[1].callback(np.zeros((BLOCK, 1), np.float32), BLOCK, None, 0)
    with pytest.raises(ValueError, match="boom"):
        await asyncio.wait_for(t.wait(), 2.0)
    assert all(s.state == "closed" for s in fake_sd.streams)


async def test_no_input_device_lists_what_was_found(monkeypatch: pytest.MonkeyPatch) -> None:
    sd = _FakeSD([_fake_dev("HDMI out", 0, 8), _fake_dev("speaker", 0, 2)], {(SR, 1)})
    monkeypatch.setitem(sys.modules, "sounddevice", sd)
    with pytest.raises(AudioDeviceError) as err:
        await DeviceTransport(_Endpoint(np.zeros(0, np.float32))).start()
    msg = str(err.value)
    assert msg.startswith("no audio input device; devices found:")
    assert (
        "[0] 'HDMI out' (Fake, in 0, out 8, 48000 Hz, default output)" in msg
        and "[1] 'speaker'" in msg
    )
    sd.devices = []
    with pytest.raises(AudioDeviceError, match="no audio input device; devices found: none"):
        find_device(None, "input")


async def test_odd_devices_get_a_rate_and_channels_they_accept(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    sd = _FakeSD([_fake_dev("usb", 2, 2)], {(48000, 2)})
    monkeypatch.setitem(sys.modules, "sounddevice", sd)
    async with DeviceTransport(_Endpoint(np.zeros(0, np.float32)), "usb", "usb") as t:
        assert sd.streams[0].kw["samplerate"] == 48000 and sd.streams[0].kw["channels"] == 2
        assert t.input_format is not None and t.input_format.blocksize == 480
    sd.accepts = set()
    with pytest.raises(AudioDeviceError, match=r"input device \[0\] 'usb'.*accepts none of rates"):
        await DeviceTransport(_Endpoint(np.zeros(0, np.float32))).start()


def test_pulse_helper_without_pulseaudio_says_what_to_install(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(pulse_helper.shutil, "which", lambda name: None)
    install = "apt-get install -y pulseaudio pulseaudio-utils libasound2-plugins libportaudio2"
    with pytest.raises(pulse_helper.PulseUnavailableError, match=install), pulse_null_sinks(["x"]):
        pass


def test_without_portaudio_the_error_says_what_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "sounddevice", None)
    with pytest.raises(AudioDeviceError, match="install libportaudio2"):
        list_devices()


async def test_first_reply_audio_jumps_the_queued_silence(fake_sd: _FakeSD, tiny_model) -> None:
    from parley.agent.core.live import connect_devices
    from parley.agent.core.session import DuplexSession
    from parley.config import AgentConfig
    from tests.scripted import ScriptedDetector
    from tests.test_session import speechlike

    session = DuplexSession(
        tiny_model,
        AgentConfig(echo_cancellation=False),
        detector=ScriptedDetector([(0, SR // 2)]),
    )
    events = []
    session.subscribe(events.append)
    user = np.concatenate([speechlike(SR // 2), np.zeros(3 * SR, np.float32)])
    played, first_at = [], None
    async with connect_devices(session) as t:
        inp, out = fake_sd.streams
        for k in range(len(user) // BLOCK):
            inp.callback(user[k * BLOCK : (k + 1) * BLOCK, None], BLOCK, None, 0)
            await session.settle()
            await _settle()
            if first_at is None and any(e.type == "first_audio" for e in events):
                first_at = k
            block = np.zeros((BLOCK, 1), np.float32)
            out.callback(block, BLOCK, None, 0)
            played.append(block[:, 0])
            await _settle()
    await session.aclose()
    sound = np.concatenate(played)
    heard_at = int(np.flatnonzero(np.abs(sound) > 0)[0]) // BLOCK
    # The fake device holds nothing itself, so the reply sounds in the very block it became
    # ready in: the silence the transport had queued ahead of it was dropped.
    assert first_at is not None and heard_at == first_at
    # The reply's samples came out once each, in order, from its first sample on.
    reply = next(e for e in events if e.type == "reply_started")
    spans = [
        (e.start, e.end)
        for e in events
        if e.type == "audio_played" and e.reply_id == reply.reply_id
    ]
    rewound = [e for e in events if e.type == "audio_rewound"]
    assert rewound and rewound[0].position == 0
    assert spans[0][0] == 0 and t.stats.output_underruns == 0
