"""Training the adapter and the LM on laid-out dialogues (the encoder stays frozen, but
for the tuned copies of its top layers when the run asks for them).

Seeded, resumable (the whole training state is saved every ``save_every`` steps and picked
up again), CPU by default and CUDA when present, bfloat16 autocast where the device has
fast bfloat16 matmuls. Progress goes to a bar and a metrics log (JSON lines); the loss curve
is drawn to a PNG at every save.
"""

from __future__ import annotations

import json
import random
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from transformers import PreTrainedModel

from parley.errors import ConfigError
from parley.llm.adapter import Adapter
from parley.llm.encoder import BlockCausalEncoder
from parley.tokenizers.vocab import TokenClass
from parley.train.lm_data import AUDIO, Example
from parley.train.optim import adamw, warmup_cosine
from parley.train.run_files import append_rows, read_rows, save_state

STATE_FILE = "train_state.pt"
METRICS_FILE = "metrics.jsonl"
PLOT_FILE = "loss.png"


@dataclass
class LMTrainConfig:
    steps: int = 7000
    batch_size: int = 20
    lr: float = 1.5e-3
    min_lr_ratio: float = 0.05
    warmup: int = 150
    weight_decay: float = 0.01
    grad_clip: float = 1.0
    encoder_lr_scale: float = 0.25
    """The tuned encoder layers learn at this share of ``lr``: they start pretrained."""
    text_weight: float = 2.0
    frame_dropout: float = 0.1
    save_every: int = 250
    eval_every: int = 250
    seed: int = 0
    threads: int = 2
    bf16: bool = True


class SpokenLMTrainee(nn.Module):
    """Adapter + LM (and the encoder's tuned layers, if it has them) as one module, so one
    optimizer and one state dict hold them all.

    With tuned layers the batch's audio is the encoder's stream below them
    (``BlockCausalEncoder.below_branch``), otherwise its frames."""

    def __init__(
        self, adapter: Adapter, lm: PreTrainedModel, encoder: BlockCausalEncoder | None = None
    ) -> None:
        super().__init__()
        self.adapter = adapter
        self.lm = lm
        self._frames: Callable[[torch.Tensor], torch.Tensor] = lambda f: f
        if encoder is not None and len(encoder.tuned):
            # Only the tuned parts are registered: the frozen encoder is no part of the state.
            self.encoder_tuned = encoder.tuned_module()
            self._frames = encoder.tuned_frames

    def tuned_parts(self) -> nn.Module | None:
        """The encoder's tuned layers and norm as one module (None without them)."""
        tuned = getattr(self, "encoder_tuned", None)
        return tuned if isinstance(tuned, nn.Module) else None

    def forward(self, batch: dict[str, torch.Tensor], frame_dropout: float = 0.0):
        embed = self.lm.get_input_embeddings()
        ids = batch["ids"]
        x = embed(ids.clamp_min(0))
        rows = [
            self.adapter(F.dropout(self._frames(f), frame_dropout, self.training))
            for f in batch["audio"]
        ]
        if rows:
            mask = (ids == AUDIO)[..., None]
            x = x.masked_scatter(mask, torch.cat(rows).to(x.dtype))
        out = self.lm(inputs_embeds=x, attention_mask=batch["mask"], use_cache=False)
        return out.logits


def collate(examples: list[Example], device: torch.device) -> dict:
    """Right-padded ids, targets, kinds and attention mask; the audio spans in order."""
    length = max(len(e.ids) for e in examples)

    def pad(rows, fill):
        return torch.tensor([r + [fill] * (length - len(r)) for r in rows], device=device)

    return {
        "ids": pad([e.ids for e in examples], 0),
        "targets": pad([e.targets for e in examples], -100),
        "kinds": pad([e.kinds for e in examples], -1),
        "mask": pad([[1] * len(e.ids) for e in examples], 0),
        "audio": [f.to(device, torch.float32) for e in examples for f in e.audio],
    }


def loss_and_stats(logits, batch, text_weight: float) -> tuple[torch.Tensor, dict[str, float]]:
    """Weighted cross-entropy on reply positions; accuracy per token class."""
    targets, kinds = batch["targets"], batch["kinds"]
    flat = logits.float().reshape(-1, logits.shape[-1])
    ce = F.cross_entropy(flat, targets.reshape(-1), ignore_index=-100, reduction="none")
    valid = targets.reshape(-1) != -100
    weight = torch.where(kinds.reshape(-1) == int(TokenClass.TEXT), text_weight, 1.0) * valid
    loss = (ce * weight).sum() / weight.sum().clamp_min(1.0)
    with torch.no_grad():
        hit = (flat.argmax(-1) == targets.reshape(-1)) & valid
        stats = {"loss": float(loss)}
        for cls in (TokenClass.TEXT, TokenClass.SPEECH, TokenClass.TEXT_END, TokenClass.EOT):
            sel = kinds.reshape(-1) == int(cls)
            if sel.any():
                stats[f"acc_{cls.name.lower()}"] = float(hit[sel].float().mean())
    return loss, stats


@torch.no_grad()
def answer_accuracy(model: SpokenLMTrainee, examples: list[Example], device, batch_size=32):
    """Teacher-forced: the share of replies whose every text token is the argmax, and the
    speech-token accuracy, on held-out dialogues."""
    model.eval()
    exact = total = 0
    speech_hit = speech_n = 0
    for i in range(0, len(examples), batch_size):
        batch = collate(examples[i : i + batch_size], device)
        pred = model(batch).argmax(-1)
        ok = (pred == batch["targets"]) | (batch["targets"] == -100)
        text = batch["kinds"] == int(TokenClass.TEXT)
        exact += int((ok | ~text).all(dim=1).sum())
        total += pred.shape[0]
        speech = batch["kinds"] == int(TokenClass.SPEECH)
        speech_hit += int((ok & speech).sum())
        speech_n += int(speech.sum())
    model.train()
    return {
        "val_text_exact": exact / max(total, 1),
        "val_acc_speech": speech_hit / max(speech_n, 1),
    }


def _lr_at(step: int, cfg: LMTrainConfig) -> float:
    # A short run (a trial, a test) warms up over its first tenth at most.
    warmup = min(cfg.warmup, max(1, cfg.steps // 10))
    return warmup_cosine(step, cfg.steps, cfg.lr, warmup, cfg.min_lr_ratio)


def _batches(examples: list[Example], cfg: LMTrainConfig, rng: random.Random):
    """Endless batches of similar length (less padding), in a seeded order."""
    while True:
        order = sorted(range(len(examples)), key=lambda i: (len(examples[i].ids), rng.random()))
        chunks = [order[i : i + cfg.batch_size] for i in range(0, len(order), cfg.batch_size)]
        rng.shuffle(chunks)
        for chunk in chunks:
            yield [examples[i] for i in chunk]


def plot_metrics(metrics_path: Path, out: Path) -> None:
    """The loss and validation curves so far, as a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = read_rows(metrics_path)
    train = [r for r in rows if "loss" in r]
    val = [r for r in rows if "val_text_exact" in r]
    fig, (a, b) = plt.subplots(1, 2, figsize=(10, 3.5))
    a.plot([r["step"] for r in train], [r["loss"] for r in train], lw=0.8)
    a.set(xlabel="step", ylabel="loss", yscale="log", title="training loss")
    for key in ("val_text_exact", "val_acc_speech"):
        b.plot([r["step"] for r in val], [r[key] for r in val], marker="o", label=key)
    b.set(xlabel="step", ylim=(0, 1), title="held-out, teacher-forced")
    b.legend()
    fig.tight_layout()
    fig.savefig(out, dpi=90)
    plt.close(fig)


def train_lm(
    model: SpokenLMTrainee,
    train: list[Example],
    held_out: list[Example],
    cfg: LMTrainConfig,
    work: Path,
    log: Callable[[str], None] = print,
    progress: bool = True,
    stop_at: int | None = None,
    more_threads: Callable[[], int | None] | None = None,
) -> dict:
    """Train ``model`` in place for ``cfg.steps`` steps, resuming from ``work`` if a saved
    state is there; returns the last metrics. ``stop_at`` ends this run early (saved, so a
    later call goes on from there). ``more_threads``, asked every 25 steps, gives the CPU
    threads to go on with once a process sharing the CPU is done (None: not yet)."""
    from tqdm import tqdm

    work.mkdir(parents=True, exist_ok=True)
    device = _pick_device(cfg)
    torch.manual_seed(cfg.seed)
    model.to(device).train()
    tuned = model.tuned_parts()
    scaled = None if tuned is None else (tuned, cfg.encoder_lr_scale)
    opt = adamw(model, cfg.lr, cfg.weight_decay, betas=(0.9, 0.98), scaled=scaled)
    rng = random.Random(cfg.seed)
    state_path = work / STATE_FILE
    step, spent_before = _resume(state_path, model, opt, rng, device, log)
    metrics_path = work / METRICS_FILE
    batches = _batches(train, cfg, rng)
    use_bf16 = cfg.bf16 and device.type == "cpu"
    last: dict = {}
    bar = tqdm(total=cfg.steps, initial=step, disable=not progress, desc="lm", unit="step")
    t0, window = time.perf_counter(), []
    end = cfg.steps if stop_at is None else min(stop_at, cfg.steps)
    while step < end:
        stats = _step(model, opt, collate(next(batches), device), _lr_at(step, cfg), cfg, use_bf16)
        step += 1
        window.append(stats)
        bar.update(1)
        bar.set_postfix(
            loss=f"{stats['loss']:.3f}", text=f"{stats.get('acc_text', 0):.2f}", refresh=False
        )
        if more_threads is not None and step % 25 == 0 and (n := more_threads()) is not None:
            _take_threads(n, device, step, log)
            more_threads = None
        if step % 25 == 0 or step == end or step % cfg.save_every == 0:
            # Training time over every call on this state: a resumed run's total.
            last = _mean_row(window, step, cfg, spent_before + time.perf_counter() - t0)
            window = []
            append_rows(metrics_path, last)
        if held_out and (step % cfg.eval_every == 0 or step == cfg.steps):
            last.update(_evaluate(model, held_out, device, step, metrics_path, log))
        if step % cfg.save_every == 0 or step == end:
            elapsed = spent_before + time.perf_counter() - t0
            save_state(_state(model, opt, rng, step, elapsed, cfg), state_path)
            plot_metrics(metrics_path, work / PLOT_FILE)
    bar.close()
    model.eval()
    return last


def _pick_device(cfg: LMTrainConfig) -> torch.device:
    """CUDA when there is one, else the CPU with ``cfg.threads`` threads (0: torch's own)."""
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.type == "cpu" and cfg.threads:
        torch.set_num_threads(cfg.threads)
    return device


def _mean_row(
    window: list[dict[str, float]], step: int, cfg: LMTrainConfig, elapsed_s: float
) -> dict[str, float]:
    """The metrics row at ``step``: each stat averaged over the steps since the last row
    (one batch's figures are too noisy to read a curve from)."""
    mean = {k: sum(w.get(k, 0.0) for w in window) / len(window) for k in window[0]}
    return {"step": step, "lr": _lr_at(step, cfg), "elapsed_s": elapsed_s, **mean}


def _evaluate(
    model: SpokenLMTrainee,
    held_out: list[Example],
    device: torch.device,
    step: int,
    metrics_path: Path,
    log: Callable[[str], None],
) -> dict[str, float]:
    """The held-out figures at ``step``, appended to the metrics and logged as well."""
    val = {"step": step, **answer_accuracy(model, held_out, device)}
    append_rows(metrics_path, val)
    log(f"step {step}: {json.dumps({k: round(v, 4) for k, v in val.items()})}")
    return val


def _step(
    model: SpokenLMTrainee,
    opt: torch.optim.Optimizer,
    batch: dict[str, Any],
    lr: float,
    cfg: LMTrainConfig,
    use_bf16: bool,
) -> dict[str, float]:
    """One optimiser step on ``batch`` at ``lr``; the batch's loss and accuracies."""
    for group in opt.param_groups:
        group["lr"] = lr * group.get("lr_scale", 1.0)
    with torch.autocast(batch["ids"].device.type, dtype=torch.bfloat16, enabled=use_bf16):
        logits = model(batch, cfg.frame_dropout)
    loss, stats = loss_and_stats(logits, batch, cfg.text_weight)
    opt.zero_grad(set_to_none=True)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
    opt.step()
    return stats


def _state(
    model: SpokenLMTrainee,
    opt: torch.optim.Optimizer,
    rng: random.Random,
    step: int,
    elapsed_s: float,
    cfg: LMTrainConfig,
) -> dict[str, Any]:
    """What a resumed run needs: weights, optimiser, both random streams, the step."""
    return {
        "model": model.state_dict(),
        "optimizer": opt.state_dict(),
        "rng": rng.getstate(),
        "torch_rng": torch.get_rng_state(),
        "step": step,
        "elapsed_s": elapsed_s,
        "config": asdict(cfg),
    }


def _resume(
    state_path: Path,
    model: SpokenLMTrainee,
    opt: torch.optim.Optimizer,
    rng: random.Random,
    device: torch.device,
    log: Callable[[str], None],
) -> tuple[int, float]:
    """Load a saved run into ``model``, ``opt`` and the random streams; its step and the
    seconds it has trained (0, 0 when there is none)."""
    if not state_path.is_file():
        return 0, 0.0
    state = torch.load(state_path, map_location=device, weights_only=False)
    try:
        model.load_state_dict(state["model"])
    except RuntimeError as exc:
        # e.g. tuned layers saved whole, resumed as low-rank differences (--tuned-rank)
        raise ConfigError(
            f"{state_path} was saved by a run with another model shape or tuned-layer "
            f"options; go on with that run's options or train in a fresh --work "
            f"({str(exc).splitlines()[0]})"
        ) from None
    opt.load_state_dict(state["optimizer"])
    rng.setstate(state["rng"])
    torch.set_rng_state(state["torch_rng"])
    log(f"resumed at step {state['step']} from {state_path}")
    return state["step"], state.get("elapsed_s", 0.0)


def _take_threads(n: int, device: torch.device, step: int, log: Callable[[str], None]) -> None:
    if device.type == "cpu" and n != torch.get_num_threads():
        torch.set_num_threads(n)
        log(f"step {step}: the CPU is free, going on with {n} threads")
