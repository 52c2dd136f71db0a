"""``python run_agent.py``: parse, load the configuration, build, run.

User mistakes (a bad file, a bad value, a missing checkpoint part) end with one line on
stderr and exit status 2, never a traceback. Paths and engines are checked by
:mod:`~parley.agent.preflight` before torch and transformers are imported, so those errors
come at once and before any compute.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence

from parley.agent.cli_args import build_parser
from parley.errors import ParleyError


def _log(msg: str) -> None:
    print(f"[parley] {msg}", file=sys.stderr, flush=True)


def _quiet_libraries() -> None:
    # Progress bars for loading a few-MB checkpoint are noise between our own messages.
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    hf_logging.set_verbosity_error()


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from parley.agent import preflight

    try:
        preflight.check(args, _log)
    except ParleyError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    _quiet_libraries()
    from parley.agent import commands

    run = {
        "make-checkpoint": commands.make_checkpoint,
        "demo": commands.demo,
        "bench": commands.bench,
        "duplex": commands.duplex,
        "lm-server": commands.lm_server,
        "serve": commands.serve,
        "chat": commands.chat,
        "eval": commands.evaluate,
        "make-corpus": commands.make_corpus,
        "train": commands.train,
        "train-turns": commands.train_turns,
    }[args.command]
    try:
        return run(args, _log)
    except ParleyError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
