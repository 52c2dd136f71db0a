"""Noisy copies of training dialogues: seeded draws, and audio at exactly the SNR named."""

import numpy as np
import pytest
import soundfile as sf

from parley.train.lm_data import Dialogue, Turn
from parley.train.noisy_copies import SNR_RANGE, is_noisy, noisy_audio, noisy_copies


def _dialogues(n):
    return [
        Dialogue(
            f"d{i}", "train", [Turn(f"user/d{i}_0.wav", "hello"), Turn(f"user/d{i}_1.wav", "x")], {}
        )
        for i in range(n)
    ]


def test_copies_are_seeded_and_each_names_its_own_noise():
    base = _dialogues(10)
    a, b = noisy_copies(base, 0.5, seed=3), noisy_copies(base, 0.5, seed=3)
    assert [d.id for d in a] == [d.id for d in b] and len(a) == 5
    assert [t.audio for d in a for t in d.turns] == [t.audio for d in b for t in d.turns]
    assert noisy_copies(base, 0.5, seed=4) != a and noisy_copies(base, 0.0, seed=3) == []
    keys = [t.audio for d in a for t in d.turns]
    assert all(is_noisy(k) for k in keys) and len(set(keys)) == len(keys)
    snrs = [float(k.split(":")[1]) for k in keys]
    assert all(SNR_RANGE[0] <= snr <= SNR_RANGE[1] for snr in snrs)
    for d in a:
        source = next(s for s in base if d.id.startswith(s.id + "-"))
        assert [t.answer for t in d.turns] == [t.answer for t in source.turns]
        # One noise per dialogue: every turn names the same kind and SNR.
        assert len({t.audio.split("=")[1].rsplit(":", 1)[0] for t in d.turns}) == 1


@pytest.mark.parametrize("kind", ["white", "brown", "babble"])
def test_noisy_audio_is_the_recording_at_the_snr_named(tmp_path, kind):
    rng = np.random.default_rng(0)
    t = np.arange(16000) / 16000
    # Quiet enough that the mix never clips (a clipped mix is scaled down whole).
    clean = (0.1 * np.sin(2 * np.pi * 200 * t) * (1 + np.sin(2 * np.pi * 3 * t))).astype(np.float32)
    (tmp_path / "user").mkdir()
    (tmp_path / "babble" / "train").mkdir(parents=True)
    sf.write(tmp_path / "user" / "a.wav", clean, 16000, subtype="FLOAT")
    for i in range(3):
        sf.write(
            tmp_path / "babble" / "train" / f"{i}.wav",
            rng.standard_normal(8000).astype(np.float32) * 0.1,
            16000,
        )
    key = f"user/a.wav#noise={kind}:7.5:0"
    noisy = noisy_audio(tmp_path, key)
    assert noisy.shape == clean.shape and np.array_equal(noisy, noisy_audio(tmp_path, key))
    noise = noisy - clean
    assert 10 * np.log10(np.sum(clean**2) / np.sum(noise**2)) == pytest.approx(7.5, abs=0.05)
    other = noisy_audio(tmp_path, f"user/a.wav#noise={kind}:7.5:1")
    assert not np.array_equal(other, noisy)  # another copy, another draw
