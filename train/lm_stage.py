"""Stages 4 and 5 of :func:`~parley.train.pipeline.run_training`: the LM's data (user
frames, reply units, the extra examples) cached in ``work/lm``, then adapter + LM training.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import torch

from parley.errors import ConfigError
from parley.llm.adapter import Adapter
from parley.llm.builder import PART_SEEDS
from parley.llm.lm_build import layout_of, random_lm
from parley.speech_io.audio import load_audio
from parley.train import domain
from parley.train.corpus import record_answer
from parley.train.followups import recombine_followups
from parley.train.lm_data import (
    Dialogue,
    Example,
    cache_replies,
    cache_user_frames,
    chain_dialogues,
    extra_refusals,
    layout_dialogue,
    question_drills,
    reply_audio,
)
from parley.train.lm_train import METRICS_FILE, LMTrainConfig, SpokenLMTrainee, train_lm
from parley.train.lm_train import STATE_FILE as LM_STATE_FILE
from parley.train.low_rank import factor_tuned, merge_tuned
from parley.train.noisy_copies import is_noisy, noisy_audio, noisy_copies
from parley.train.spoken_refusals import (
    is_spoken_refusal,
    render_refusals,
    spoken_refusals,
)

# Each part draws from its own seed, as in make-checkpoint; the data order from one more.
_PART_SEEDS = {**PART_SEEDS, "data": 5}
# Named for the reply trimming its units were made with (``lm_data.REPLY_LEAD_S``): a work
# dir cached under another trimming makes them afresh rather than mixing the two.
REPLIES_FILE = "replies-lead80.json"


def text_corpus(corpus_dialogues: list) -> str:
    """The text the BPE is trained on: every answer and every training question."""
    lines = list(domain.all_answers())
    lines += [
        t["question"] for d in corpus_dialogues if d.split == "train" for t in d.meta["turns"]
    ]
    lines += domain.ood_sentences(heldout=False)
    return "\n".join(lines)


def adapter_and_lm(opts, cfg, work, corpus, dialogues, encoder, units, vocoder, stage, log):
    """Stages 4 and 5: the LM's data (cached) and the adapter + LM training."""
    # 4. data
    t0 = time.perf_counter()
    lm_work = work / "lm"
    lm_work.mkdir(parents=True, exist_ok=True)
    lm, tokenizer = _fresh_lm(opts, cfg, lm_work, dialogues)
    layout = layout_of(lm, tokenizer, cfg.codec.codebook_size)
    adapter = Adapter.from_config(
        cfg.adapter, cfg.encoder.d_model, cfg.lm.hidden, opts.seed * 10 + _PART_SEEDS["adapter"]
    )
    bar = _progress_factory(opts.progress)
    extras = _extra_dialogues(opts, [d for d in dialogues if d.split == "train"])
    render_refusals(extras["spoken refusals"], lm_work, corpus, bar("speak more refusals"))
    tuned = len(encoder.tuned)
    frames = cache_user_frames(
        corpus,
        [*dialogues, *extras["noisy copies"], *extras["spoken refusals"]],
        cfg.features,
        encoder,
        # With tuned layers the cache holds the stream below them, which training runs on.
        lm_work / (f"frames-shared{tuned}.pt" if tuned else "frames.pt"),
        bar("encode user audio"),
        load=lambda key: _user_audio(corpus, lm_work, key),
        shared=bool(tuned),
    )
    replies = _replies(corpus, dialogues, extras, tokenizer, units, lm_work, bar)
    train_ex, held_ex = _examples(cfg, dialogues, extras, frames, replies, layout, log)
    if opts.init_from is not None and not (lm_work / LM_STATE_FILE).is_file():
        from parley.train.warm_start import warm_start

        answers = {t.answer for d in dialogues for t in d.turns}
        warm_start(
            adapter,
            lm,
            layout,
            opts.init_from,
            {a: replies[a][1] for a in answers},
            lambda answer: reply_audio(corpus, answer),
            log,
        )
    stage("data", t0)

    # 5. adapter + LM (an export-only call finds it trained and only loads it)
    t0 = time.perf_counter()
    if tuned and opts.tuned_rank:
        # Trained as the difference the checkpoint stores, so export loses nothing.
        factor_tuned(encoder, opts.tuned_rank, opts.seed)
    model = SpokenLMTrainee(adapter, lm, encoder)
    lm_cfg, more_threads = _lm_config(opts, vocoder)
    last = train_lm(
        model,
        train_ex,
        held_ex[:400],
        lm_cfg,
        lm_work,
        log,
        opts.progress,
        more_threads=more_threads,
    )
    if tuned:
        merge_tuned(encoder)
    # An export-only call trains nothing: its figures are the log's last.
    last = last or _last_metrics(lm_work / METRICS_FILE)
    stage("lm", t0)
    return adapter, lm, tokenizer, last


def _fresh_lm(opts, cfg, lm_work: Path, dialogues: list[Dialogue]):
    """A seeded random LM and its text tokenizer, the BPE trained on this corpus's text
    (or, starting from ``--init-from``, that checkpoint's: its weights know those ids).

    The BPE is trained once and kept: the cached replies and a saved LM state hold its ids,
    so a resumed run (even on a grown corpus) must not train another."""
    saved_tokenizer = lm_work / "tokenizer"
    if saved_tokenizer.is_dir():
        tokenizer = _load_tokenizer(saved_tokenizer)
    elif opts.init_from is not None:
        tokenizer = _load_tokenizer(Path(opts.init_from) / "lm")
    else:
        tokenizer = None
    lm, tokenizer = random_lm(
        cfg.lm,
        cfg.codec.codebook_size,
        opts.seed * 10 + _PART_SEEDS["lm"],
        corpus=text_corpus(dialogues),
        tokenizer=tokenizer,
    )
    if not saved_tokenizer.is_dir():
        tokenizer.save_pretrained(saved_tokenizer)
    return lm, tokenizer


def _examples(
    cfg, dialogues: list[Dialogue], extras: dict[str, list[Dialogue]], frames, replies, layout, log
) -> tuple[list[Example], list[Example]]:
    """The laid-out training examples and held-out dialogues, counted in the log."""
    train_ex: list[Example] = []
    held_ex: list[Example] = []
    skipped = 0
    for d in [*dialogues, *(d for group in extras.values() for d in group)]:
        try:
            ex = layout_dialogue(d, frames, replies, layout, cfg.schedule, cfg.adapter.stack)
        except ValueError:
            skipped += 1  # the schedule cannot carry this reply (too long for max_speech_tokens)
            continue
        (train_ex if d.split == "train" else held_ex).append(ex)
    counts = ", ".join(f"{len(group)} {name}" for name, group in extras.items())
    log(
        f"{len(train_ex)} training examples ({counts}) and {len(held_ex)} held-out dialogues "
        f"({skipped} skipped)"
    )
    return train_ex, held_ex


def _lm_config(opts, vocoder) -> tuple[LMTrainConfig, Callable[[], int | None] | None]:
    """The LM's training config, and what ``train_lm`` asks for more threads (None: it has
    the CPU to itself from the start)."""
    lm_cfg = replace(opts.lm, seed=opts.seed * 10 + _PART_SEEDS["data"])
    if vocoder is None or torch.cuda.is_available():
        return lm_cfg, None
    # The vocoder's process has the other half until it is done; then the LM takes all
    # (the vocoder ends an hour or more before the LM in the default recipe).
    lm_cfg.threads = half_threads(opts.lm.threads)
    full = opts.lm.threads or 2 * lm_cfg.threads
    return lm_cfg, lambda: None if vocoder.is_alive() else full


def _extra_dialogues(opts, training: list[Dialogue]) -> dict[str, list[Dialogue]]:
    """The examples made from the training dialogues, by the options that ask for them."""
    try:
        recombined = recombine_followups(training, opts.followups, opts.seed)
        drills = recombine_followups(training, opts.followup_drills, opts.seed, text_only=True)
    except ValueError as exc:
        raise ConfigError(f"--followups / --followup-drills: {exc}") from None
    return {
        "conversations of 2-3 dialogues": chain_dialogues(training, opts.chained, opts.seed),
        "recombined follow-ups": recombined,
        "follow-up drills": drills,
        "more refusals": extra_refusals(training, opts.refusals, opts.seed),
        "question drills": question_drills(training, opts.question_drills, opts.seed),
        "noisy copies": noisy_copies(training, opts.noisy_copies, opts.seed),
        "spoken refusals": spoken_refusals(
            training,
            opts.spoken_refusals,
            opts.seed,
            sorted({str(d.meta["voice"]) for d in training if d.meta.get("voice")}),
        ),
    }


def _user_audio(corpus: Path, lm_work: Path, key: str):
    """The user utterance a frame-cache key names: a corpus file, a noisy copy of one, or
    a request spoken for ``--spoken-refusals``."""
    if is_noisy(key):
        return noisy_audio(corpus, key)
    if is_spoken_refusal(key):
        return load_audio(lm_work / key)
    return load_audio(corpus / key)


def _replies(corpus, dialogues, extras, tokenizer, units, lm_work: Path, bar):
    """Every reply's text tokens and speech units, by its text: the corpus's recordings,
    new recordings for recombined follow-ups, and text alone for a drill."""
    recorded = {t.answer for d in dialogues for t in d.turns}
    spoken = [*extras["recombined follow-ups"], *extras["spoken refusals"]]
    answers = recorded | {t.answer for d in spoken for t in d.turns}
    # Replies the corpus never recorded, in the agent's voice, kept beside the LM's data.
    for answer in bar("record new replies")(sorted(answers - recorded)):
        record_answer(answer, lm_work)
    replies = cache_replies(
        corpus,
        answers,
        tokenizer,
        lambda audio: units.encode(audio).tolist(),
        lm_work / REPLIES_FILE,
        bar("tokenize replies"),
        extra=lm_work,
    )
    text_only = {t.answer for d in extras["follow-up drills"] for t in d.turns}
    for answer in text_only - set(replies):
        # A drill lays out the reply's text alone: no recording, no units.
        replies[answer] = (list(tokenizer.encode(answer, add_special_tokens=False)), [])
    return replies


def _last_metrics(path: Path) -> dict:
    """The last training row and the last held-out row of a metrics log, merged."""
    rows = (
        [json.loads(line) for line in path.read_text().splitlines() if line]
        if path.is_file()
        else []
    )
    merged: dict = {}
    for row in rows:
        merged.update(row)
    return merged


def half_threads(threads: int) -> int:
    """Threads for each of two processes sharing ``threads`` (0: torch's choice, halved)."""
    return max(1, (threads or torch.get_num_threads()) // 2)


def _load_tokenizer(path: Path):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(path)


def _progress_factory(enabled: bool):
    from tqdm import tqdm

    def make(desc: str):
        return lambda it: tqdm(list(it), desc=desc, disable=not enabled, unit="item")

    return make
