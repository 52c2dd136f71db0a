"""What ``python run_agent.py train`` is asked to do, and the checks made before any of it
runs (a mistake found an hour in costs the hour)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from parley.errors import ConfigError
from parley.tokenizers.codec_io import CODEC_DIR as CHECKPOINT_CODEC_DIR
from parley.train.lm_train import LMTrainConfig

__all__ = ["STAGES", "TrainOptions", "check_options"]


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
    spoken_refusals: float = 0.0
    """Extra refusal dialogues asking requests the corpus never asks, spoken here in its
    training voices (see :mod:`parley.train.spoken_refusals`), as a share of the training
    dialogues; 0: none."""
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
    """The rank of the tuned matrices' difference from Whisper's, as they train
    (:mod:`parley.train.low_rank`) and as the checkpoint stores them
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


def check_options(opts: TrainOptions) -> set[str]:
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
    shares: tuple[str, ...] = ("chained", "followups", "refusals", "spoken_refusals")
    shares += ("followup_drills", "question_drills")
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
