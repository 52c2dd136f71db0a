"""Choosing and building the LM engine named in the configuration."""

from __future__ import annotations

from parley.config import EngineConfig, ScheduleConfig
from parley.errors import EngineUnavailableError
from parley.llm.engine import SpokenLM

ENGINES = ("transformers", "vllm", "vllm-server")


def needs_lm_weights(engine: EngineConfig) -> bool:
    """Whether this process must hold the LM's weights (the vLLM engines load ``lm/`` elsewhere)."""
    return engine.name == "transformers"


def create_engine(
    checkpoint, engine: EngineConfig, schedule: ScheduleConfig | None = None
) -> SpokenLM:
    """The engine ``engine.name`` serving ``checkpoint``'s LM."""
    schedule = schedule or checkpoint.manifest.model.schedule
    layout = checkpoint.manifest.vocab
    if engine.name == "transformers":
        from parley.llm.transformers_engine import TransformersSpokenLM

        if checkpoint.lm is None:
            raise EngineUnavailableError("the transformers engine needs the LM weights loaded")
        lm = checkpoint.lm.to(engine.device)
        return TransformersSpokenLM(lm, layout, schedule, engine)
    if engine.name == "vllm":
        from parley.llm.vllm_engine import VLLMSpokenLM

        return VLLMSpokenLM(
            checkpoint.path / "lm", checkpoint.lm_embeddings, layout, schedule, engine
        )
    if engine.name == "vllm-server":
        from parley.llm.vllm_server import VLLMServerSpokenLM

        if not engine.url:
            raise EngineUnavailableError(
                "the vllm-server engine needs the server's URL: --engine-url http://HOST:PORT"
            )
        return VLLMServerSpokenLM(engine.url, checkpoint.lm_embeddings, layout, schedule, engine)
    raise EngineUnavailableError(
        f"unknown engine {engine.name!r}; available: " + ", ".join(ENGINES)
    )
