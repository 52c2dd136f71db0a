"""Unit tokenizer: k-means codebook, audio to unit ids, and its codec checkpoint part."""

from __future__ import annotations

import shutil

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file

from parley.config import EncoderConfig, FeatureConfig, load_config
from parley.errors import AudioInputError, CheckpointError
from parley.llm.builder import build_checkpoint
from parley.llm.checkpoint import load_checkpoint
from parley.llm.encoder import BlockCausalEncoder
from parley.tokenizers.codec_io import TOKENIZER_FILE, load_codec, save_codec
from parley.tokenizers.unit_tokenizer import UnitTokenizer, assign_units, fit_codebook
from parley.tokenizers.vocoder import TokenVocoder

FEATURES = FeatureConfig(floor_mode="running_max", log_floor=-10.0)
SMALL = EncoderConfig(d_model=32, layers=1, heads=2, ffn_dim=64, block_frames=25, context_blocks=8)


@pytest.fixture(scope="module")
def encoder() -> BlockCausalEncoder:
    return BlockCausalEncoder.from_config(SMALL, n_mels=80, seed=0).eval()


def _speechlike(seconds: float, seed: int = 0) -> np.ndarray:
    """A gliding harmonic tone with pauses and a little noise: something with structure."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * 16000)) / 16000
    f0 = 120 + 40 * np.sin(2 * np.pi * 0.7 * t)
    phase = 2 * np.pi * np.cumsum(f0) / 16000
    x = sum(np.sin(k * phase) / k for k in range(1, 6))
    gate = (np.sin(2 * np.pi * 1.3 * t) > -0.3).astype(float)
    return (0.3 * x * gate + 0.01 * rng.standard_normal(t.size)).astype(np.float32)


def _clusters(seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    means = torch.randn(5, 8, generator=gen) * 10
    points = means.repeat_interleave(40, dim=0) + 0.1 * torch.randn(200, 8, generator=gen)
    return points, means


def test_kmeans_finds_separated_clusters() -> None:
    points, means = _clusters()
    codebook = fit_codebook(points, 5, seed=0, iters=10)
    # Every true mean has a centroid next to it, and each centroid serves one cluster.
    ids, _ = assign_units(means, codebook)
    assert sorted(ids.tolist()) == list(range(5))
    torch.testing.assert_close(codebook[ids], means, atol=0.1, rtol=0)


def test_kmeans_is_seeded_and_deterministic() -> None:
    points = torch.randn(500, 6, generator=torch.Generator().manual_seed(3))
    a = fit_codebook(points, 16, seed=7)
    b = fit_codebook(points, 16, seed=7)
    c = fit_codebook(points, 16, seed=8)
    assert torch.equal(a, b)
    assert not torch.equal(a, c)
    assert a.shape == (16, 6) and torch.isfinite(a).all()


def test_kmeans_rejects_too_few_points() -> None:
    with pytest.raises(ValueError, match="k=10"):
        fit_codebook(torch.randn(5, 3), 10)


@pytest.fixture(scope="module")
def tokenizer(encoder: BlockCausalEncoder) -> UnitTokenizer:
    probe = UnitTokenizer(encoder, FEATURES, torch.zeros(1, 32), frames_per_unit=2)
    units = probe.pool(probe.frames(_speechlike(6.0, seed=1)))
    return UnitTokenizer(encoder, FEATURES, fit_codebook(units, 32, seed=0), frames_per_unit=2)


def test_encode_shape_and_range(tokenizer: UnitTokenizer) -> None:
    assert tokenizer.samples_per_token == 640
    for n in (1, 639, 640, 641, 16000):
        ids = tokenizer.encode(_speechlike(n / 16000)[:n])
        assert ids.dtype == torch.long and ids.shape == (-(-n // 640),)
        assert int(ids.min()) >= 0 and int(ids.max()) < 32
    assert tokenizer.encode(np.zeros(0, np.float32)).shape == (0,)
    # The codebook was fitted on this kind of audio, so many units are in use.
    assert len(set(tokenizer.encode(_speechlike(3.0, seed=2)).tolist())) >= 8


@pytest.mark.parametrize("cut_s", [1.37, 2.0, 2.61])
def test_ids_of_a_prefix_are_a_prefix(tokenizer: UnitTokenizer, cut_s: float) -> None:
    audio = _speechlike(4.0, seed=4)
    whole = tokenizer.encode(audio)
    cut = int(cut_s * 16000)
    part = tokenizer.encode(audio[:cut])
    # Frames in the prefix's last encoder block (and one block before it, which waits for a
    # mel frame of lookahead) may see its end; every earlier token is final.
    frames = 2 * part.numel()
    last_block = (frames - 1) // 25
    safe = 25 * (last_block - 1) // 2
    assert safe >= 12
    assert torch.equal(part[:safe], whole[:safe])


@pytest.mark.parametrize(
    ("audio", "message"),
    [
        (np.zeros((2, 100), np.float32), "1-D"),
        (np.zeros(100, np.int16), "float"),
        (np.array([0.0, np.nan], np.float32), "NaN"),
    ],
)
def test_bad_audio_is_rejected(tokenizer: UnitTokenizer, audio: np.ndarray, message: str) -> None:
    with pytest.raises(AudioInputError, match=message):
        tokenizer.encode(audio)


def test_constructor_checks_codebook_width(encoder: BlockCausalEncoder) -> None:
    with pytest.raises(ValueError, match=r"\(k, 32\)"):
        UnitTokenizer(encoder, FEATURES, torch.zeros(4, 31), frames_per_unit=2)


# --- the codec part inside a checkpoint ------------------------------------------------------

UNIT_MODEL = load_config("tiny").model.model_copy(
    update={
        "features": FEATURES,
        "codec": load_config("tiny").model.codec.model_copy(
            update={"tokenizer": "whisper-units", "codebook_size": 32}
        ),
    }
)


@pytest.fixture(scope="module")
def unit_checkpoint(tmp_path_factory):
    out = tmp_path_factory.mktemp("units") / "ckpt"
    build_checkpoint(out, UNIT_MODEL, seed=0)
    return out


def test_builder_and_loader_give_a_unit_tokenizer(unit_checkpoint) -> None:
    ckpt = load_checkpoint(unit_checkpoint)
    tok = ckpt.speech_tokenizer
    assert isinstance(tok, UnitTokenizer)
    assert tok.encoder is ckpt.encoder
    assert tok.codebook.shape == (32, UNIT_MODEL.encoder.d_model)
    assert set(load_file(str(unit_checkpoint / "vocoder" / TOKENIZER_FILE))) == {
        "codebook",
        "encoder_sha256",
    }


def test_trained_codebook_round_trip_through_load_checkpoint(unit_checkpoint, tmp_path) -> None:
    ckpt_dir = tmp_path / "ckpt"
    shutil.copytree(unit_checkpoint, ckpt_dir)
    ckpt = load_checkpoint(ckpt_dir)
    cfg = UNIT_MODEL.codec
    # A "trained" codec: a codebook fitted on this checkpoint's encoder, a vocoder of seed 5.
    probe = UnitTokenizer(ckpt.encoder, FEATURES, torch.zeros(1, 128), cfg.frames_per_unit)
    units = probe.pool(probe.frames(_speechlike(5.0, seed=6)))
    tok = UnitTokenizer(ckpt.encoder, FEATURES, fit_codebook(units, 32, seed=1), 2)
    vocoder = TokenVocoder(cfg, seed=5).eval()
    shutil.rmtree(ckpt_dir / "vocoder")
    save_codec(ckpt_dir / "vocoder", vocoder, tok, cfg)
    save_codec(tmp_path / "again", vocoder, tok, cfg)
    for name in ("config.json", "vocoder.safetensors", TOKENIZER_FILE):
        assert (ckpt_dir / "vocoder" / name).read_bytes() == (
            tmp_path / "again" / name
        ).read_bytes()

    loaded = load_checkpoint(ckpt_dir)
    assert isinstance(loaded.speech_tokenizer, UnitTokenizer)
    assert torch.equal(loaded.speech_tokenizer.codebook, tok.codebook)
    audio = _speechlike(2.0, seed=7)
    assert torch.equal(loaded.speech_tokenizer.encode(audio), tok.encode(audio))
    ids = tok.encode(audio)
    with torch.inference_mode():
        torch.testing.assert_close(loaded.vocoder(ids), vocoder(ids), rtol=0, atol=0)


def test_codebook_of_another_encoder_is_refused(unit_checkpoint, encoder, tmp_path) -> None:
    cfg = UNIT_MODEL.codec
    other = UnitTokenizer(encoder, FEATURES, torch.zeros(32, 32), 2)
    stft = cfg.model_copy(update={"tokenizer": "stft"})
    with pytest.raises(ValueError, match="does not fit"):
        save_codec(tmp_path / "x", TokenVocoder(stft), other, stft)
    ckpt = load_checkpoint(unit_checkpoint)
    # The same encoder with one weight changed, or other features: the units would differ.
    changed = BlockCausalEncoder.from_config(UNIT_MODEL.encoder, 80, seed=0)
    changed.whisper.load_state_dict(ckpt.encoder.whisper.state_dict())
    with torch.no_grad():
        changed.whisper.layer_norm.bias[0] += 1e-3
    for enc, feats in ((changed, FEATURES), (ckpt.encoder, FeatureConfig())):
        with pytest.raises(CheckpointError, match="fitted on another encoder"):
            load_codec(unit_checkpoint / "vocoder", cfg, encoder=enc, features=feats)
    with pytest.raises(CheckpointError, match="needs the checkpoint's encoder"):
        load_codec(unit_checkpoint / "vocoder", cfg)


def test_bad_codebook_file(unit_checkpoint, tmp_path) -> None:
    codec = tmp_path / "vocoder"
    shutil.copytree(unit_checkpoint / "vocoder", codec)
    ckpt = load_checkpoint(unit_checkpoint)
    tensors = load_file(str(codec / TOKENIZER_FILE))
    save_file({**tensors, "codebook": tensors["codebook"][:10]}, str(codec / TOKENIZER_FILE))
    with pytest.raises(CheckpointError, match=r"'codebook' has shape \(10, 128\)"):
        load_codec(codec, UNIT_MODEL.codec, encoder=ckpt.encoder, features=FEATURES)
    save_file({"codebook": tensors["codebook"]}, str(codec / TOKENIZER_FILE))
    with pytest.raises(CheckpointError, match="missing \\['encoder_sha256'\\]"):
        load_codec(codec, UNIT_MODEL.codec, encoder=ckpt.encoder, features=FEATURES)


def test_encoder_stored_in_half_still_fits(encoder, tmp_path) -> None:
    # Checkpoints store the encoder in float16: a codebook fitted on the float32 encoder
    # must load against the half-rounded copy.
    cfg = UNIT_MODEL.codec.model_copy(update={"codebook_size": 8})
    tok = UnitTokenizer(encoder, FEATURES, torch.randn(8, 32), 2)
    save_codec(tmp_path / "codec", TokenVocoder(cfg), tok, cfg)
    rounded = BlockCausalEncoder.from_config(SMALL, n_mels=80, seed=1)
    rounded.whisper.load_state_dict(
        {k: v.half().float() for k, v in encoder.whisper.state_dict().items()}
    )
    _, loaded, _ = load_codec(tmp_path / "codec", cfg, encoder=rounded, features=FEATURES)
    assert torch.equal(loaded.codebook, tok.codebook)


# ---------------------------------------------------------------------- fixed-position windows


def _window_tokenizer(encoder, window=(6, 3), fpu=1) -> UnitTokenizer:
    return UnitTokenizer(encoder, FEATURES, torch.randn(16, 32), fpu, window)


def test_window_units_depend_on_the_sound_not_on_when_it_came(encoder) -> None:
    audio = _speechlike(1.5, seed=3)
    shift = 8 * 320  # eight encoder frames of silence first (a whole number of windows)
    later = np.concatenate([np.zeros(shift, np.float32), audio])
    windowed = _window_tokenizer(encoder)
    a, b = windowed.frames(audio), windowed.frames(later)[8:]
    torch.testing.assert_close(b[: a.shape[0]], a, atol=1e-4, rtol=1e-4)
    # The whole-utterance pass does not have this: the same sound, other frames.
    whole = UnitTokenizer(encoder, FEATURES, torch.randn(16, 32), 1)
    c, d = whole.frames(audio), whole.frames(later)[8:]
    assert not torch.allclose(d[: c.shape[0]], c, atol=1e-2)


def test_window_frames_match_whispers_own_layers(encoder) -> None:
    # encode_windows against the transformers layers run on one window at a time.
    gen = torch.Generator().manual_seed(0)
    windows = torch.randn(3, 11, 32, generator=gen)
    got = encoder.encode_windows(windows)
    w = encoder.whisper
    for i in range(3):
        x = windows[i : i + 1] + w.embed_positions.weight[:11]
        for layer in w.layers:
            out = layer(x, attention_mask=None)
            x = out[0] if isinstance(out, tuple) else out
        torch.testing.assert_close(got[i], w.layer_norm(x)[0], atol=1e-5, rtol=1e-5)


def test_window_tokenizer_gives_one_id_per_token_and_a_kind_of_its_own(encoder) -> None:
    tok = _window_tokenizer(encoder, fpu=2)
    audio = _speechlike(1.01, seed=4)
    ids = tok.encode(audio)
    assert ids.shape == (-(-audio.size // 640),)
    assert tok.frames_kind == "frames-window-6-2-3"
    assert UnitTokenizer(encoder, FEATURES, torch.randn(16, 32), 2).frames_kind == "frames"
    with pytest.raises(ValueError, match="window must be"):
        UnitTokenizer(encoder, FEATURES, torch.randn(16, 32), 2, (-1, 2))


def test_window_is_part_of_what_a_codebook_was_fitted_on(encoder, tmp_path) -> None:
    cfg = UNIT_MODEL.codec.model_copy(update={"codebook_size": 16, "unit_window": (6, 3)})
    small = cfg.model_copy(update={"codebook_size": 16})
    tok = UnitTokenizer(encoder, FEATURES, torch.randn(16, 32), cfg.frames_per_unit, (6, 3))
    save_codec(tmp_path / "codec", TokenVocoder(small), tok, small)
    _, loaded, got = load_codec(tmp_path / "codec", small, encoder=encoder, features=FEATURES)
    assert loaded.window == (6, 3) and got.unit_window == (6, 3)
    audio = _speechlike(0.7, seed=5)
    assert torch.equal(loaded.encode(audio), tok.encode(audio))
    # The same codebook file claimed for another window: refused, not silently wrong ids.
    other = small.model_copy(update={"unit_window": (10, 4)})
    other_dir = tmp_path / "other"
    shutil.copytree(tmp_path / "codec", other_dir)
    config = other_dir / "config.json"
    config.write_text(
        config.read_text().replace(
            '"unit_window": [\n    6,\n    3\n  ]', '"unit_window": [\n    10,\n    4\n  ]'
        )
    )
    with pytest.raises(CheckpointError, match="fitted on another encoder"):
        load_codec(other_dir, other, encoder=encoder, features=FEATURES)
    with pytest.raises(ValueError, match="does not fit"):
        save_codec(tmp_path / "bad", TokenVocoder(other), tok, other)
