"""Train a checkpoint's end-of-turn detector (``train-turns``): examples from the corpus's
questions in their own voices, the checkpoint's frozen encoder, a few minutes of CPU.

Validation is on the corpus's held-out voices, which training never hears; the figures
(accuracy on finished and on cut questions, by silence, and on requests beyond the domain
and commands apart) go to the log and into the detector's folder as ``metrics.json``.
"""

from __future__ import annotations

import json
import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from parley.errors import ConfigError
from parley.llm.turn_detector import TURN_DIR, TurnDetector, TurnDetectorConfig
from parley.train.domain import REFUSAL, ood_sentences
from parley.train.spoken_refusals import more_ood_sentences
from parley.train.turn_data import (
    BEYOND_DOMAIN,
    COMMANDS,
    HELDOUT_BEYOND,
    SILENCES_S,
    TurnExample,
    agent_echo,
    make_examples,
)
from parley.train.voices import Voice

Log = Callable[[str], None]
EXAMPLES_FILE = "turn_examples.pt"


@dataclass
class TurnTrainOptions:
    checkpoint: Path
    corpus: Path
    work: Path
    questions: int = 3000
    heldout_questions: int = 300
    beyond_share: float = 0.0  # more requests beyond the domain, as a share of the questions
    epochs: int = 5
    frames: int = 50  # encoder frames the detector reads (50 Hz)
    seed: int = 0
    threads: int = 0
    progress: bool = True
    phrases: int = 40  # cut-in: phrases of each kind per voice
    voices: tuple[str, ...] = ()  # cut-in: training voices (empty: every installed one)


def _questions(
    corpus: Path, split: str, n: int, seed: int, share: float = 0.0
) -> list[tuple[str, Voice]]:
    from parley.train.corpus import read_manifest
    from parley.train.voices import voice

    records = [r for r in read_manifest(corpus) if r["split"] == split]
    if split != "train":  # the held-out voices, where the corpus has them
        records = [r for r in records if r["condition"] == "voice"] or records
    pairs = [(t["question"], voice(r["voice"])) for r in records for t in r["turns"]]
    if not pairs:
        raise ConfigError(f"{corpus}: no {split} questions to make turn examples from")
    rng = random.Random(f"turn-questions:{seed}:{split}")
    rng.shuffle(pairs)
    pairs = pairs[:n]
    # Beyond the domain, in the split's voices: each sentence in three of them, and each
    # command in three.
    voices = sorted({v for _, v in pairs}, key=lambda v: v.name)
    beyond = BEYOND_DOMAIN if split == "train" else HELDOUT_BEYOND
    extra = [(text, rng.choice(voices)) for text in beyond for _ in range(3)]
    extra += [(text, rng.choice(voices)) for text in COMMANDS for _ in range(3)]
    # And ``share`` as many again of the requests the spoken refusals teach (training) or
    # the refusal probe asks (held out), dealt in turn: with 30 requests beyond the domain
    # the detector calls many requests of other kinds unfinished where they end (tried at
    # 0.25 in session 18, docs/turn-taking.md).
    more = more_ood_sentences() if split == "train" else tuple(ood_sentences(heldout=True))
    extra += [(more[k % len(more)], rng.choice(voices)) for k in range(int(len(pairs) * share))]
    return pairs + extra


def beyond_domain() -> frozenset[str]:
    """Every sentence beyond the domain the examples may speak, training or held out (the
    corpus's refusals among them)."""
    lists = (BEYOND_DOMAIN, HELDOUT_BEYOND, more_ood_sentences())
    refusals = (*ood_sentences(heldout=False), *ood_sentences(heldout=True))
    return frozenset(s for sentences in (*lists, refusals) for s in sentences)


def _examples(opts: TurnTrainOptions, encoder, features, window, log: Log) -> dict:
    cache = opts.work / EXAMPLES_FILE
    key = {
        "questions": opts.questions,
        "heldout": opts.heldout_questions,
        "seed": opts.seed,
        "frames": opts.frames,
        "beyond_share": opts.beyond_share,
        "version": 3,  # each example's kind
    }

    def make() -> dict[str, Any]:
        from tqdm import tqdm

        def bar(desc: str):
            return lambda it: tqdm(list(it), desc=desc, disable=not opts.progress, unit="question")

        out: dict[str, Any] = {}
        echo = agent_echo()
        for split, n in (("train", opts.questions), ("heldout", opts.heldout_questions)):
            pairs = _questions(opts.corpus, split, n, opts.seed, opts.beyond_share)
            progress = bar(f"turn examples ({split})")
            out[split] = make_examples(
                pairs, features, encoder, window, opts.seed, progress, echo, beyond_domain()
            )
        return out

    return cached_examples(cache, key, make, log)


def cached_examples(
    cache: Path, key: dict[str, Any], make: Callable[[], dict[str, Any]], log: Log
) -> dict[str, Any]:
    """The examples saved in ``cache`` when they were made with ``key``; else ``make()``'s,
    saved there with the seconds making them took (speaking and encoding)."""
    if cache.is_file():
        saved = torch.load(cache, weights_only=False)
        if saved["key"] == key:
            log(f"examples from {cache}")
            return saved
    t0 = time.perf_counter()
    out = {"key": key, **make(), "seconds": 0.0}
    out["seconds"] = round(time.perf_counter() - t0, 1)
    cache.parent.mkdir(parents=True, exist_ok=True)
    torch.save(out, cache)
    return out


def _batch(examples: list[TurnExample]) -> tuple[torch.Tensor, torch.Tensor]:
    x = torch.stack([e.frames.float() for e in examples])
    y = torch.tensor([float(e.finished) for e in examples])
    return x, y


def evaluate(model: TurnDetector, examples: list[TurnExample]) -> dict[str, float]:
    """Accuracy at P = 0.5 on finished and on cut questions, overall, by silence, and on
    requests beyond the domain and commands apart."""
    groups = [("all", [True] * len(examples))]
    groups += [(f"{int(s * 1000)}ms", [e.silence_s == s for e in examples]) for s in SILENCES_S]
    groups += [(kind, [e.kind == kind for e in examples]) for kind in ("beyond", "command")]
    return right_calls(model, *_batch(examples), groups, ("finished", "cut"))


def right_calls(
    model: TurnDetector,
    x: torch.Tensor,
    y: torch.Tensor,
    groups: list[tuple[str, list[bool]]],
    labels: tuple[str, str],
) -> dict[str, float]:
    """The share of right calls at P = 0.5 in each group, apart for examples labelled 1
    (``labels[0]``) and 0 (``labels[1]``): ``{"GROUP_LABEL": share}``."""
    model.eval()
    with torch.inference_mode():
        right = (torch.sigmoid(model(x)) >= 0.5) == (y == 1)
    out: dict[str, float] = {}
    for name, keep in groups:
        mask = torch.tensor(keep)
        for label, cls in zip(labels, (1.0, 0.0), strict=True):
            sel = mask & (y == cls)
            if sel.any():
                out[f"{name}_{label}"] = float(right[sel].float().mean())
    return out


def fit_head(
    model: TurnDetector,
    train: list,
    held: list,
    epochs: int,
    seed: int,
    batch: Callable[[list], tuple[torch.Tensor, torch.Tensor]],
    evaluate: Callable[[TurnDetector, list], dict[str, float]],
    log: Log,
) -> dict[str, float]:
    """Train a head on ``train`` (examples that ``batch`` turns into windows and labels);
    its figures on ``held`` after the last epoch."""
    opt = torch.optim.AdamW(model.parameters(), lr=2e-3, weight_decay=0.01)
    rng = random.Random(seed)
    loss_fn = torch.nn.BCEWithLogitsLoss()
    figures: dict[str, float] = {}
    for epoch in range(epochs):
        model.train()
        order = list(range(len(train)))
        rng.shuffle(order)
        for at in range(0, len(order), 128):
            x, y = batch([train[i] for i in order[at : at + 128]])
            loss = loss_fn(model(x), y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        figures = evaluate(model, held)
        log(f"epoch {epoch + 1}: loss {loss.item():.3f}, held-out {json.dumps(_rounded(figures))}")
    return figures


def train_turn_detector(opts: TurnTrainOptions, log: Log = print) -> dict[str, float]:
    """Train the detector and save it into ``opts.checkpoint``; its held-out figures."""
    started = time.perf_counter()
    model, data = new_head(opts, _examples, log)
    train, held = data["train"], data["heldout"]
    log(f"{len(train)} training examples, {len(held)} held-out")
    figures = fit_head(model, train, held, opts.epochs, opts.seed, _batch, evaluate, log)
    reproduce = (
        f"python run_agent.py train-turns --checkpoint {opts.checkpoint} --corpus "
        f"{opts.corpus} --questions {opts.questions} --frames {opts.frames} "
        f"--epochs {opts.epochs} --seed {opts.seed}"
        + (f" --beyond-share {opts.beyond_share:g}" if opts.beyond_share else "")
    )
    save_head(opts, model, TURN_DIR, figures, reproduce, data, started, log)
    return figures


def new_head(
    opts: TurnTrainOptions, examples: Callable[..., dict], log: Log
) -> tuple[TurnDetector, dict]:
    """A fresh head for the checkpoint's encoder (threads and seed set) and its examples,
    made by ``examples(opts, encoder, features, window, log)`` or read from its cache."""
    from parley.llm.checkpoint import load_checkpoint

    if opts.threads:
        torch.set_num_threads(opts.threads)
    torch.manual_seed(opts.seed)
    ckpt = load_checkpoint(opts.checkpoint)
    cfg = TurnDetectorConfig(
        d_model=ckpt.manifest.model.encoder.d_model, frames=opts.frames, beyond_reply=REFUSAL
    )
    model = TurnDetector(cfg)
    return model, examples(opts, ckpt.encoder, ckpt.manifest.model.features, model.window, log)


def save_head(
    opts: TurnTrainOptions,
    model: TurnDetector,
    part: str,
    figures: dict[str, float],
    reproduce: str,
    data: dict,
    started: float,
    log: Log,
) -> None:
    """The head into the checkpoint's ``part`` folder, its figures beside it, and where it
    came from in ``parley.json``."""
    folder = model.save(opts.checkpoint, part)
    (folder / "metrics.json").write_text(json.dumps(_rounded(figures), indent=1) + "\n")
    seconds = {
        "examples": data.get("seconds"),
        "this_call": round(time.perf_counter() - started, 1),
    }
    record_head_provenance(opts.checkpoint, part, reproduce, figures, seconds)
    log(f"wrote {folder} in {time.perf_counter() - started:.0f} s")


def record_head_provenance(
    checkpoint: Path,
    part: str,
    reproduce: str,
    figures: dict[str, float],
    seconds: dict[str, float | None],
) -> None:
    """A head's files (``part``) and the command that made them, in the checkpoint's
    ``parley.json`` beside the rest of its provenance."""
    from parley.llm.checkpoint import ROOT_CONFIG
    from parley.train.export import sha256_of

    path = checkpoint / ROOT_CONFIG
    manifest = json.loads(path.read_text())
    provenance = manifest.setdefault("provenance", {})
    files = provenance.setdefault("files_sha256", {})
    for name in ("config.json", "model.safetensors", "metrics.json"):
        files[f"{part}/{name}"] = sha256_of(checkpoint / part / name)
    key = "turn_detector" if part == TURN_DIR else f"{part}_detector"
    provenance[key] = {"reproduce": reproduce, "seconds": seconds, "heldout": _rounded(figures)}
    path.write_text(json.dumps(manifest, indent=2) + "\n")


def _rounded(figures: dict[str, float]) -> dict[str, float]:
    return {k: round(v, 4) for k, v in figures.items()}
