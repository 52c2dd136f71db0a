import hashlib
import json
import shutil

import pytest
import torch
from safetensors.torch import load_file, save_file
from transformers import (
    AutoModelForCausalLM,
    AutoTokenizer,
    Qwen2Config,
    WhisperConfig,
    WhisperModel,
)

from parley.config import load_config
from parley.errors import CheckpointError
from parley.llm.builder import build_checkpoint
from parley.llm.checkpoint import load_checkpoint
from parley.llm.lm_build import random_lm
from parley.tokenizers.text_tokenizer import train_text_tokenizer
from parley.tokenizers.vocab import TokenClass

TINY = load_config("tiny").model
# Whisper's default special ids point into a 51k vocabulary; the tests' decoders are tiny.
SMALL_DECODER_IDS = dict(pad_token_id=0, bos_token_id=0, eos_token_id=0, decoder_start_token_id=0)


def digest(path):
    return {
        str(f.relative_to(path)): hashlib.sha256(f.read_bytes()).hexdigest()
        for f in sorted(path.rglob("*"))
        if f.is_file()
    }


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    out = tmp_path_factory.mktemp("ckpt") / "tiny"
    build_checkpoint(out, TINY, seed=0)
    return out


def assert_same_state(a, b):
    sa, sb = a.state_dict(), b.state_dict()
    assert sa.keys() == sb.keys()
    for k in sa:
        torch.testing.assert_close(sa[k], sb[k], rtol=0, atol=0, msg=k)


def test_tiny_is_small_and_complete(built):
    size = sum(f.stat().st_size for f in built.rglob("*") if f.is_file())
    assert size < 20e6
    manifest = json.loads((built / "parley.json").read_text())
    assert manifest["format_version"] == 1 and manifest["format"] == "parley-checkpoint"
    assert (built / "encoder" / "config.json").is_file()
    assert (built / "lm" / "tokenizer.json").is_file()


def test_same_seed_same_bytes_other_seed_differs(built, tmp_path):
    again = build_checkpoint(tmp_path / "again", TINY, seed=0)
    assert digest(again) == digest(built)
    other = build_checkpoint(tmp_path / "other", TINY, seed=1)
    d = digest(other)
    assert d["lm/model.safetensors"] != digest(built)["lm/model.safetensors"]


def test_load_gives_back_the_built_weights(built):
    ckpt = load_checkpoint(built)
    assert ckpt.random_weights
    # Rebuild the same parts in memory with the builder's seeds and compare.
    lm, _ = random_lm(TINY.lm, TINY.codec.codebook_size, seed=3)
    assert_same_state(ckpt.lm, lm)
    enc_file = load_file(str(built / "encoder" / "model.safetensors"))
    for k, v in ckpt.encoder.whisper.state_dict().items():
        torch.testing.assert_close(v, enc_file["encoder." + k], rtol=0, atol=0)
    adapter_file = load_file(str(built / "adapter.safetensors"))
    for k, v in ckpt.adapter.state_dict().items():
        torch.testing.assert_close(v, adapter_file[k], rtol=0, atol=0)


def test_lm_dir_loads_with_plain_transformers(built):
    tok = AutoTokenizer.from_pretrained(built / "lm")
    lm = AutoModelForCausalLM.from_pretrained(built / "lm")
    manifest = load_checkpoint(built).manifest
    assert tok.convert_tokens_to_ids("<|s0|>") == manifest.vocab.speech_offset
    assert lm.get_input_embeddings().weight.shape[0] == manifest.vocab.vocab_size
    assert manifest.vocab.classify(tok.convert_tokens_to_ids("<|eot|>")) is TokenClass.EOT


@pytest.mark.parametrize(
    "remove",
    [
        "parley.json",
        "encoder/model.safetensors",
        "adapter.safetensors",
        "lm/config.json",
        "vocoder/config.json",
    ],
)
def test_missing_part_is_named(built, tmp_path, remove):
    copy = tmp_path / "c"
    shutil.copytree(built, copy)
    (copy / remove).unlink()
    with pytest.raises(CheckpointError, match=remove.replace(".", r"\.")):
        load_checkpoint(copy)


def test_mismatched_tensor_is_named(built, tmp_path):
    copy = tmp_path / "c"
    shutil.copytree(built, copy)
    state = load_file(str(copy / "adapter.safetensors"))
    state["fc1.weight"] = state["fc1.weight"][:, :-1].contiguous()
    del state["fc2.bias"]
    save_file(state, str(copy / "adapter.safetensors"))
    with pytest.raises(CheckpointError) as err:
        load_checkpoint(copy)
    assert "fc2.bias" in str(err.value) and "fc1.weight" in str(err.value)


def test_wrong_format_version(built, tmp_path):
    copy = tmp_path / "c"
    shutil.copytree(built, copy)
    data = json.loads((copy / "parley.json").read_text())
    data["format_version"] = 99
    (copy / "parley.json").write_text(json.dumps(data))
    with pytest.raises(CheckpointError, match="format_version 99"):
        load_checkpoint(copy)


def test_not_a_directory(tmp_path):
    with pytest.raises(CheckpointError, match="not found"):
        load_checkpoint(tmp_path / "nowhere")


def test_refuses_to_overwrite(built):
    with pytest.raises(CheckpointError, match="not empty"):
        build_checkpoint(built, TINY)


def test_encoder_from_hf_whisper_model(tmp_path):
    # A whisper-tiny-shaped config (4 layers, d384, 6 heads), saved by transformers itself.
    wcfg = WhisperConfig(
        num_mel_bins=80,
        d_model=384,
        encoder_layers=4,
        encoder_attention_heads=6,
        encoder_ffn_dim=1536,
        decoder_layers=1,
        decoder_attention_heads=6,
        decoder_ffn_dim=64,
        vocab_size=100,
        max_target_positions=16,
        **SMALL_DECODER_IDS,
    )
    torch.manual_seed(7)
    hf = WhisperModel(wcfg).eval()
    hf.save_pretrained(tmp_path / "whisper")
    out = build_checkpoint(tmp_path / "ck", TINY, encoder_from=tmp_path / "whisper")
    ckpt = load_checkpoint(out)
    assert ckpt.manifest.model.encoder.d_model == 384
    assert ckpt.manifest.sources["encoder"] == str(tmp_path / "whisper")
    # A real encoder alone does not make it talk: the adapter and vocoder are still random.
    assert ckpt.random_weights
    for k, v in hf.encoder.state_dict().items():
        torch.testing.assert_close(ckpt.encoder.whisper.state_dict()[k], v, rtol=0, atol=0, msg=k)


def test_encoder_from_128_mel_whisper(tmp_path):
    wcfg = WhisperConfig(
        num_mel_bins=128,
        d_model=64,
        encoder_layers=1,
        encoder_attention_heads=2,
        encoder_ffn_dim=64,
        decoder_layers=1,
        decoder_attention_heads=2,
        decoder_ffn_dim=32,
        vocab_size=100,
        max_target_positions=16,
        **SMALL_DECODER_IDS,
    )
    WhisperModel(wcfg).save_pretrained(tmp_path / "w")
    ckpt = load_checkpoint(build_checkpoint(tmp_path / "ck", TINY, encoder_from=tmp_path / "w"))
    assert ckpt.manifest.model.features.n_mels == 128 and ckpt.encoder.n_mels == 128


def test_lm_from_hf_qwen2(tmp_path):
    qcfg = Qwen2Config(
        vocab_size=600,
        hidden_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        intermediate_size=128,
        tie_word_embeddings=False,
    )
    torch.manual_seed(5)
    qwen = AutoModelForCausalLM.from_config(qcfg)
    qwen.save_pretrained(tmp_path / "qwen")
    # A text tokenizer smaller than the embedding table, as real Qwen2 checkpoints have.
    text_tok = train_text_tokenizer(300)
    text_tok.save_pretrained(tmp_path / "qwen")
    ckpt = load_checkpoint(build_checkpoint(tmp_path / "ck", TINY, lm_from=tmp_path / "qwen"))
    layout = ckpt.manifest.vocab
    assert ckpt.lm.config.hidden_size == 64 and ckpt.adapter.lm_hidden == 64
    assert layout.speech_offset == len(text_tok)
    # The speech codes and markers fit in the padding rows, so nothing was resized away.
    assert layout.vocab_size == 600 and layout.pad < 600
    emb = ckpt.lm.get_input_embeddings().weight
    torch.testing.assert_close(emb, qwen.get_input_embeddings().weight, rtol=0, atol=0)
    assert ckpt.manifest.sources["lm"] == str(tmp_path / "qwen")


def test_lm_from_grows_embeddings_when_needed(tmp_path):
    qcfg = Qwen2Config(
        vocab_size=320,
        hidden_size=32,
        num_hidden_layers=1,
        num_attention_heads=2,
        num_key_value_heads=1,
        intermediate_size=64,
    )
    AutoModelForCausalLM.from_config(qcfg).save_pretrained(tmp_path / "q")
    train_text_tokenizer(300).save_pretrained(tmp_path / "q")
    ckpt = load_checkpoint(build_checkpoint(tmp_path / "ck", TINY, lm_from=tmp_path / "q"))
    assert ckpt.manifest.vocab.vocab_size == ckpt.manifest.vocab.pad + 1 > 320


def test_lm_from_missing_dir(tmp_path):
    with pytest.raises(CheckpointError, match="no config.json"):
        build_checkpoint(tmp_path / "ck", TINY, lm_from=tmp_path / "nothing")
