"""Token vocoder, speech tokenizer and the codec checkpoint part."""

from __future__ import annotations

import json
import random
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from safetensors.torch import load_file, save_file

from parley.config import CodecConfig, load_config
from parley.errors import AudioInputError, CheckpointError
from parley.tokenizers.codec_io import (
    CONFIG_FILE,
    TOKENIZER_FILE,
    VOCODER_FILE,
    build_codec,
    load_codec,
    save_codec,
)
from parley.tokenizers.speech_tokenizer import SpeechTokenizer
from parley.tokenizers.vocoder import StreamingVocoder, TokenVocoder, first_audio_tokens

TINY = load_config("tiny").model.codec
# Variants that move the stream's edge cases: no lookahead and a 1-tap depthwise conv; an
# iSTFT overlap longer than a token (first audio needs extra tokens); one frame per token
# (no overlap at all); a 24 kHz, 12.5 tokens/s layout.
VARIANTS = {
    "tiny": TINY,
    "no-lookahead-long-fft": TINY.model_copy(
        update={"lookahead": 0, "kernel": 1, "n_fft": 2560, "dim": 32, "layers": 2}
    ),
    "one-frame-per-token": TINY.model_copy(
        update={"frames_per_token": 1, "lookahead": 4, "dim": 32, "layers": 1}
    ),
    "24k": CodecConfig(
        codebook_size=64, token_rate_hz=12.5, sample_rate=24000, dim=32, layers=2, n_fft=1920
    ),
}


@pytest.fixture(scope="module")
def tiny_vocoder() -> TokenVocoder:
    return TokenVocoder(TINY, seed=0).eval()


def _ids(n: int, cfg: CodecConfig = TINY, seed: int = 0) -> torch.Tensor:
    return torch.randint(0, cfg.codebook_size, (n,), generator=torch.Generator().manual_seed(seed))


def _offline(vocoder: TokenVocoder, ids: torch.Tensor) -> torch.Tensor:
    with torch.inference_mode():
        return vocoder(ids)


def _stream(vocoder: TokenVocoder, ids: torch.Tensor, sizes: list[int]) -> torch.Tensor:
    pieces, start = [], 0
    with StreamingVocoder(vocoder).streaming() as stream:
        for size in sizes:
            pieces.append(stream.push(ids[start : start + size]))
            start += size
        pieces.append(stream.push(ids[start:]))
        pieces.append(stream.flush())
        assert stream.tokens_pushed == len(ids)
        assert stream.samples_emitted == len(ids) * vocoder.cfg.samples_per_token
    return torch.from_numpy(np.concatenate(pieces))


def _random_sizes(total: int, seed: int) -> list[int]:
    rng, sizes = random.Random(seed), []
    while sum(sizes) < total:
        sizes.append(rng.choice([0, 1, 1, 2, 3, 5, 8, 13]))
    return sizes


@pytest.mark.parametrize("variant", sorted(VARIANTS))
@pytest.mark.parametrize(
    "chunking", ["ones", "fours", "sevens", "all-at-once", "random-0", "random-1", "random-2"]
)
def test_streaming_equals_offline(variant: str, chunking: str) -> None:
    cfg = VARIANTS[variant]
    vocoder = TokenVocoder(cfg, seed=1).eval()
    ids = _ids(37, cfg, seed=len(chunking))
    fixed = {"ones": 1, "fours": 4, "sevens": 7, "all-at-once": 100}
    if chunking in fixed:
        sizes = [fixed[chunking]] * (len(ids) // fixed[chunking] + 1)
    else:
        sizes = _random_sizes(len(ids), seed=int(chunking[-1]))
    expected = _offline(vocoder, ids)
    assert expected.shape == (len(ids) * cfg.samples_per_token,)
    torch.testing.assert_close(_stream(vocoder, ids, sizes), expected, atol=1e-5, rtol=0)


@settings(max_examples=30, deadline=None)
@given(
    ids=st.lists(st.integers(0, TINY.codebook_size - 1), max_size=30),
    sizes=st.lists(st.integers(0, 12), max_size=12),
)
def test_streaming_equals_offline_any_chunking(
    tiny_vocoder: TokenVocoder, ids: list[int], sizes: list[int]
) -> None:
    t = torch.tensor(ids, dtype=torch.long)
    torch.testing.assert_close(
        _stream(tiny_vocoder, t, sizes), _offline(tiny_vocoder, t), atol=1e-5, rtol=0
    )


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_first_audio_after_lookahead(variant: str) -> None:
    cfg = VARIANTS[variant]
    stream = StreamingVocoder(TokenVocoder(cfg, seed=0).eval())
    first = next(n for n in range(1, 40) if stream.push([n % cfg.codebook_size]).size)
    assert first == first_audio_tokens(cfg) <= 10
    if variant == "tiny":
        assert first == cfg.lookahead + 1


def test_state_is_bounded(tiny_vocoder: TokenVocoder) -> None:
    stream = StreamingVocoder(tiny_vocoder)

    def sizes() -> list[tuple[int, ...]]:
        s = stream.state
        return [tuple(t.shape) for t in (s.inputs, s.tail, s.tail_envelope, *s.contexts)]

    stream.push(_ids(10))
    early = sizes()
    for i in range(50):
        stream.push(_ids(4, seed=i))
    assert sizes() == early


def test_reset_starts_a_fresh_stream(tiny_vocoder: TokenVocoder) -> None:
    ids = _ids(25, seed=3)
    fresh = StreamingVocoder(tiny_vocoder)
    expected = np.concatenate([fresh.push(ids[:6]), fresh.push(ids[6:]), fresh.flush()])

    stream = StreamingVocoder(tiny_vocoder)
    stream.push(_ids(11, seed=4))  # barge-in halfway through another reply
    stream.reset()
    assert stream.tokens_pushed == 0 and stream.samples_emitted == 0
    again = np.concatenate([stream.push(ids[:6]), stream.push(ids[6:]), stream.flush()])
    # Same chunking as the fresh stream, so nothing may differ, not even rounding.
    np.testing.assert_array_equal(again, expected)


def test_push_after_flush_needs_reset(tiny_vocoder: TokenVocoder) -> None:
    stream = StreamingVocoder(tiny_vocoder)
    stream.push([1, 2, 3])
    stream.flush()
    assert stream.flush().size == 0
    with pytest.raises(RuntimeError, match="reset"):
        stream.push([4])
    stream.reset()
    assert stream.push([4, 5, 6]).size > 0


@pytest.mark.parametrize(
    ("ids", "message"),
    [
        ([0, 256], r"id 256 at position 1 is out of range \[0, 256\)"),
        ([-1], "id -1 at position 0"),
        (torch.tensor([0.5]), "integers"),
        (np.array([1.0]), "integers"),
        (torch.zeros(2, 2, dtype=torch.long), "1-D"),
    ],
)
def test_bad_ids_are_rejected(tiny_vocoder: TokenVocoder, ids: object, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        StreamingVocoder(tiny_vocoder).push(ids)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=message):
        tiny_vocoder(ids)  # type: ignore[arg-type]


def test_output_is_finite_and_bounded(tiny_vocoder: TokenVocoder) -> None:
    audio = _offline(tiny_vocoder, _ids(250, seed=5))
    assert audio.dtype == torch.float32 and torch.isfinite(audio).all()
    assert audio.abs().max() <= 1.0
    # Bounded by scale, not by the clip: the limiter should hardly ever engage.
    assert (audio.abs() >= 1.0).float().mean() < 0.01
    assert 1e-3 < audio.pow(2).mean().sqrt() < 0.5
    assert _offline(tiny_vocoder, torch.zeros(0, dtype=torch.long)).shape == (0,)


def _states_equal(a: torch.nn.Module, b: torch.nn.Module) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


def test_weights_are_seeded() -> None:
    torch.manual_seed(123)  # the global RNG must not matter
    v1, t1 = build_codec(TINY, seed=7)
    torch.manual_seed(456)
    v2, t2 = build_codec(TINY, seed=7)
    v3, t3 = build_codec(TINY, seed=8)
    assert _states_equal(v1, v2) and _states_equal(t1, t2)
    assert not torch.equal(v1.embed.weight, v3.embed.weight)
    assert not torch.equal(t1.codebook, t3.codebook)


def _speechlike(seconds: float, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    n = int(seconds * 16000)
    pitch = np.cumsum(120 + 80 * np.sin(np.arange(n) / 3000)) / 16000
    voiced = 0.3 * np.sin(2 * np.pi * pitch) * (np.sin(np.arange(n) / 1500) > 0)
    return (voiced + 0.02 * rng.standard_normal(n)).astype(np.float32)


def test_speech_tokenizer_shape_range_determinism() -> None:
    tokenizer = SpeechTokenizer(TINY, seed=0)
    audio = _speechlike(1.5)
    for n in (0, 1, 639, 640, 641, len(audio)):
        ids = tokenizer.encode(audio[:n])
        assert ids.dtype == torch.long and ids.shape == (-(-n // 640),)
    ids = tokenizer.encode(audio)
    assert int(ids.min()) >= 0 and int(ids.max()) < TINY.codebook_size
    assert len(set(ids.tolist())) > 3, "random codebook should not collapse to a few codes"
    assert torch.equal(ids, SpeechTokenizer(TINY, seed=0).encode(torch.from_numpy(audio)))
    assert not torch.equal(ids, SpeechTokenizer(TINY, seed=1).encode(audio))
    # Causal: a prefix's ids are a prefix of the whole's.
    assert torch.equal(tokenizer.encode(audio[: 640 * 10 + 17])[:10], ids[:10])


@pytest.mark.parametrize(
    "audio",
    [np.zeros((2, 640), np.float32), np.array([0.0, np.nan], np.float32), np.zeros(4, np.int16)],
)
def test_speech_tokenizer_rejects_bad_audio(audio: np.ndarray) -> None:
    with pytest.raises(AudioInputError):
        SpeechTokenizer(TINY, seed=0).encode(audio)


def test_save_load_round_trip(tmp_path: Path) -> None:
    vocoder, tokenizer = build_codec(TINY, seed=3)
    save_codec(tmp_path / "a", vocoder, tokenizer, TINY)
    save_codec(tmp_path / "b", *build_codec(TINY, seed=3), TINY)
    for name in (CONFIG_FILE, VOCODER_FILE, TOKENIZER_FILE):
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes()
    meta = json.loads((tmp_path / "a" / CONFIG_FILE).read_text())
    assert meta["format"] == "parley-codec" and meta["version"] == 1

    v2, t2, cfg = load_codec(tmp_path / "a", TINY)
    assert cfg == TINY
    assert _states_equal(vocoder, v2) and _states_equal(tokenizer, t2)
    ids = _ids(12)
    torch.testing.assert_close(_offline(v2, ids), _offline(vocoder, ids), atol=0, rtol=0)


@pytest.fixture
def saved(tmp_path: Path) -> Path:
    save_codec(tmp_path / "codec", *build_codec(TINY, seed=0), TINY)
    return tmp_path / "codec"


@pytest.mark.parametrize("name", [CONFIG_FILE, VOCODER_FILE, TOKENIZER_FILE])
def test_missing_file(saved: Path, name: str) -> None:
    (saved / name).unlink()
    with pytest.raises(CheckpointError, match=f"missing codec checkpoint file: .*{name}"):
        load_codec(saved)


def test_missing_directory(tmp_path: Path) -> None:
    with pytest.raises(CheckpointError, match="directory not found"):
        load_codec(tmp_path / "nowhere")


def test_config_mismatch(saved: Path) -> None:
    with pytest.raises(CheckpointError, match="dim is 128, expected 64"):
        load_codec(saved, TINY.model_copy(update={"dim": 64}))


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        ({"format": "other"}, "format is 'other'"),
        ({"version": 2}, "version 2"),
        ({"layers": 0}, "layers"),
    ],
)
def test_bad_config_file(saved: Path, edit: dict[str, object], message: str) -> None:
    meta = json.loads((saved / CONFIG_FILE).read_text())
    (saved / CONFIG_FILE).write_text(json.dumps({**meta, **edit}))
    with pytest.raises(CheckpointError, match=message):
        load_codec(saved)


def _rewrite(path: Path, edit) -> None:  # type: ignore[no-untyped-def]
    tensors = load_file(str(path))
    edit(tensors)
    save_file(tensors, str(path))


def test_missing_tensor(saved: Path) -> None:
    _rewrite(saved / VOCODER_FILE, lambda t: t.pop("head.weight"))
    with pytest.raises(
        CheckpointError, match=r"missing tensor\(s\): 'head.weight' \(expected shape"
    ):
        load_codec(saved)


def test_unexpected_tensor(saved: Path) -> None:
    _rewrite(saved / TOKENIZER_FILE, lambda t: t.update(extra=torch.zeros(3)))
    with pytest.raises(CheckpointError, match=r"unexpected tensor\(s\): 'extra' \(3,\)"):
        load_codec(saved)


def test_misshaped_tensor(saved: Path) -> None:
    _rewrite(saved / TOKENIZER_FILE, lambda t: t.update(codebook=torch.zeros(10, 64)))
    with pytest.raises(
        CheckpointError, match=r"'codebook' has shape \(10, 64\), expected \(256, 64\)"
    ):
        load_codec(saved)


def test_corrupt_tensor_file(saved: Path) -> None:
    (saved / VOCODER_FILE).write_bytes(b"not safetensors")
    with pytest.raises(CheckpointError, match="not a readable safetensors file"):
        load_codec(saved)
