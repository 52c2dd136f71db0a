"""Choosing and building the LM engine named in the configuration."""

from __future__ import annotations

from parley.config import EngineConfig, ScheduleConfig
from parley.errors import EngineUnavailableError
from parley.llm.engine import SpokenLM

ENGINES = ("transformers",)


def create_engine(
    checkpoint, engine: EngineConfig, schedule: ScheduleConfig | None = None
) -> SpokenLM:
    """The engine ``engine.name`` serving ``checkpoint``'s LM."""
    schedule = schedule or checkpoint.manifest.model.schedule
    if engine.name == "transformers":
        from parley.llm.transformers_engine import TransformersSpokenLM

        lm = checkpoint.lm.to(engine.device)
        return TransformersSpokenLM(lm, checkpoint.manifest.vocab, schedule, engine)
    raise EngineUnavailableError(
        f"engine {engine.name!r} is not available in this build of Parley; available: "
        + ", ".join(ENGINES)
    )
