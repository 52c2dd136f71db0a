"""The command line's arguments: one function per command, so each reads on its own.

Only argparse here; :mod:`parley.agent.cli` parses with :func:`build_parser` and runs.
"""

from __future__ import annotations

import argparse
from pathlib import Path


def add_config_args(p: argparse.ArgumentParser) -> None:
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


def add_checkpoint_arg(p: argparse.ArgumentParser) -> None:
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
    # Imported here: that module takes this one's shared helpers.
    from parley.agent.cli_model_args import add_model_commands

    add_model_commands(sub)
    return parser


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
    add_checkpoint_arg(demo)
    demo.add_argument("--input", type=Path, metavar="WAV", help="user utterance (default: sample)")
    demo.add_argument(
        "--output", type=Path, default=Path("reply.wav"), metavar="WAV", help="reply audio"
    )
    demo.add_argument("--events", type=Path, metavar="JSON", help="write stage times here")
    add_config_args(demo)


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
    add_checkpoint_arg(bench)
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
    add_config_args(bench)


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
    add_checkpoint_arg(duplex)
    add_config_args(duplex)


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
    add_checkpoint_arg(serve)
    add_config_args(serve)


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
    add_checkpoint_arg(lm_server)
    lm_server.add_argument("--host", default="127.0.0.1", help="bind address (default: 127.0.0.1)")
    lm_server.add_argument("--port", type=int, default=8000, help="port (default: 8000)")
    lm_server.add_argument(
        "--print", action="store_true", help="print the vllm serve command instead of running it"
    )
    lm_server.add_argument("vllm_args", nargs=argparse.REMAINDER, help=argparse.SUPPRESS)
    add_config_args(lm_server)


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
    add_checkpoint_arg(chat)
    chat.add_argument("--input-device", metavar="ID", help="microphone: index or name part")
    chat.add_argument("--output-device", metavar="ID", help="speaker: index or name part")
    chat.add_argument(
        "--save-dir", default=".", metavar="DIR", help="where the save key writes (default: .)"
    )
    add_config_args(chat)
