"""Codec training: batched decoding, the training loop (loss falls, resume), the whole stage."""

from __future__ import annotations

import json
import random
import zlib

import numpy as np
import pytest
import torch

from parley.config import CodecConfig, EncoderConfig, FeatureConfig
from parley.llm.encoder import BlockCausalEncoder
from parley.tokenizers.codec_io import load_codec
from parley.tokenizers.unit_tokenizer import UnitTokenizer
from parley.tokenizers.vocoder import StreamingVocoder, TokenVocoder
from parley.train.codec_crops import CropSampler, TokenizedUtterance
from parley.train.codec_loss import synthesize_batch
from parley.train.codec_train import DEFAULT_CODEC, train_codec
from parley.train.vocoder_train import METRICS_FILE, STATE_FILE, CodecTrainConfig, train_vocoder

TINY_CODEC = CodecConfig(
    tokenizer="whisper-units", codebook_size=16, dim=32, layers=2, kernel=3, lookahead=1
)
FAST = CodecTrainConfig(
    crop_s=0.32, past_s=0.08, batch_size=4, lr=1e-2, warmup=5, steps=40, save_every=10,
    heldout_crops=4, kmeans_units=2000, kmeans_iters=5,
)  # fmt: skip


@pytest.fixture(autouse=True)
def _one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _toy_data(cfg: CodecConfig, n: int = 6, seed: int = 0) -> list[TokenizedUtterance]:
    """Utterances whose audio is a tone per token id: a mapping a vocoder can learn."""
    rng = np.random.default_rng(seed)
    spt = cfg.samples_per_token
    out = []
    for _ in range(n):
        ids = torch.from_numpy(rng.integers(0, cfg.codebook_size, 40))
        t = np.arange(spt) / cfg.sample_rate
        audio = np.concatenate([0.3 * np.sin(2 * np.pi * (150 + 60 * int(i)) * t) for i in ids])
        out.append(TokenizedUtterance("x", torch.from_numpy(audio.astype(np.float32)), ids))
    return out


def test_batched_decoding_equals_the_vocoder() -> None:
    vocoder = TokenVocoder(TINY_CODEC, seed=1).eval()
    spt = TINY_CODEC.samples_per_token
    ids = torch.randint(0, 16, (3, 20), generator=torch.Generator().manual_seed(0))
    start, end = torch.tensor([0, 4, 7]), torch.tensor([20, 20, 12])
    with torch.no_grad():
        out = synthesize_batch(vocoder, ids, start, end)
        for i in range(3):
            a, b = int(start[i]), int(end[i])
            expected = vocoder(ids[i, a:b])
            got = out[i, a * spt : b * spt].clamp(-1, 1)
            torch.testing.assert_close(got, expected, atol=1e-5, rtol=0)


def test_loss_falls_and_training_resumes(tmp_path) -> None:
    data = _toy_data(TINY_CODEC)
    logs: list[str] = []
    straight = TokenVocoder(TINY_CODEC, seed=0)
    train_vocoder(straight, data, data[:2], FAST, tmp_path / "a", 5.0, logs.append, False)
    rows = [json.loads(line) for line in (tmp_path / "a" / METRICS_FILE).read_text().splitlines()]
    losses = [r["loss"] for r in rows if "loss" in r]
    assert losses[-1] < 0.75 * losses[0]
    held = [r["val_loss"] for r in rows if "val_loss" in r]
    assert held[-1] < held[0]
    assert (tmp_path / "a" / "loss.png").is_file()

    assert torch.load(tmp_path / "a" / STATE_FILE, weights_only=False)["step"] == 40

    # Stopped at step 20 and resumed: the same weights as the straight run.
    cut = tmp_path / "c"
    _run_until(TokenVocoder(TINY_CODEC, seed=0), data, FAST, cut, stop_at=20)
    resumed = TokenVocoder(TINY_CODEC, seed=0)
    train_vocoder(resumed, data, data[:2], FAST, cut, 5.0, logs.append, False)
    assert any("resumed at step 20" in m for m in logs)
    for (name, a), b in zip(
        straight.state_dict().items(), resumed.state_dict().values(), strict=True
    ):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-4, msg=name)


def test_resumed_run_takes_a_new_horizon(tmp_path) -> None:
    data = _toy_data(TINY_CODEC)
    work, logs = tmp_path / "h", []
    _run_until(TokenVocoder(TINY_CODEC, seed=0), data, FAST, work, stop_at=20)
    shorter = CodecTrainConfig(**{**FAST.__dict__, "steps": 30})
    train_vocoder(TokenVocoder(TINY_CODEC, seed=0), data, data[:2], shorter, work, 5.0,
                  logs.append, False)  # fmt: skip
    assert any("horizon moved from 40 to 30" in m for m in logs), logs
    state = torch.load(work / STATE_FILE, weights_only=False)
    assert state["step"] == state["total"] == 30


@pytest.mark.parametrize("share", [0.0, 0.5, 1.0])
def test_start_share_of_crops_begin_where_utterances_begin(share: float) -> None:
    data = _toy_data(TINY_CODEC, n=4)
    sampler = CropSampler(data, crop=8, past=2, future=1, seed=0, start_share=share)
    crops = sampler.sample(400)
    # A crop at an utterance's start has nothing before it: its first real slot is `past`.
    at_start = (crops.start == 2).float().mean().item()
    uniform = 1 / (40 - 8 + 1)  # a uniform start lands on token 0 this often
    assert at_start == pytest.approx(share + (1 - share) * uniform, abs=0.06)


def _run_until(vocoder, data, cfg, work, stop_at: int) -> None:
    """Train with the cosine horizon of ``cfg`` but stop (and save) at ``stop_at``."""
    import parley.train.vocoder_train as ct

    original = ct.warmup_cosine

    def lr_then_stop(step, *schedule):
        if step >= stop_at:
            raise KeyboardInterrupt
        return original(step, *schedule)

    ct.warmup_cosine = lr_then_stop
    try:
        with pytest.raises(KeyboardInterrupt):
            train_vocoder(vocoder, data, data[:2], cfg, work, 5.0, lambda _m: None, False)
    finally:
        ct.warmup_cosine = original
    assert torch.load(work / STATE_FILE, weights_only=False)["step"] == stop_at


@pytest.mark.parametrize("seed", [0, 1])
def test_trained_config_streams_like_one_shot(seed: int) -> None:
    vocoder = TokenVocoder(DEFAULT_CODEC, seed=seed).eval()
    ids = torch.randint(
        0, DEFAULT_CODEC.codebook_size, (60,), generator=torch.Generator().manual_seed(seed)
    )
    with torch.inference_mode():
        expected = vocoder(ids)
    rng, pieces, lo = random.Random(seed), [], 0
    with StreamingVocoder(vocoder).streaming() as stream:
        while lo < len(ids):
            size = rng.choice([0, 1, 2, 3, 5, 8])
            pieces.append(stream.push(ids[lo : lo + size]))
            lo += size
        pieces.append(stream.flush())
    torch.testing.assert_close(
        torch.from_numpy(np.concatenate(pieces)), expected, atol=1e-5, rtol=0
    )


def test_train_codec_end_to_end(tmp_path) -> None:
    encoder = BlockCausalEncoder.from_config(
        EncoderConfig(d_model=32, layers=1, heads=2, ffn_dim=64), n_mels=80, seed=0
    )
    features = FeatureConfig(floor_mode="running_max", log_floor=-10.0)
    texts = [f"sentence number {i}" for i in range(12)]

    def speak(text: str) -> np.ndarray:
        rng = np.random.default_rng(zlib.crc32(text.encode()))
        t = np.arange(16000) / 16000
        f = rng.uniform(100, 400)
        return (0.3 * np.sin(2 * np.pi * f * t) + 0.01 * rng.standard_normal(t.size)).astype(
            np.float32
        )

    cfg = TINY_CODEC
    train_cfg = CodecTrainConfig(**{**FAST.__dict__, "steps": 6})
    vocoder, tok = train_codec(
        tmp_path, texts, cfg, minutes=1.0, seed=0, log=lambda _m: None, encoder=encoder,
        features=features, train_cfg=train_cfg, speak=speak, progress=False,
    )  # fmt: skip
    assert isinstance(tok, UnitTokenizer) and tok.codebook_size == 16
    loaded_vocoder, loaded_tok, loaded_cfg = load_codec(
        tmp_path / "run" / "vocoder", cfg, encoder=encoder, features=features
    )
    assert loaded_cfg == cfg
    assert torch.equal(loaded_tok.codebook, tok.codebook)
    audio = speak("something else")
    assert torch.equal(loaded_tok.encode(audio), tok.encode(audio))
    # The caches are reused: a second call synthesizes nothing.
    calls = []
    train_codec(
        tmp_path, texts, cfg, minutes=1.0, seed=0, log=calls.append, encoder=encoder,
        features=features, train_cfg=train_cfg, speak=lambda t: pytest.fail(t), progress=False,
    )  # fmt: skip
    assert any("codebook from" in m for m in calls)


def test_short_utterances_are_one_crop_from_their_start_padded_with_silence() -> None:
    """An utterance shorter than a crop ("you are welcome") is trained on, not dropped, and
    its padded target is exactly what the vocoder decodes past a flushed stream's end."""
    vocoder = TokenVocoder(TINY_CODEC, seed=1).eval()
    spt = TINY_CODEC.samples_per_token
    short = _toy_data(TINY_CODEC, n=1, seed=3)[0]
    short = TokenizedUtterance("short", short.audio[: 5 * spt], short.ids[:5])
    sampler = CropSampler([short], crop=8, past=2, future=1, seed=0)
    crops = sampler.sample(3)
    assert crops.start.tolist() == [2] * 3 and crops.end.tolist() == [7] * 3
    torch.testing.assert_close(crops.target[0, : 5 * spt], short.audio)
    assert crops.target[0, 5 * spt :].abs().max() == 0
    with torch.no_grad():
        out = crops.decode(vocoder)[0]
        alone = synthesize_batch(vocoder, short.ids[None], torch.tensor([0]), torch.tensor([5]))[0]
    torch.testing.assert_close(out[: 5 * spt], alone, atol=1e-5, rtol=1e-4)
    assert out[5 * spt :].abs().max() == 0


@pytest.mark.parametrize("share", [0.0, 0.3, 1.0])
def test_focus_share_of_crops_follow_the_focus_weights(share: float) -> None:
    data = _toy_data(TINY_CODEC, n=4)
    focus = [0.0, 0.0, 0.0, 1.0]
    sampler = CropSampler(data, crop=8, past=2, future=1, seed=0, focus=focus, focus_share=share)
    picked = []
    for _ in range(100):
        crops = sampler.sample(8)
        # The toy utterances differ in their ids: find each crop's utterance by its middle.
        for row in crops.ids:
            mid = row[2:10]
            picked.append(next(i for i, u in enumerate(data) if _contains(u.ids, mid)))
    on_focus = sum(p == 3 for p in picked) / len(picked)
    assert on_focus == pytest.approx(share + (1 - share) / 4, abs=0.06)


def _contains(ids: torch.Tensor, window: torch.Tensor) -> bool:
    n = window.numel()
    return any(torch.equal(ids[s : s + n], window) for s in range(ids.numel() - n + 1))


def test_focus_weights_must_fit_the_data() -> None:
    data = _toy_data(TINY_CODEC, n=2)
    with pytest.raises(ValueError, match="2 utterances"):
        CropSampler(data, 8, 2, 1, seed=0, focus=[1.0], focus_share=0.5)
    with pytest.raises(ValueError, match="at least one"):
        CropSampler(data, 8, 2, 1, seed=0, focus=[0.0, 0.0], focus_share=0.5)


def test_reply_focus_gives_each_family_of_replies_an_equal_share() -> None:
    from collections import defaultdict

    from parley.train.codec_data import reply_focus
    from parley.train.domain import ANSWER_FAMILIES, all_answers, answer_family

    texts = [*all_answers(), "the answer is twelve", "a general sentence"]
    weights = reply_focus(texts)
    assert weights[-2:] == [0.0, 0.0]  # carrier sentences and prose: by length only
    per_family: dict[str, float] = defaultdict(float)
    for text, w in zip(texts, weights, strict=True):
        if w:
            per_family[answer_family(text)] += w
    assert set(per_family) == set(ANSWER_FAMILIES)
    for total in per_family.values():
        assert total == pytest.approx(1 / len(ANSWER_FAMILIES))
    assert answer_family("yes i can hear you") == "fixed"
    assert answer_family("the day after friday is saturday") == "day"
    assert answer_family("seven times eight is fifty six") == "arithmetic"
