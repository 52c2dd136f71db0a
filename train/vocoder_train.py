"""The vocoder's training loop: crops of the agent's speech, a spectral loss, a cosine
schedule, and a state saved every ``save_every`` steps that a later call resumes.

:mod:`parley.train.codec_train` makes the units and the data and calls :func:`train_vocoder`.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch

from parley.tokenizers.vocoder import TokenVocoder
from parley.train.codec_crops import Crops, CropSampler, TokenizedUtterance
from parley.train.codec_data import reply_focus
from parley.train.codec_loss import SpectralLoss
from parley.train.optim import adamw, warmup_cosine
from parley.train.run_files import append_rows, drop_rows_after, read_rows, save_state

Log = Callable[[str], None]
STATE_FILE = "train_state.pt"
METRICS_FILE = "metrics.jsonl"
PLOT_FILE = "loss.png"


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
    work.mkdir(parents=True, exist_ok=True)
    sampler, held_sampler = _samplers(vocoder, train, heldout, cfg)
    held_crops = held_sampler.sample(cfg.heldout_crops)
    loss_fn = SpectralLoss(vocoder.cfg.sample_rate, cfg.mel_weight)
    opt = adamw(vocoder, cfg.lr, cfg.weight_decay, betas=(0.8, 0.99))
    step, total, spent_before = _resume(work / STATE_FILE, vocoder, opt, sampler, cfg, log)
    drop_rows_after(work / METRICS_FILE, step)
    run = _Run(vocoder, opt, sampler, loss_fn, held_crops, cfg, work, step, total, spent_before)
    last = run.train(minutes, log, progress)
    last["val_loss"] = run.held_out_loss()
    run.save()
    vocoder.eval()
    return last


@dataclass
class _Run:
    """One call's training run: where it stands, and how it scores and saves itself."""

    vocoder: TokenVocoder
    opt: torch.optim.Optimizer
    sampler: CropSampler
    loss_fn: SpectralLoss
    held_crops: Crops
    cfg: CodecTrainConfig
    work: Path
    step: int
    total: int | None
    spent_before: float
    """Seconds the earlier calls trained for: a resumed run's time adds up over calls."""
    started: float = 0.0

    def train(self, minutes: float, log: Log, progress: bool) -> dict:
        """Step until the horizon or ``minutes`` from now; the last step's metrics."""
        from tqdm import tqdm

        cfg, metrics_path = self.cfg, self.work / METRICS_FILE
        budget = minutes * 60.0
        self.started = time.perf_counter()
        self.vocoder.train()
        bar = tqdm(
            total=self.total, initial=self.step, desc="codec", unit="step",
            disable=not progress, mininterval=5,
        )  # fmt: skip
        last: dict = {}
        while self.total is None or self.step < self.total:
            now = time.perf_counter() - self.started
            if now >= budget:
                log(f"codec: time budget ({minutes:g} min) reached at step {self.step}")
                break
            if self.total is None and self.step >= 30:
                # The cosine horizon: what the rest of the budget allows at the speed so far.
                self.total = self.step + int((budget - now) / (now / 30))
                bar.total = self.total
                bar.refresh()
            lr = warmup_cosine(self.step, self.total or 10**9, cfg.lr, cfg.warmup, cfg.min_lr_ratio)
            batch = self.sampler.sample(cfg.batch_size)
            row = _step(self.vocoder, self.opt, self.loss_fn, batch, lr, cfg)
            self.step += 1
            bar.update(1)
            bar.set_postfix(loss=f"{row['loss']:.3f}", refresh=False)
            last = {"step": self.step, **row, "s": self.seconds()}
            if self.step % 10 == 0 or self.step == 1:
                append_rows(metrics_path, last)
            if self.step % cfg.save_every == 0:
                last["val_loss"] = self.held_out_loss()
                log(
                    f"codec: step {self.step}/{self.total} loss {last['loss']:.3f} "
                    f"held-out {last['val_loss']:.3f}"
                )
                self.save()
        bar.close()
        return last

    def seconds(self) -> float:
        return round(self.spent_before + time.perf_counter() - self.started, 1)

    def held_out_loss(self) -> float:
        """The held-out loss now, also appended to the metrics."""
        value = _held_out_loss(self.vocoder, self.loss_fn, self.held_crops)
        append_rows(self.work / METRICS_FILE, {"step": self.step, "val_loss": value})
        return value

    def save(self) -> None:
        run = {"step": self.step, "total": self.total, "seconds": self.seconds()}
        save_state(
            _state(self.vocoder, self.opt, self.sampler, run, self.cfg), self.work / STATE_FILE
        )
        metrics_path = self.work / METRICS_FILE
        if metrics_path.is_file():
            plot_metrics(metrics_path, self.work / PLOT_FILE)


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
