"""Shared start-up for the commands: config from flags, the default checkpoint, threads."""

from __future__ import annotations

import argparse
import asyncio
import os
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TYPE_CHECKING, TypeVar

from parley.config import ParleyConfig, load_config
from parley.errors import CheckpointError

if TYPE_CHECKING:
    from parley.agent.core.model import AgentModel

Log = Callable[[str], None]
T = TypeVar("T")

DEFAULT_PRESET = "tiny"
DEFAULT_SEED = 0


def cache_dir() -> Path:
    """Where Parley keeps what it builds: ``$PARLEY_CACHE_DIR``, else the user cache dir."""
    if os.environ.get("PARLEY_CACHE_DIR"):
        return Path(os.environ["PARLEY_CACHE_DIR"])
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "parley"


def load_runtime_config(args: argparse.Namespace) -> ParleyConfig:
    """Defaults, the tiny preset's runtime settings or ``--config``, env, then flags."""
    overrides: dict = {"engine": {}}
    if getattr(args, "engine", None):
        overrides["engine"]["name"] = args.engine
    if getattr(args, "engine_url", None):
        overrides["engine"]["url"] = args.engine_url
    if getattr(args, "threads", None) is not None:
        overrides["engine"]["threads"] = args.threads
    return load_config(getattr(args, "config", None) or DEFAULT_PRESET, overrides)


SHIPPED_MODEL = "model"
"""The trained default model, inside the package's configs (``configs/model/``)."""


def shipped_checkpoint() -> Path | None:
    """The trained model shipped with the package, if this install has it."""
    from importlib import resources

    path = Path(str(resources.files("parley.configs").joinpath(SHIPPED_MODEL)))
    return path if (path / "parley.json").is_file() else None


def default_checkpoint(log: Callable[[str], None]) -> Path:
    """The shipped trained model; without one, the tiny random checkpoint (built once)."""
    shipped = shipped_checkpoint()
    if shipped is not None:
        return shipped
    log("no trained model in this install (configs/model/): using random weights")
    return random_checkpoint(log)


def random_checkpoint(log: Callable[[str], None]) -> Path:
    """The cached tiny random checkpoint, built on first use."""
    from parley.llm.builder import build_checkpoint
    from parley.llm.checkpoint import read_manifest

    path = cache_dir() / "checkpoints" / f"{DEFAULT_PRESET}-seed{DEFAULT_SEED}"
    try:
        read_manifest(path)
        return path
    except CheckpointError as exc:
        log(f"building the {DEFAULT_PRESET} random checkpoint in {path} ({exc})")
    build_checkpoint(
        path, load_config(DEFAULT_PRESET).model, seed=DEFAULT_SEED, log=log, overwrite=True
    )
    return path


def load_model(args: argparse.Namespace, log: Log) -> tuple[AgentModel, ParleyConfig]:
    """The checkpoint the flags name (or the default) on the engine they name."""
    from parley.agent.core.model import AgentModel

    cfg = load_runtime_config(args)
    path = args.checkpoint or default_checkpoint(log)
    log(f"loading checkpoint {path}")
    if cfg.engine.name == "vllm":
        log("starting the vLLM engine (about 30 s on CPU)")
    model = AgentModel.load(path, cfg)
    if model.random_weights:
        log("this checkpoint has random weights: replies are noise; timings and control are real")
    return model, cfg


def with_model(args: argparse.Namespace, log: Log, body: Callable[..., Awaitable[T]]) -> T:
    """Load the model and run ``body(model, cfg)`` on one event loop, then stop the engine.

    One loop for the whole command: a vLLM engine binds its output handling to the loop it
    first runs on.
    """

    async def main() -> T:
        model, cfg = load_model(args, log)
        try:
            return await body(model, cfg)
        finally:
            await model.aclose()

    return asyncio.run(main())
