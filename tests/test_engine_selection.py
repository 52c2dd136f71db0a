"""Choosing an engine: every name maps to an engine or to a clear error."""

from __future__ import annotations

import builtins

import pytest

from parley.config import EngineConfig
from parley.errors import EngineUnavailableError
from parley.llm.checkpoint import load_checkpoint
from parley.llm.engines import create_engine


@pytest.fixture(scope="module")
def checkpoint(tiny_checkpoint):
    return load_checkpoint(tiny_checkpoint, lm_weights=False)


def test_vllm_asked_for_but_not_installed(monkeypatch, checkpoint):
    real_import = builtins.__import__

    def without_vllm(name, *args, **kwargs):
        if name == "vllm" or name.startswith("vllm."):
            raise ImportError("No module named 'vllm'")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", without_vllm)
    with pytest.raises(EngineUnavailableError, match=r"needs vLLM 0\.33\.0.*pip install"):
        create_engine(checkpoint, EngineConfig(name="vllm"))


def test_vllm_server_needs_a_url(checkpoint):
    with pytest.raises(EngineUnavailableError, match="--engine-url"):
        create_engine(checkpoint, EngineConfig(name="vllm-server"))


def test_vllm_server_that_is_not_there(checkpoint):
    with pytest.raises(EngineUnavailableError, match="no usable vLLM server at http://127.0.0.1:9"):
        create_engine(checkpoint, EngineConfig(name="vllm-server", url="http://127.0.0.1:9/v1"))


def test_transformers_engine_needs_the_lm_weights(checkpoint):
    assert checkpoint.lm is None and checkpoint.lm_embeddings.shape[1] == 128
    with pytest.raises(EngineUnavailableError, match="LM weights"):
        create_engine(checkpoint, EngineConfig(name="transformers"))
