"""StreamingVAD on synthesized speech (espeak-ng) and seeded noise."""

from __future__ import annotations

import subprocess
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import soxr
import torch

from parley.speech_io import vad as vad_module
from parley.speech_io.vad import StreamingVAD, VADEvent, VADOptions, VADState

RATE = 16000
MS = RATE // 1000
# Phrases open on voiced sounds: silero confirms those within a chunk or two, while a
# breathy "h" or an "s" is noise-like and takes it 60-130 ms, whatever we tune.
PHRASES = {
    "speech": "Okay, tell me more about the weather tomorrow.",
    "first": "No, wait a moment.",
    "second": "Maybe we could go tomorrow.",
    "backchannel": "uh-huh",
}
ONSET_LEVEL = 1e-3  # -60 dBFS: below it espeak's output and soxr's ringing are silence


@pytest.fixture(scope="module")
def voice(tmp_path_factory: pytest.TempPathFactory) -> dict[str, np.ndarray]:
    """Each phrase as 16 kHz float32, trimmed to its first and last non-silent sample."""
    folder: Path = tmp_path_factory.mktemp("espeak")
    clips = {}
    for name, text in PHRASES.items():
        path = folder / f"{name}.wav"
        subprocess.run(["espeak-ng", "-v", "en-us", "-w", str(path), text], check=True, timeout=60)
        audio, rate = sf.read(path, dtype="float32")
        audio = soxr.resample(audio, rate, RATE).astype(np.float32)
        loud = np.flatnonzero(np.abs(audio) > ONSET_LEVEL)
        clips[name] = audio[loud[0] : loud[-1] + 1]
    return clips


@pytest.fixture(scope="module")
def vad() -> StreamingVAD:
    return StreamingVAD()


def silence(ms: int) -> np.ndarray:
    return np.zeros(ms * MS, np.float32)


def scaled(x: np.ndarray, dbfs: float) -> np.ndarray:
    return (x / np.sqrt(np.mean(x**2)) * 10 ** (dbfs / 20)).astype(np.float32)


def noise(kind: str, dbfs: float, seconds: float, seed: int = 0) -> np.ndarray:
    white = np.random.default_rng(seed).standard_normal(int(seconds * RATE))
    if kind == "white":
        return scaled(white, dbfs)
    # Brown: integrated white noise, its slow drift removed so it stays audio, not DC.
    brown = np.cumsum(white)
    brown -= np.convolve(brown, np.ones(801) / 801, mode="same")
    return scaled(brown, dbfs)


def run(vad: StreamingVAD, audio: np.ndarray) -> list[VADEvent]:
    vad.reset()
    return vad.push(audio)


def kinds(events: list[VADEvent]) -> list[str]:
    return [e.kind for e in events]


@pytest.mark.parametrize("lead_ms", [500, 505, 511, 523])  # onsets at several silero phases
def test_speech_starts_near_onset_and_stops_after_end(voice, vad, lead_ms):
    speech = voice["speech"]
    onset, end = lead_ms * MS, lead_ms * MS + len(speech)
    events = run(vad, np.concatenate([silence(lead_ms), speech, silence(800)]))
    assert kinds(events) == ["start", "stop"]
    start, stop = events
    assert start.detected_at - onset <= 60 * MS
    frame = vad.options.frame_samples
    assert onset - frame <= start.sample <= start.detected_at
    assert end - 30 * MS <= stop.sample <= end + 30 * MS
    assert stop.detected_at == stop.sample + vad.options.stop_frames * frame
    assert vad.state is VADState.QUIET and not vad.is_speech


def test_silence_gives_no_events(vad):
    assert run(vad, silence(3000)) == []
    assert vad.state is VADState.QUIET


@pytest.mark.parametrize("kind", ["white", "brown"])
@pytest.mark.parametrize("dbfs", [-40, -25, -15, -6])
def test_noise_never_starts(vad, kind, dbfs):
    audio = noise(kind, dbfs, seconds=3.0, seed=dbfs + 100)
    assert [e for e in run(vad, audio) if e.kind == "start"] == []


def test_loud_noise_needs_the_second_stage():
    # Without silero's confirmation webrtcvad takes loud noise for speech: the test
    # above passes because of stage 2, not because this noise is easy.
    stage1_only = StreamingVAD(VADOptions(confirm_threshold=0.0))
    for kind in ("white", "brown"):
        assert "start" in kinds(run(stage1_only, noise(kind, -15, seconds=1.0)))


def test_speech_in_white_noise_is_detected(voice, vad):
    speech = voice["speech"]
    clean = np.concatenate([silence(500), speech, silence(800)])
    events = run(vad, clean + noise("white", -30, len(clean) / RATE, seed=7))
    onset, end = 500 * MS, 500 * MS + len(speech)
    assert events[0].kind == "start"
    assert onset - 100 * MS <= events[0].sample and events[0].detected_at <= onset + 100 * MS
    assert events[-1].kind == "stop" and events[-1].sample >= end - 100 * MS


def test_backchannel_is_a_short_segment(voice, vad):
    events = run(vad, np.concatenate([silence(500), voice["backchannel"], silence(800)]))
    assert kinds(events) == ["start", "stop"]
    duration = (events[1].sample - events[0].sample) / RATE
    assert 0.2 < duration < 0.8


def test_short_pause_keeps_one_segment(voice, vad):
    def with_pause(ms: int) -> np.ndarray:
        parts = [silence(400), voice["first"], silence(ms), voice["second"], silence(800)]
        return np.concatenate(parts)

    assert kinds(run(vad, with_pause(300))) == ["start", "stop"]
    # The same phrases further apart are two segments, so the stop logic does fire.
    assert kinds(run(vad, with_pause(600))) == ["start", "stop", "start", "stop"]


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_any_chunking_gives_the_same_events(voice, seed):
    rng = np.random.default_rng(seed)
    parts = [silence(300), voice["first"], silence(500), noise("white", -35, 0.3, seed)]
    audio = np.concatenate([*parts, voice["backchannel"], silence(700)])
    allow = np.ones(len(audio), bool)
    allow[int(rng.integers(len(audio) // 2, len(audio))) :][:4000] = False
    frame = VADOptions().frame_samples
    reference, chunked = StreamingVAD(), StreamingVAD()
    expected = [
        e
        for i in range(0, len(audio), frame)
        for e in reference.push(audio[i : i + frame], allow[i : i + frame])
    ]
    events, i = [], 0
    while i < len(audio):
        n = int(rng.integers(1, 3000))
        events += chunked.push(audio[i : i + n], allow[i : i + n])
        i += n
    assert len(expected) >= 4
    assert events == expected
    assert chunked.state == reference.state and chunked.samples_seen == len(audio)
    assert chunked.speech_probability == reference.speech_probability


def test_closed_gate_never_starts_speech(voice, vad):
    audio = np.concatenate([silence(300), voice["speech"], silence(800)])
    vad.reset()
    assert vad.push_gated(audio, allow=False) == []
    assert vad.state is VADState.QUIET and not vad.frame_is_speech
    # Opened half-way through the phrase, the gate lets the rest start speech there.
    opened = 300 * MS + len(voice["speech"]) // 2
    allow = np.arange(len(audio)) >= opened
    vad.reset()
    events = vad.push(audio, allow=allow)
    assert kinds(events) == ["start", "stop"] and events[0].sample >= opened


def test_reset_starts_a_fresh_stream(voice, vad):
    audio = np.concatenate([silence(300), voice["first"], silence(600)])
    fresh = run(vad, audio)
    vad.reset()
    vad.push(audio[: 300 * MS + len(voice["first"]) // 2])
    assert vad.is_speech
    vad.reset()
    assert vad.state is VADState.QUIET and vad.samples_seen == 0
    assert vad.push(audio) == fresh
    with vad.streaming() as stream:
        assert stream.samples_seen == 0
        stream.push(audio[:8000])
    assert vad.samples_seen == 0


def test_streams_do_not_share_state(voice):
    speech = np.concatenate([silence(300), voice["first"], silence(600)])
    quiet = silence(len(speech) // MS)
    alone = StreamingVAD().push(speech)
    a, b = StreamingVAD(), StreamingVAD()
    together = []
    for i in range(0, len(speech), 1000):
        together += a.push(speech[i : i + 1000])
        assert b.push(quiet[i : i + 1000]) == []
    assert together == alone


@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # silero's own loader
def test_silero_probability_matches_the_packaged_model(voice):
    from silero_vad import load_silero_vad

    audio = np.concatenate([silence(200), voice["first"]])
    audio = audio[: len(audio) // 2560 * 2560]  # 2560 = lcm of a 512 chunk and a 160 frame
    reference = load_silero_vad()
    with torch.inference_mode():
        expected = [float(reference(torch.from_numpy(c), RATE)) for c in audio.reshape(-1, 512)]
    vad = StreamingVAD(VADOptions(silero_phases=1))
    got = []
    for i in range(0, len(audio), 2560):
        vad.push(audio[i : i + 2560])
        got.append(vad.speech_probability)
    assert got == pytest.approx(expected[4::5], abs=1e-6)
    assert max(got) > 0.9


def test_loading_silero_keeps_torch_threads(monkeypatch):
    # silero_vad's import pins torch to one thread for the whole process.
    monkeypatch.setattr(vad_module, "_model", None)
    before = torch.get_num_threads()
    torch.set_num_threads(3)
    try:
        StreamingVAD()
        assert torch.get_num_threads() == 3
    finally:
        torch.set_num_threads(before)


@pytest.mark.parametrize(
    "bad",
    [
        {"frame_ms": 25},
        {"aggressiveness": 4},
        {"start_frames": 0},
        {"start_window": 0},
        {"confirm_threshold": 1.5},
        {"silero_phases": 3},
    ],
)
def test_options_are_validated(bad):
    with pytest.raises(ValueError):
        VADOptions(**bad)


def tentative_frames(vad: StreamingVAD, audio: np.ndarray) -> list[int]:
    """End samples of the frames after which the VAD reported possible, unconfirmed speech."""
    vad.reset()
    frame, ends = vad.options.frame_samples, []
    for i in range(0, len(audio) - frame + 1, frame):
        vad.push(audio[i : i + frame])
        if vad.tentative:
            ends.append(i + frame)
    return ends


@pytest.mark.parametrize("kind", ["white", "brown"])
@pytest.mark.parametrize("dbfs", [-40, -15, -6])
def test_noise_is_never_tentative_speech(vad, kind, dbfs):
    assert tentative_frames(vad, noise(kind, dbfs, seconds=2.0, seed=dbfs + 70)) == []


def test_fricative_onset_is_tentative_before_it_is_confirmed(tmp_path):
    # "s" holds silero under the confirmation bar until the vowel; the tentative stage
    # says "possibly speech" earlier, so a speaking agent can pause sooner.
    path = tmp_path / "s.wav"
    subprocess.run(
        ["espeak-ng", "-v", "en-us", "-w", str(path), "stop please"], check=True, timeout=60
    )
    audio, rate = sf.read(path, dtype="float32")
    clip = soxr.resample(audio, rate, RATE).astype(np.float32)
    earlier = []
    for lead_ms in range(500, 532, 2):
        x = np.concatenate([silence(lead_ms), clip, silence(300)])
        vad = StreamingVAD()
        first_tentative = min(tentative_frames(vad, x), default=None)
        vad.reset()
        start = next(e for e in vad.push(x) if e.kind == "start")
        if first_tentative is not None:
            assert first_tentative <= start.detected_at
            earlier.append(start.detected_at - first_tentative)
    assert earlier and max(earlier) >= 30 * MS  # somewhere it is much earlier
    assert not vad.tentative  # once confirmed, speech is no longer merely possible
