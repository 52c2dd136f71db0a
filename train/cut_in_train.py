"""Train a checkpoint's cut-in detector (``train-turns --cut-in``): backchannels, commands
and new questions spoken over a reply, judged from the frozen encoder (examples:
:mod:`parley.train.cut_in_data`).

Validation is on the corpus's held-out voices and on phrases training never heard; the
figures (right calls on speech that takes the turn and on backchannels, by when the
session asks) go to the log and to ``cut_in/metrics.json``.
"""

from __future__ import annotations

import json
import random
import time
from pathlib import Path
from typing import Any

import torch

from parley.errors import ConfigError
from parley.llm.turn_detector import CUT_IN_DIR, TurnDetector
from parley.train.cut_in_data import (
    DECISIONS_S,
    CutInExample,
    make_examples,
    phrases,
)
from parley.train.turn_data import agent_echo
from parley.train.turn_train import (
    Log,
    TurnTrainOptions,
    cached_examples,
    fit_head,
    new_head,
    right_calls,
    save_head,
)
from parley.train.voices import VOICES, available_voices

EXAMPLES_FILE = "cut_in_examples.pt"


def _questions(corpus: Path, split: str) -> list[str]:
    from parley.train.corpus import read_manifest

    questions = [
        t["question"] for r in read_manifest(corpus) if r["split"] == split for t in r["turns"]
    ]
    if not questions:
        raise ConfigError(f"{corpus}: no {split} questions to ask over a reply")
    return questions


def _spoken(
    opts: TurnTrainOptions, voices: str, words: str, n: int
) -> list[tuple[str, bool, str, Any]]:
    """``n`` phrases of each kind (with ``words``' vocabulary) in every installed voice of
    the ``voices`` split."""
    rng = random.Random(f"cut-in-phrases:{opts.seed}:{voices}:{words}")
    chosen = [
        v
        for v in available_voices()
        if v.split == voices and (voices != "train" or not opts.voices or v.name in opts.voices)
    ]
    if not chosen:
        names = ", ".join(v.name for v in VOICES if v.split == voices)
        raise ConfigError(f"no {voices} voice is installed ({names})")
    questions = _questions(opts.corpus, "train" if voices == "train" else "heldout")
    return [
        (text, takes, kind, voice)
        for voice in chosen
        for text, takes, kind in phrases(words, questions, rng, n)
    ]


def _examples(opts: TurnTrainOptions, encoder, features, window, log: Log) -> dict:
    cache = opts.work / EXAMPLES_FILE
    key = {
        "seed": opts.seed,
        "frames": opts.frames,
        "phrases": opts.phrases,
        "voices": list(opts.voices),
        "version": 4,
    }

    def make() -> dict[str, Any]:
        from tqdm import tqdm

        echo = agent_echo()
        out: dict[str, Any] = {}
        # Training voices and words; held-out voices with training words; held-out voices
        # with held-out words.
        for split, voices, words, n in (
            ("train", "train", "train", opts.phrases),
            ("heldout_voices", "heldout", "train", max(1, opts.phrases // 2)),
            ("heldout_words", "heldout", "heldout", max(1, opts.phrases // 2)),
        ):

            def bar(it, desc=f"cut-in examples ({split})"):
                return tqdm(list(it), desc=desc, disable=not opts.progress, unit="phrase")

            spoken = _spoken(opts, voices, words, n)
            out[split] = make_examples(spoken, echo, features, encoder, window, opts.seed, bar)
        return out

    return cached_examples(cache, key, make, log)


def _batch(examples: list[CutInExample]) -> tuple[torch.Tensor, torch.Tensor]:
    x = torch.stack([e.frames.float() for e in examples])
    y = torch.tensor([float(e.takes_turn) for e in examples])
    return x, y


def evaluate(model: TurnDetector, examples: list[CutInExample]) -> dict[str, float]:
    """Right calls at P = 0.5 on speech that takes the turn and on backchannels, overall,
    by when the session asks, and by kind."""
    groups = [("all", [True] * len(examples))]
    groups += [(at, [e.at == at for e in examples]) for at in _moments()]
    kinds = ("command", "question", "continuation")
    groups += [(kind, [e.kind == kind for e in examples]) for kind in kinds]
    return right_calls(model, *_batch(examples), groups, ("takes", "backchannel"))


def _moments() -> list[str]:
    return [f"{int(d * 1000)}ms" for d in DECISIONS_S] + ["end"]


def train_cut_in_detector(opts: TurnTrainOptions, log: Log = print) -> dict[str, float]:
    """Train the cut-in detector and save it into ``opts.checkpoint``; its held-out figures."""
    started = time.perf_counter()
    model, data = new_head(opts, _examples, log)
    train, voices, words = data["train"], data["heldout_voices"], data["heldout_words"]
    log(f"{len(train)} training examples, {len(voices) + len(words)} held-out")
    fit_head(model, train, voices, opts.epochs, opts.seed, _batch, evaluate, log)
    figures = {
        **{f"voices_{k}": v for k, v in evaluate(model, voices).items()},
        **{f"words_{k}": v for k, v in evaluate(model, words).items()},
    }
    log(f"held out, voices and words: {json.dumps({k: round(v, 3) for k, v in figures.items()})}")
    reproduce = (
        f"python run_agent.py train-turns --cut-in --checkpoint {opts.checkpoint} --corpus "
        f"{opts.corpus} --phrases {opts.phrases} --frames {opts.frames} "
        f"--epochs {opts.epochs} --seed {opts.seed}"
        + (f" --voices {','.join(opts.voices)}" if opts.voices else "")
    )
    save_head(opts, model, CUT_IN_DIR, figures, reproduce, data, started, log)
    return figures
