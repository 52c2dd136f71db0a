"""Configuration for the whole system: pydantic models, YAML presets, environment overrides.

The model-shape sections live in :mod:`parley.model_config`. The defaults live in the
models; a preset in ``configs/NAME.yaml`` overrides some of them;
``PARLEY_*`` environment variables (nested keys joined by ``__``, e.g.
``PARLEY_ENGINE__THREADS=2``) override both. Every bad value fails with a
:class:`ConfigError` that names the key, the value and the allowed range.
"""

from __future__ import annotations

import os
from importlib import resources
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, Field, ValidationError, model_validator

from parley.errors import ConfigError
from parley.model_config import (
    CHECKPOINT_FORMAT_VERSION,
    AdapterConfig,
    CodecConfig,
    EncoderConfig,
    FeatureConfig,
    LMConfig,
    ModelConfig,
    ScheduleConfig,
    _Section,
)

__all__ = [
    "CHECKPOINT_FORMAT_VERSION",
    "AdapterConfig",
    "AgentConfig",
    "CodecConfig",
    "EncoderConfig",
    "EngineConfig",
    "FeatureConfig",
    "LMConfig",
    "ModelConfig",
    "ParleyConfig",
    "ScheduleConfig",
    "load_config",
    "preset_names",
    "validate",
]


class EngineConfig(_Section):
    """Which LM engine runs the checkpoint, and how it samples."""

    name: Literal["transformers", "vllm", "vllm-server"] = "transformers"
    device: str = Field("cpu", description="torch device for the transformers engine.")
    dtype: Literal["float32", "bfloat16", "float16"] = "float32"
    threads: int = Field(0, ge=0, le=512, description="torch CPU threads; 0 keeps torch's choice.")
    temperature: float = Field(0.0, ge=0.0, le=5.0, description="0 means greedy.")
    top_k: int = Field(0, ge=0, le=100_000, description="0 disables top-k.")
    seed: int = Field(0, ge=0, description="Sampling seed.")
    url: str | None = Field(
        None, description="Base URL of a running `vllm serve` for the vllm-server engine."
    )
    eager: bool = Field(
        True,
        description="vLLM: run eagerly (no torch.compile or graphs); starts in half the time.",
    )
    kv_cache_mb: int = Field(
        512,
        ge=0,
        le=1_048_576,
        description="vLLM KV cache size; 0 sizes it from gpu_memory_utilization instead.",
    )
    gpu_memory_utilization: float = Field(0.9, gt=0.0, le=1.0)
    max_model_len: int = Field(
        8192, ge=256, le=1_048_576, description="vLLM: longest conversation, in positions."
    )
    tensor_parallel_size: int = Field(1, ge=1, le=64)
    block_size: int = Field(
        0,
        ge=0,
        le=1024,
        description=(
            "vLLM KV block size, also the prefix cache's unit of reuse; 0 takes vLLM's "
            "default for the device (CPU: 128; a multiple of 32 there)."
        ),
    )


class AgentConfig(_Section):
    """Conversation behaviour: framing, turn-taking and barge-in."""

    frame_ms: Literal[10, 20, 30] = Field(
        10, description="Input frame: the VAD, echo handling and turn logic step this often."
    )
    vocoder_chunk_tokens: int = Field(
        4, ge=1, le=256, description="Speech tokens handed to the vocoder at a time."
    )
    endpoint_silence_ms: int = Field(
        500,
        ge=50,
        le=10_000,
        description="server_vad: silence after user speech that ends the user's turn.",
    )
    turn_detection: Literal["server_vad", "semantic_vad"] = Field(
        "semantic_vad",
        description=(
            "server_vad: the turn ends after endpoint_silence_ms of silence. semantic_vad: "
            "the checkpoint's end-of-turn detector judges the words once a short silence "
            "has begun (how readily: eagerness); a checkpoint without a detector falls back "
            "to server_vad. The detector knows the model's domain only: docs/turn-taking.md "
            "has what each eagerness does beyond it."
        ),
    )
    eagerness: Literal["low", "medium", "high", "auto"] = Field(
        "auto",
        description=(
            "semantic_vad: how readily a silence ends the turn. auto ends it 200 ms in when "
            "the detector is sure and the reply started ahead answers (rather than refuses), "
            "at the VAD's stop (320 ms) when it leans to finished, "
            "waits up to 2 s when it is sure the words are unfinished and otherwise keeps "
            "the endpoint; low, medium and high also wait out pauses it judges unfinished "
            "(up to 3, 2 and 1.2 s), high answering soonest."
        ),
    )
    preemptive_reply_ms: int | None = Field(
        100,
        ge=0,
        le=10_000,
        description=(
            "Silence inside the user's turn after which the reply is started ahead, its "
            "audio held until the turn ends and thrown away, with nothing of it kept, if "
            "the user goes on: its compute runs in the silence instead of after it. It "
            "hears the same as a reply started at the turn's end (the silence is topped up "
            "to 500 ms either way), and with semantic_vad auto whether it answers or "
            "refuses tells if the detector's yes can end the turn before the VAD's stop. "
            "None: replies start when the turn ends."
        ),
    )
    min_interruption_ms: int = Field(
        600,
        ge=0,
        le=10_000,
        description=(
            "User speech over a reply pauses it at once; speech lasting this long interrupts "
            "it, shorter speech (a backchannel, a noise) resumes it where it paused."
        ),
    )
    cut_in_by_words: bool = Field(
        True,
        description=(
            "Where the checkpoint has a cut-in detector, the words of user speech over a "
            "reply decide too: 'wait', 'stop' or a new question cut it as soon as the "
            "detector is sure, also when shorter than min_interruption_ms; words it is sure "
            "only acknowledge ('uh-huh', 'yeah yeah right') may run to twice that and still "
            "resume the reply. Off, or without a detector: by duration alone."
        ),
    )
    echo_cancellation: bool = Field(
        True, description="Cancel the agent's own voice in the microphone before the VAD."
    )
    preroll_ms: int = Field(
        200, ge=0, le=2000, description="Audio before the detected speech onset sent to the model."
    )
    max_ahead_ms: int = Field(
        1000, ge=100, le=60_000, description="Reply audio generated ahead of playback, at most."
    )
    reply_min_s: float | None = Field(
        None,
        ge=0,
        le=600,
        description="Shortest reply in seconds of speech (None: the schedule's).",
    )
    reply_max_s: float | None = Field(
        None, gt=0, le=600, description="Longest reply in seconds of speech (None: the schedule's)."
    )

    @model_validator(mode="after")
    def _check(self) -> AgentConfig:
        lo, hi = self.reply_min_s, self.reply_max_s
        if lo is not None and hi is not None and lo > hi:
            raise ValueError(
                f"reply_min_s ({self.reply_min_s}) must not exceed reply_max_s ({self.reply_max_s})"
            )
        return self


class ParleyConfig(_Section):
    """The whole system's configuration."""

    model: ModelConfig = ModelConfig()
    engine: EngineConfig = EngineConfig()
    agent: AgentConfig = AgentConfig()


ENV_PREFIX = "PARLEY_"


def preset_names() -> list[str]:
    """Names of the presets shipped in ``configs/``."""
    return sorted(
        p.name.removesuffix(".yaml")
        for p in resources.files("parley.configs").iterdir()
        if p.name.endswith(".yaml")
    )


def _read_yaml(source: str | Path) -> dict[str, Any]:
    path = Path(source)
    if not path.suffix and not path.exists():
        names = preset_names()
        if str(source) not in names:
            raise ConfigError(f"unknown preset {str(source)!r}; presets: {', '.join(names)}")
        text = resources.files("parley.configs").joinpath(f"{source}.yaml").read_text()
        origin = f"preset {source!r}"
    else:
        if not path.is_file():
            raise ConfigError(f"config file not found: {path}")
        text = path.read_text()
        origin = str(path)
    try:
        data = yaml.safe_load(text) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"{origin}: not valid YAML: {exc}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{origin}: expected a mapping at the top level")
    return data


def _env_overrides(environ: dict[str, str]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, raw in environ.items():
        if not key.startswith(ENV_PREFIX) or "__" not in key:
            continue
        path = key[len(ENV_PREFIX) :].lower().split("__")
        node = out
        for part in path[:-1]:
            node = node.setdefault(part, {})
        # YAML scalars, so PARLEY_ENGINE__THREADS=2 is an int and ...=true a bool.
        node[path[-1]] = yaml.safe_load(raw) if raw != "" else ""
    return out


def _merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in over.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = _merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def _constraint_text(model: type[BaseModel], loc: tuple[Any, ...]) -> str:
    """The allowed range of the field at ``loc``, read off the model's own constraints."""
    current: Any = model
    field = None
    for part in loc:
        if not (isinstance(current, type) and issubclass(current, BaseModel)):
            return ""
        field = current.model_fields.get(str(part))
        if field is None:
            return ""
        current = field.annotation
    if field is None:
        return ""
    bounds = []
    for meta in field.metadata:
        for attr, sym in (("ge", ">="), ("gt", ">"), ("le", "<="), ("lt", "<")):
            if getattr(meta, attr, None) is not None:
                bounds.append(f"{sym} {getattr(meta, attr)}")
    if getattr(current, "__origin__", None) is Literal:
        bounds.append("one of " + ", ".join(repr(a) for a in current.__args__))
    return f" (allowed: {' and '.join(bounds)})" if bounds else ""


def validate(data: dict[str, Any], model: type[BaseModel] = ParleyConfig, origin: str = "") -> Any:
    """Build ``model`` from ``data``; a bad value raises ConfigError naming key and range."""
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        lines = []
        for err in exc.errors():
            loc = tuple(err["loc"])
            key = ".".join(str(p) for p in loc) or "(top level)"
            value = err.get("input")
            shown = "" if isinstance(value, dict) else f" = {value!r}"
            msg = err["msg"].removeprefix("Value error, ")
            lines.append(f"{key}{shown}: {msg}{_constraint_text(model, loc)}")
        where = f"{origin}: " if origin else ""
        raise ConfigError(where + "invalid configuration\n  " + "\n  ".join(lines)) from None


def load_config(
    preset: str | Path | None = "tiny",
    overrides: dict[str, Any] | None = None,
    environ: dict[str, str] | None = None,
) -> ParleyConfig:
    """Defaults, then ``preset`` (a shipped name or a YAML path), then overrides, then env."""
    data = _read_yaml(preset) if preset is not None else {}
    if overrides:
        data = _merge(data, overrides)
    data = _merge(data, _env_overrides(dict(os.environ if environ is None else environ)))
    return validate(data, origin=f"config {preset}" if preset else "config")
