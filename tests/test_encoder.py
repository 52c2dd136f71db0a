"""Streaming encoder and adapter: chunked streaming equals the offline pass, and matches HF."""

from __future__ import annotations

import math
import random

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import Tensor
from transformers.models.whisper.modeling_whisper import WhisperEncoder

from parley.config import EncoderConfig, load_config
from parley.errors import ConfigError
from parley.llm.adapter import Adapter, StreamingAdapter
from parley.llm.encoder import (
    BlockCausalEncoder,
    StreamingEncoder,
    block_causal_mask,
    whisper_config_from,
)

TOL = {"atol": 1e-5, "rtol": 1e-5}
TINY = load_config("tiny").model
# Small enough that a stream wraps the position table several times in a few hundred frames.
WRAP = EncoderConfig(
    d_model=32, layers=2, heads=4, ffn_dim=64, max_source_positions=64, block_frames=8,
    context_blocks=4,
)  # fmt: skip

_models: dict[tuple[str, int], tuple[BlockCausalEncoder, Adapter]] = {}


def _models_for(name: str, n_mels: int) -> tuple[BlockCausalEncoder, Adapter]:
    """Built once per shape: random weights, seeded."""
    key = (name, n_mels)
    if key not in _models:
        enc_cfg = TINY.encoder if name == "tiny" else WRAP
        enc = BlockCausalEncoder.from_config(enc_cfg, n_mels, seed=1)
        adapter = Adapter.from_config(TINY.adapter, enc_cfg.d_model, TINY.lm.hidden, seed=2)
        _models[key] = (enc, adapter)
    return _models[key]


def _chunk_sizes(kind: str, total: int, seed: int = 0) -> list[int]:
    if kind == "random":
        rng = random.Random(seed)
        sizes = []
        while sum(sizes) < total:
            sizes.append(rng.choice([1, 2, 3, rng.randint(1, 60), rng.randint(50, 400)]))
        return sizes
    return [int(kind)] * math.ceil(total / int(kind))


def _stream(
    enc: BlockCausalEncoder, adapter: Adapter, mel: Tensor, sizes: list[int]
) -> tuple[Tensor, Tensor]:
    """Feed ``mel`` in ``sizes`` chunks through both stages; return (frames, embeddings)."""
    s_enc, s_ad = StreamingEncoder(enc), StreamingAdapter(adapter)
    frames, embeds, start = [], [], 0
    for size in sizes:
        out = s_enc.push(mel[:, start : start + size])
        start += size
        # Only whole blocks come out, each once the conv lookahead has arrived.
        assert out.shape[0] % enc.block_frames == 0
        assert s_enc.frames_emitted == sum(f.shape[0] for f in frames) + out.shape[0]
        frames.append(out)
        embeds.append(s_ad.push(out))
    frames.append(s_enc.flush())
    embeds.append(s_ad.push(frames[-1]))
    embeds.append(s_ad.flush())
    return torch.cat(frames), torch.cat(embeds)


@pytest.mark.parametrize("n_mels", [80, 128])
@pytest.mark.parametrize("chunking", ["1", "7", "50", "333", "random"])
def test_streaming_equals_offline(n_mels: int, chunking: str) -> None:
    enc, adapter = _models_for("tiny", n_mels)
    mel = torch.randn(n_mels, 1237)  # odd length, partial last block, partial adapter group
    frames, embeds = _stream(enc, adapter, mel, _chunk_sizes(chunking, mel.shape[1]))
    with torch.no_grad():
        ref = enc(mel)
        ref_embeds = adapter(ref)
    assert ref.shape == (619, TINY.encoder.d_model)
    assert ref_embeds.shape == (310, TINY.lm.hidden)
    torch.testing.assert_close(frames, ref, **TOL)
    torch.testing.assert_close(embeds, ref_embeds, **TOL)


@settings(max_examples=6, deadline=None, derandomize=True)
@given(
    n_mels=st.sampled_from([80, 128]),
    total=st.integers(1, 300),
    sizes=st.lists(st.integers(1, 80), min_size=1, max_size=40),
)
def test_streaming_equals_offline_any_chunking(n_mels: int, total: int, sizes: list[int]) -> None:
    enc, adapter = _models_for("tiny", n_mels)
    mel = torch.randn(n_mels, total, generator=torch.Generator().manual_seed(total))
    # Cycle the drawn sizes until the input is covered; zero-sized pushes are harmless too.
    chunks, i = [], 0
    while sum(chunks) < total:
        chunks.append(sizes[i % len(sizes)])
        i += 1
    frames, embeds = _stream(enc, adapter, mel, [0, *chunks])
    with torch.no_grad():
        ref = enc(mel)
        torch.testing.assert_close(frames, ref, **TOL)
        torch.testing.assert_close(embeds, adapter(ref), **TOL)


def test_single_block_equals_hf_whisper_encoder() -> None:
    cfg = EncoderConfig(
        d_model=64, layers=2, heads=4, ffn_dim=128, max_source_positions=1500,
        block_frames=1500, context_blocks=1,
    )  # fmt: skip
    enc = BlockCausalEncoder.from_config(cfg, 80, seed=3)
    assert enc.whisper.config._attn_implementation == "eager"
    mel = torch.randn(80, 3000)
    with torch.no_grad():
        ref = enc.whisper(mel[None]).last_hidden_state[0]
        out = enc(mel)
    torch.testing.assert_close(out, ref, **TOL)
    frames, _ = _stream(enc, Adapter(64, 2, 16, 16), mel, _chunk_sizes("random", 3000, seed=5))
    torch.testing.assert_close(frames, ref, **TOL)


def _dense_mask_reference(enc: BlockCausalEncoder, mel: Tensor) -> Tensor:
    """HF's own layers (eager attention) under an explicit block-causal mask, cyclic positions."""
    w = enc.whisper
    x = F.gelu(w.conv2(F.gelu(w.conv1(mel[None])))).transpose(1, 2)
    n = x.shape[1]
    x = x + w.embed_positions.weight[torch.arange(n) % w.embed_positions.num_embeddings]
    allowed = block_causal_mask(n, enc.block_frames, enc.context_blocks)
    mask = torch.zeros(n, n).masked_fill(~allowed, torch.finfo(torch.float32).min)[None, None]
    for layer in w.layers:
        x = layer(x, mask)
    return w.layer_norm(x)[0]


def test_stream_past_position_table_equals_offline() -> None:
    enc, adapter = _models_for("wrap", 80)
    mel = torch.randn(80, 2 * 64 * 5 + 3)  # five trips round the 64-row position table
    frames, embeds = _stream(enc, adapter, mel, _chunk_sizes("random", mel.shape[1], seed=7))
    with torch.no_grad():
        ref = enc(mel)
        torch.testing.assert_close(ref, _dense_mask_reference(enc, mel), **TOL)
        torch.testing.assert_close(frames, ref, **TOL)
        torch.testing.assert_close(embeds, adapter(ref), **TOL)


def test_block_causal_mask() -> None:
    m = block_causal_mask(6, block_frames=2, context_blocks=2)
    expected = torch.tensor(
        [
            [1, 1, 0, 0, 0, 0],
            [1, 1, 0, 0, 0, 0],
            [1, 1, 1, 1, 0, 0],
            [1, 1, 1, 1, 0, 0],
            [0, 0, 1, 1, 1, 1],
            [0, 0, 1, 1, 1, 1],
        ],
        dtype=torch.bool,
    )
    assert torch.equal(m, expected)


def test_caches_stay_bounded() -> None:
    enc, _ = _models_for("wrap", 80)
    attn = enc.whisper.layers[0].self_attn
    window = (attn.num_heads, enc.block_frames * enc.context_blocks, attn.head_dim)
    s = StreamingEncoder(enc)
    mel = torch.randn(80, 4000)
    for start in range(0, mel.shape[1], 37):
        s.push(mel[:, start : start + 37])
        st_ = s.state
        assert all(k.shape == window for k in st_.keys)
        assert all(v.shape == window for v in st_.values)
        assert st_.mel_tail.shape[1] <= 2
        assert st_.conv1_tail.shape[1] <= 2
        assert st_.pending.shape[0] < enc.block_frames
    assert s.state.blocks_done == 2000 // enc.block_frames - 1  # the last waits for lookahead
    assert s.state.key_bias is None  # every ring slot has been filled
    assert s.frames_emitted == s.state.blocks_done * enc.block_frames


def test_stream_lifecycle() -> None:
    enc, adapter = _models_for("wrap", 80)
    s, a = StreamingEncoder(enc), StreamingAdapter(adapter)
    assert s.flush().shape == (0, 32)
    assert a.flush().shape == (0, TINY.lm.hidden)
    with pytest.raises(RuntimeError):
        s.push(torch.randn(80, 4))
    with pytest.raises(RuntimeError):
        a.push(torch.randn(3, 32))
    mel = torch.randn(80, 40)
    with s.streaming():
        first = torch.cat([s.push(mel), s.flush()])
        assert s.frames_emitted == 20
    assert s.frames_emitted == 0
    with s.streaming():
        again = torch.cat([s.push(mel), s.flush()])
    torch.testing.assert_close(first, again)
    # Callers may or may not wrap calls in inference_mode; mixing must not break the state.
    with torch.inference_mode():
        s.reset()
        head = s.push(mel[:, :17])
    mixed = torch.cat([head, s.push(mel[:, 17:]), s.flush()])
    torch.testing.assert_close(mixed, first)
    s.reset()
    with pytest.raises(ValueError):
        s.push(torch.randn(128, 4))


def test_adapter_shapes() -> None:
    adapter = Adapter(d_model=8, stack=3, hidden=16, lm_hidden=5)
    frames = torch.randn(7, 8)
    out = adapter(frames)
    assert out.shape == (3, 5)
    padded = torch.cat([frames, torch.zeros(2, 8)])
    torch.testing.assert_close(out[-1], adapter.project(padded[6:].reshape(1, 24))[0])


def test_window_must_fit_position_table() -> None:
    cfg = whisper_config_from(WRAP, 80)
    with pytest.raises(ConfigError):
        BlockCausalEncoder(WhisperEncoder(cfg), block_frames=8, context_blocks=9)


def _tuned_twin(layers: int) -> BlockCausalEncoder:
    """The tiny encoder with tuned copies of its top ``layers``, moved off the originals."""
    enc = BlockCausalEncoder.from_config(TINY.encoder, 80, seed=1)
    enc.add_tuned_copy(layers)
    with torch.no_grad(), torch.random.fork_rng(devices=[]):
        torch.manual_seed(3)
        for p in enc.tuned_module().parameters():
            p.add_(0.05 * torch.randn_like(p))
    return enc


def test_tuned_copies_start_equal_and_leave_the_frozen_frames_alone() -> None:
    plain, _ = _models_for("tiny", 80)
    enc = BlockCausalEncoder.from_config(TINY.encoder, 80, seed=1)
    enc.add_tuned_copy(1)
    mel = torch.randn(80, 300, generator=torch.Generator().manual_seed(5))
    with torch.no_grad():
        frozen, heard = enc.forward_both(mel)
        torch.testing.assert_close(frozen, plain(mel), **TOL)
        torch.testing.assert_close(heard, frozen, **TOL)
        moved = _tuned_twin(1)
        frozen2, heard2 = moved.forward_both(mel)
    torch.testing.assert_close(frozen2, frozen, **TOL)
    assert (heard2 - frozen2).abs().max() > 1e-2  # the LM's path reads the tuned layers


@pytest.mark.parametrize("layers", [1, 2])
@pytest.mark.parametrize("chunking", ["7", "random"])
def test_streaming_tuned_frames_equal_offline(layers: int, chunking: str) -> None:
    enc = _tuned_twin(layers)
    mel = torch.randn(80, 611, generator=torch.Generator().manual_seed(layers))
    stream, start, frozen, heard = StreamingEncoder(enc), 0, [], []
    for size in _chunk_sizes(chunking, mel.shape[1], seed=layers):
        f, h = stream.push_both(mel[:, start : start + size])
        start += size
        frozen.append(f)
        heard.append(h)
    f, h = stream.flush_both()
    with torch.no_grad():
        ref_frozen, ref_heard = enc.forward_both(mel)
        # What training runs on: the cached stream below the branch, then the tuned layers.
        torch.testing.assert_close(enc.tuned_frames(enc.below_branch(mel)), ref_heard, **TOL)
    torch.testing.assert_close(torch.cat([*frozen, f]), ref_frozen, **TOL)
    torch.testing.assert_close(torch.cat([*heard, h]), ref_heard, **TOL)


def test_tuned_layers_are_bounded_by_the_encoder() -> None:
    enc = BlockCausalEncoder.from_config(TINY.encoder, 80, seed=1)
    with pytest.raises(ConfigError, match="tuned layers"):
        enc.add_tuned_copy(TINY.encoder.layers + 1)
    with pytest.raises(ValueError, match="tuned_layers"):
        EncoderConfig(**{**TINY.encoder.model_dump(), "tuned_layers": TINY.encoder.layers + 1})
