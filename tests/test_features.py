"""Whisper log-mel features: HF parity offline, streaming == offline for any chunking."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from transformers import WhisperFeatureExtractor
from transformers.audio_utils import mel_filter_bank

from parley.config import FeatureConfig
from parley.tokenizers.features import StreamingLogMel, log_mel, mel_filters

SR = 16000
N_MELS = [80, 128]


def _noise_and_tone(seconds: float, seed: int = 0, noise: float = 0.3) -> np.ndarray:
    rng = np.random.default_rng(seed)
    n = int(seconds * SR)
    tone = 0.5 * np.sin(2 * np.pi * 440.0 * np.arange(n) / SR)
    return (noise * rng.standard_normal(n) + tone).astype(np.float32)


def _hf(x: np.ndarray, n_mels: int) -> np.ndarray:
    fe = WhisperFeatureExtractor(feature_size=n_mels)
    return fe._np_extract_fbank_features(x[None], "cpu")[0]


def _stream(x: np.ndarray, sizes: list[int], cfg: FeatureConfig) -> tuple[np.ndarray, list[int]]:
    """Push ``x`` cut at ``sizes`` (cycled), then flush; also return frames per call."""
    mel = StreamingLogMel(cfg)
    outs, i, k = [], 0, 0
    with mel.streaming():
        while i < x.size:
            size = sizes[k % len(sizes)]
            outs.append(mel.push(x[i : i + size]))
            i, k = i + size, k + 1
        outs.append(mel.flush())
        assert mel.frames_emitted == x.size // cfg.hop_length
    for out in outs:
        assert out.dtype == np.float32 and out.shape[0] == cfg.n_mels
    return np.concatenate(outs, axis=1), [o.shape[1] for o in outs]


@pytest.mark.parametrize("n_mels", N_MELS)
def test_mel_filters_equal_hf(n_mels: int) -> None:
    ref = mel_filter_bank(
        num_frequency_bins=201,
        num_mel_filters=n_mels,
        min_frequency=0.0,
        max_frequency=8000.0,
        sampling_rate=16000,
        norm="slaney",
        mel_scale="slaney",
    )
    ours = mel_filters(n_mels)
    assert ours.shape == (n_mels, 201)
    np.testing.assert_allclose(ours, ref.T, rtol=1e-12, atol=1e-15)


@pytest.mark.parametrize("n_mels", N_MELS)
def test_offline_equals_hf_where_no_clamp_bites(n_mels: int) -> None:
    x = _noise_and_tone(2.0)
    # A floor below every value (mel power >= 1e-10), so only HF's clamp could differ.
    ours = log_mel(x, FeatureConfig(n_mels=n_mels, log_floor=-10.0))
    ref = _hf(x, n_mels)
    assert ref.min() > ref.max() - 2.0 + 0.1, "HF's (max - 8) clamp bites; pick another signal"
    assert ours.shape == ref.shape == (n_mels, x.size // 160)
    np.testing.assert_allclose(ours, ref, rtol=0, atol=1e-4)


@pytest.mark.parametrize("n_mels", N_MELS)
def test_default_floor_is_hf_clamped_at_fixed_floor(n_mels: int) -> None:
    cfg = FeatureConfig(n_mels=n_mels)
    x = _noise_and_tone(2.0)
    ours = log_mel(x, cfg)
    ref = _hf(x, n_mels)
    floor = (cfg.log_floor + 4.0) / 4.0
    assert ref.min() > ref.max() - 2.0 + 0.1, "HF's (max - 8) clamp bites; pick another signal"
    bitten = ref < floor
    assert 0 < bitten.mean() < 0.2, "the floor should bite on some entries, not most"
    assert np.all(ours[bitten] == np.float32(floor))
    np.testing.assert_allclose(ours, np.maximum(ref, floor), rtol=0, atol=1e-4)


def test_fixed_floor_makes_frames_independent_of_later_audio() -> None:
    # HF's clamp moves when a loud sound arrives later; ours must not, or streaming breaks.
    cfg = FeatureConfig()
    quiet = _noise_and_tone(1.0) * 0.1
    loud = _noise_and_tone(1.0, seed=1) * 30.0  # far past full scale, to move HF's clamp
    before = log_mel(quiet, cfg)
    after = log_mel(np.concatenate([quiet, loud]), cfg)
    assert (before > (cfg.log_floor + 4.0) / 4.0).any(), "quiet part is all floor: too weak"
    # The last two frames of `quiet` read samples of `loud` (or the reflection): skip them.
    np.testing.assert_array_equal(after[:, : before.shape[1] - 2], before[:, :-2])
    hf_before, hf_after = _hf(quiet, 80), _hf(np.concatenate([quiet, loud]), 80)
    assert np.abs(hf_after[:, :98] - hf_before[:, :98]).max() > 0.1


@pytest.mark.parametrize("n", [0, 1, 159, 160, 161, 199, 200, 201, 202, 359, 360, 361, 400])
def test_short_inputs_match_hf_and_stream(n: int) -> None:
    cfg = FeatureConfig()
    x = np.random.default_rng(n).uniform(-1, 1, n).astype(np.float32)
    ours = log_mel(x, cfg)
    assert ours.shape == (80, n // 160)
    if n >= 160:  # HF fails below one hop (its max over zero frames); we return no frames
        ref = _hf(x, 80)
        floor = (cfg.log_floor + 4.0) / 4.0
        np.testing.assert_allclose(ours, np.maximum(ref, floor), rtol=0, atol=1e-4)
    for sizes in ([1], [7, 0, 150], [n or 1]):
        streamed, _ = _stream(x, sizes, cfg)
        np.testing.assert_allclose(streamed, ours, rtol=0, atol=1e-6)


@pytest.mark.parametrize("n_mels", N_MELS)
@pytest.mark.parametrize("seed", range(4))
def test_stream_equals_offline_random_chunks(n_mels: int, seed: int) -> None:
    cfg = FeatureConfig(n_mels=n_mels)
    rng = np.random.default_rng(seed)
    x = _noise_and_tone(rng.uniform(0.2, 1.5), seed=seed)
    sizes = [int(s) for s in rng.choice([0, 1, 2, 159, 160, 161, 399, 400, 401, 1234], 50)]
    streamed, _ = _stream(x, sizes, cfg)
    np.testing.assert_allclose(streamed, log_mel(x, cfg), rtol=0, atol=1e-6)


@pytest.mark.parametrize(("n_fft", "hop"), [(401, 160), (64, 16), (64, 2048), (512, 100)])
def test_stream_equals_offline_unusual_geometry(n_fft: int, hop: int) -> None:
    # Odd windows and hops longer than the window take other branches of the bookkeeping.
    cfg = FeatureConfig(n_fft=n_fft, hop_length=hop)
    rng = np.random.default_rng(n_fft + hop)
    x = _noise_and_tone(1.3, seed=hop)
    sizes = [int(s) for s in rng.integers(0, 3 * hop, 40)]
    streamed, _ = _stream(x, sizes, cfg)
    expected = log_mel(x, cfg)
    assert expected.shape[1] == x.size // hop
    np.testing.assert_allclose(streamed, expected, rtol=0, atol=1e-6)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    n=st.integers(0, 4000),
    sizes=st.lists(st.integers(0, 700), min_size=1, max_size=20).filter(any),
    n_mels=st.sampled_from(N_MELS),
    seed=st.integers(0, 2**16),
)
def test_stream_equals_offline_hypothesis(n: int, sizes: list[int], n_mels: int, seed: int) -> None:
    cfg = FeatureConfig(n_mels=n_mels)
    x = np.random.default_rng(seed).uniform(-1, 1, n).astype(np.float32)
    streamed, _ = _stream(x, sizes, cfg)
    np.testing.assert_allclose(streamed, log_mel(x, cfg), rtol=0, atol=1e-6)


def test_frames_come_out_as_soon_as_their_window_is_complete() -> None:
    cfg = FeatureConfig()
    x = _noise_and_tone(0.1)  # 1600 samples: 10 frames
    _, per_call = _stream(x, [1], cfg)
    pushes, flushed = per_call[:-1], per_call[-1]
    # Frame 0 needs x[0..200] (its left reflection reads x[200]); frame t>0 needs
    # x[.. t*160 + 199]. Frame 9 reads past the end (the reflection): only flush has it.
    ready_at = [i + 1 for i, k in enumerate(pushes) if k]
    assert ready_at == [201] + [t * 160 + 200 for t in range(1, 9)]
    assert flushed == 1


def test_push_after_flush_needs_reset() -> None:
    mel = StreamingLogMel(FeatureConfig())
    mel.push(np.zeros(500, np.float32))
    mel.flush()
    assert mel.flush().shape == (80, 0)
    with pytest.raises(RuntimeError, match="reset"):
        mel.push(np.zeros(10, np.float32))
    mel.reset()
    assert mel.frames_emitted == 0
    assert mel.push(np.zeros(10, np.float32)).shape == (80, 0)


def test_streaming_context_resets_on_enter_and_exit() -> None:
    cfg = FeatureConfig()
    x = _noise_and_tone(0.5)
    mel = StreamingLogMel(cfg)
    mel.push(x[:1000])  # a stale, half-fed stream
    with mel.streaming():
        assert mel.frames_emitted == 0
        out = np.concatenate([mel.push(x), mel.flush()], axis=1)
    assert mel.frames_emitted == 0 and mel.state.total == 0
    np.testing.assert_array_equal(out, log_mel(x, cfg))


def test_rejects_non_mono_chunks() -> None:
    with pytest.raises(ValueError, match="1-D"):
        StreamingLogMel(FeatureConfig()).push(np.zeros((10, 2), np.float32))
    with pytest.raises(ValueError, match="1-D"):
        log_mel(np.zeros((2, 10), np.float32), FeatureConfig())


def test_five_minute_stream_keeps_bounded_state() -> None:
    cfg = FeatureConfig()
    chunk = 320  # 20 ms frames, as the agent pumps them
    x = np.random.default_rng(0).uniform(-0.5, 0.5, 5 * 60 * SR).astype(np.float32)
    mel = StreamingLogMel(cfg)
    largest = 0
    outs = []
    for i in range(0, x.size, chunk):
        outs.append(mel.push(x[i : i + chunk]))
        largest = max(largest, mel.state.buffer.size)
    outs.append(mel.flush())
    assert largest <= cfg.n_fft + cfg.hop_length + chunk
    assert mel.state.offset > x.size - 2 * cfg.n_fft
    # Spot-check the tail against offline features of the tail alone, which sees the same
    # samples once it is past its own left padding.
    streamed = np.concatenate(outs, axis=1)
    assert streamed.shape == (80, x.size // cfg.hop_length)
    tail = log_mel(x[-SR:], cfg)
    np.testing.assert_allclose(streamed[:, -tail.shape[1] + 2 :], tail[:, 2:], rtol=0, atol=1e-6)


RUNNING = dict(floor_mode="running_max", log_floor=-10.0)


def _speechlike(seconds: float, seed: int, level: float) -> np.ndarray:
    """Bursts over near-silence: Whisper's (max - 8) clamp bites in the gaps."""
    rng = np.random.default_rng(seed)
    n = int(seconds * SR)
    env = (np.sin(2 * np.pi * 2.0 * np.arange(n) / SR) > 0.3).astype(np.float64)
    x = env * _noise_and_tone(seconds, seed, noise=0.2) + 1e-6 * rng.standard_normal(n)
    return (level * x).astype(np.float32)


@pytest.mark.parametrize("level", [1.0, 0.01])
def test_running_max_is_whisper_clamp_once_the_peak_has_passed(level: float) -> None:
    x = _speechlike(2.0, 0, level)
    ours = log_mel(x, FeatureConfig(**RUNNING))
    ref = _hf(x, 80)
    assert (ref == ref.min()).mean() > 0.05, "Whisper's clamp should bite on this signal"
    # Once the loudest frame so far is the utterance's loudest, the two clamps are one.
    peak_at = int(np.argmax(ref.max(axis=0)))
    np.testing.assert_allclose(ours[:, peak_at:], ref[:, peak_at:], rtol=0, atol=1e-4)
    # Before it, the causal clamp is lower (it has not heard the peak yet), never higher.
    assert (ours[:, :peak_at] <= ref[:, :peak_at] + 1e-4).all()


@pytest.mark.parametrize("seed", range(3))
def test_running_max_stream_equals_offline(seed: int) -> None:
    cfg = FeatureConfig(**RUNNING)
    rng = np.random.default_rng(seed)
    x = _speechlike(rng.uniform(0.5, 2.0), seed, float(rng.choice([1.0, 0.05])))
    sizes = [int(s) for s in rng.choice([0, 1, 160, 161, 399, 1234, 4000], 40)]
    streamed, _ = _stream(x, sizes, cfg)
    np.testing.assert_allclose(streamed, log_mel(x, cfg), rtol=0, atol=1e-6)
