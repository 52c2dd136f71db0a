"""Shared test setup: one torch thread, deterministic seeds, no network."""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import pytest  # noqa: E402
import torch  # noqa: E402

torch.set_num_threads(1)


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory):
    """The tiny random checkpoint, built once per test run."""
    from parley.config import load_config
    from parley.llm.builder import build_checkpoint

    return build_checkpoint(
        tmp_path_factory.mktemp("tiny") / "ckpt", load_config("tiny").model, seed=0
    )


@pytest.fixture(scope="session")
def tiny_model(tiny_checkpoint):
    from parley.agent.core.model import AgentModel
    from parley.config import load_config

    return AgentModel.load(tiny_checkpoint, load_config("tiny"))
