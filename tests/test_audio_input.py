"""Audio input hygiene: resampling, mixdown, integer input, every rejection, WAV round trip."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from parley.errors import AudioInputError
from parley.speech_io.audio import load_audio, prepare_audio, write_wav


def _sine(freq: float, rate: int, seconds: float = 1.0, amp: float = 0.5) -> np.ndarray:
    t = np.arange(int(rate * seconds)) / rate
    return (amp * np.sin(2 * np.pi * freq * t)).astype(np.float32)


def _peak_hz(x: np.ndarray, rate: int) -> float:
    spectrum = np.abs(np.fft.rfft(x * np.hanning(x.size)))
    return float(np.fft.rfftfreq(x.size, 1 / rate)[spectrum.argmax()])


@pytest.mark.parametrize("rate", [8000, 22050, 44100, 48000])
def test_resamples_to_16k_keeping_length_and_pitch(rate: int) -> None:
    x = _sine(1000.0, rate, seconds=1.5)
    y = prepare_audio(x, rate)
    assert y.dtype == np.float32 and y.ndim == 1
    assert abs(y.size - round(x.size * 16000 / rate)) <= 1
    assert _peak_hz(y, 16000) == pytest.approx(1000.0, abs=1.0)
    # HQ resampling keeps the level: the sine's RMS stays 0.5 / sqrt(2).
    mid = y[2000:-2000]
    assert np.sqrt(np.mean(mid**2)) == pytest.approx(0.5 / np.sqrt(2), rel=1e-2)


def test_16k_input_is_passed_through_unchanged() -> None:
    x = _sine(440.0, 16000)
    np.testing.assert_array_equal(prepare_audio(x, 16000), x)


def test_stereo_is_mixed_down_by_mean() -> None:
    left = _sine(440.0, 16000)
    right = _sine(1000.0, 16000, amp=0.25)
    y = prepare_audio(np.stack([left, right], axis=1), 16000)
    np.testing.assert_allclose(y, (left + right) / 2, rtol=0, atol=1e-7)


def test_int16_input_is_scaled_to_unit_range() -> None:
    pcm = np.array([0, 16384, -16384, 32767, -32768, 100], dtype=np.int16)
    y = prepare_audio(pcm, 16000)
    assert y.dtype == np.float32
    np.testing.assert_allclose(y, pcm / 32768.0, rtol=0, atol=1e-7)
    assert y.min() == -1.0 and y.max() < 1.0


def test_int32_stereo_input() -> None:
    pcm = np.array([[2**30, -(2**30)], [2**31 - 1, 0], [-(2**31), 2**29]], dtype=np.int32)
    y = prepare_audio(np.repeat(pcm, 4, axis=0), 16000)
    np.testing.assert_allclose(y[::4], pcm.mean(axis=1) / 2**31, rtol=0, atol=1e-7)


@pytest.mark.parametrize(
    ("samples", "message"),
    [
        (np.array([0.1, np.nan, 0.2, np.nan], np.float32), "2 NaN samples"),
        (np.array([0.1, np.inf, -np.inf], np.float32), "2 infinite samples"),
        (np.array([np.nan, np.inf], np.float64), "1 NaN and 1 infinite"),
        (np.zeros(0, np.float32), "empty"),
        (np.zeros((0, 2), np.float32), "empty"),
        (np.zeros(16000, np.float32), "silent"),
        (np.zeros(16000, np.int16), "silent"),
        (np.zeros((4, 100, 2), np.float32), "expected shape"),
        (np.float32(0.5), "expected shape"),
        (np.zeros((2, 16000), np.float32) + 0.1, "more channels than samples"),
        (np.array(["a", "b"]), "unsupported sample type"),
    ],
)
def test_bad_arrays_are_rejected_naming_the_input(samples: np.ndarray, message: str) -> None:
    with pytest.raises(AudioInputError, match=message) as info:
        prepare_audio(samples, 16000, name="mic take 3")
    assert str(info.value).startswith("mic take 3: ")


def test_channels_that_cancel_out_are_rejected() -> None:
    x = _sine(440.0, 16000)
    with pytest.raises(AudioInputError, match="cancel out"):
        prepare_audio(np.stack([x, -x], axis=1), 16000)


@pytest.mark.parametrize("rate", [0, -16000, 16000.5, "16000", None, True, float("nan")])
def test_bad_sample_rates_are_rejected(rate: object) -> None:
    with pytest.raises(AudioInputError, match="sample rate must be a positive integer"):
        prepare_audio(_sine(440.0, 16000), rate)  # type: ignore[arg-type]


def test_integral_float_rate_is_accepted() -> None:
    assert prepare_audio(_sine(440.0, 8000), 8000.0).size == 16000  # type: ignore[arg-type]


def test_too_short_to_resample() -> None:
    with pytest.raises(AudioInputError, match="too short to resample"):
        prepare_audio(np.array([0.5], np.float32), 48000)


def test_missing_file(tmp_path: Path) -> None:
    path = tmp_path / "nope.wav"
    with pytest.raises(AudioInputError, match="file not found") as info:
        load_audio(path)
    assert str(path) in str(info.value)


def test_directory_is_not_a_file(tmp_path: Path) -> None:
    with pytest.raises(AudioInputError, match="not a file"):
        load_audio(tmp_path)


def test_garbage_file_is_wrapped(tmp_path: Path) -> None:
    path = tmp_path / "garbage.wav"
    path.write_bytes(np.random.default_rng(0).bytes(4096))
    with pytest.raises(AudioInputError, match="cannot read audio") as info:
        load_audio(path)
    assert str(path) in str(info.value)
    # One clear line for the CLI: no chained soundfile exception to print a traceback for.
    assert info.value.__cause__ is None and info.value.__suppress_context__


def test_nan_inside_a_float_wav_is_caught_on_load(tmp_path: Path) -> None:
    path = tmp_path / "float.wav"
    x = _sine(440.0, 16000)
    x[100] = np.nan
    sf.write(path, x, 16000, subtype="FLOAT")
    with pytest.raises(AudioInputError, match="1 NaN samples") as info:
        load_audio(path)
    assert str(path) in str(info.value)


def test_silent_file_is_rejected(tmp_path: Path) -> None:
    path = write_wav(tmp_path / "silence.wav", np.zeros(8000, np.float32), 16000)
    with pytest.raises(AudioInputError, match="silent"):
        load_audio(path)


def test_load_mixes_down_and_resamples(tmp_path: Path) -> None:
    left, right = _sine(440.0, 44100), _sine(440.0, 44100, amp=0.1)
    path = tmp_path / "stereo.flac"
    sf.write(path, np.stack([left, right], axis=1), 44100)
    y = load_audio(path)
    assert y.dtype == np.float32 and y.ndim == 1 and y.size == 16000
    assert _peak_hz(y, 16000) == pytest.approx(440.0, abs=1.0)
    assert np.abs(y).max() == pytest.approx(0.3, abs=0.01)


def test_write_then_load_round_trip(tmp_path: Path) -> None:
    x = _sine(440.0, 16000, amp=0.8)
    path = write_wav(tmp_path / "deep" / "er" / "out.wav", x, 16000)
    assert path.is_file()
    info = sf.info(path)
    assert (info.format, info.subtype) == ("WAV", "PCM_16")
    assert (info.samplerate, info.channels) == (16000, 1)
    np.testing.assert_allclose(load_audio(path), x, rtol=0, atol=1.0 / 32767)


def test_write_clips_instead_of_wrapping(tmp_path: Path) -> None:
    x = np.array([0.0, 1.5, -3.0, 0.25], np.float32)
    path = write_wav(tmp_path / "loud.wav", x, 16000)
    y, _ = sf.read(path, dtype="float32")
    np.testing.assert_allclose(y, [0.0, 1.0, -1.0, 0.25], rtol=0, atol=1.0 / 32767)


def test_write_rejects_nan_and_bad_rate(tmp_path: Path) -> None:
    with pytest.raises(AudioInputError, match="NaN"):
        write_wav(tmp_path / "a.wav", np.array([0.1, np.nan], np.float32), 16000)
    with pytest.raises(AudioInputError, match="positive integer"):
        write_wav(tmp_path / "b.wav", np.zeros(10, np.float32), 0)
    assert not (tmp_path / "a.wav").exists()


def test_cut_off_wav_is_refused_saying_how_much_is_there(tmp_path: Path) -> None:
    whole = write_wav(tmp_path / "whole.wav", _sine(440.0, 16000), 16000)
    cut = tmp_path / "cut.wav"
    cut.write_bytes(whole.read_bytes()[:16044])  # header + half of the 32000 data bytes
    assert load_audio(whole).size == 16000  # the whole file is fine
    with pytest.raises(AudioInputError, match=r"cut short: it holds 0\.50 s of the 1\.00 s"):
        load_audio(cut)


def test_wav_with_extra_chunks_is_whole(tmp_path: Path) -> None:
    path = tmp_path / "meta.wav"
    with sf.SoundFile(path, "w", 16000, 1, subtype="PCM_16", format="WAV") as f:
        f.title = "a LIST chunk after the data"  # odd chunks must be walked, not misread
        f.write(_sine(440.0, 16000))
    assert load_audio(path).size == 16000


def test_more_than_two_channels_are_refused(tmp_path: Path) -> None:
    path = tmp_path / "eight.wav"
    sf.write(path, np.tile(_sine(440.0, 16000)[:, None], (1, 8)), 16000)
    with pytest.raises(AudioInputError, match="8 channels; give mono or stereo"):
        load_audio(path)


@pytest.mark.parametrize("rate", [1, 4000, 7999])
def test_rates_below_telephone_band_are_refused(rate: int) -> None:
    with pytest.raises(AudioInputError, match=f"{rate} Hz is too low for speech"):
        prepare_audio(_sine(440.0, 16000)[:200], rate)
