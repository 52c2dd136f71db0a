"""Configuration for the whole system: pydantic models, YAML presets, environment overrides.

The defaults live in the models; a preset in ``configs/NAME.yaml`` overrides some of them;
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
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from parley.errors import ConfigError

CHECKPOINT_FORMAT_VERSION = 1


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class FeatureConfig(_Section):
    """Whisper log-mel features (WhisperFeatureExtractor semantics)."""

    sample_rate: Literal[16000] = Field(16000, description="Model input rate in Hz.")
    n_mels: Literal[80, 128] = Field(80, description="Mel bins: 80 (Whisper <= v2) or 128 (v3).")
    n_fft: int = Field(400, ge=64, le=4096, description="STFT window and FFT size in samples.")
    hop_length: int = Field(160, ge=16, le=2048, description="STFT hop in samples (10 ms).")
    log_floor: float = Field(
        -1.5,
        ge=-10.0,
        le=1.0,
        description=(
            "Floor applied to log10 mel power before scaling. Whisper clamps at "
            "(utterance max - 8), which depends on audio not yet heard; a stream needs a fixed floor."
        ),
    )
    floor_mode: Literal["fixed", "running_max"] = Field(
        "fixed",
        description=(
            "'fixed': clamp at log_floor. 'running_max': also clamp at (the loudest frame so "
            "far - dynamic_range), Whisper's own clamp made causal; pretrained Whisper "
            "encoders expect it, and it follows the input level."
        ),
    )
    dynamic_range: float = Field(
        8.0, gt=0.0, le=20.0, description="log10 range kept below the running maximum."
    )


class EncoderConfig(_Section):
    """Whisper-shaped audio encoder, run block by block with block-causal attention."""

    d_model: int = Field(384, ge=8, le=4096)
    layers: int = Field(4, ge=1, le=64)
    heads: int = Field(6, ge=1, le=64)
    ffn_dim: int = Field(1536, ge=8, le=16384)
    max_source_positions: int = Field(
        1500, ge=16, le=65536, description="Rows of the position table (1500 = 30 s in Whisper)."
    )
    block_frames: int = Field(
        25, ge=1, le=1500, description="Encoder frames per streaming block (50 frames = 1 s)."
    )
    context_blocks: int = Field(
        8,
        ge=1,
        le=1024,
        description="Blocks a frame attends to: its own and this many minus one earlier ones.",
    )

    @model_validator(mode="after")
    def _check(self) -> EncoderConfig:
        if self.d_model % self.heads:
            raise ValueError(f"d_model ({self.d_model}) must be divisible by heads ({self.heads})")
        if self.block_frames * self.context_blocks > self.max_source_positions:
            raise ValueError(
                "block_frames * context_blocks must not exceed max_source_positions "
                f"({self.block_frames} * {self.context_blocks} > {self.max_source_positions}): "
                "positions wrap around the table, so one attention window must fit in it"
            )
        return self


class AdapterConfig(_Section):
    """Frame stacking + MLP from encoder frames to LM input embeddings."""

    stack: int = Field(4, ge=1, le=16, description="Encoder frames stacked into one LM position.")
    hidden: int = Field(1024, ge=8, le=16384)


class LMConfig(_Section):
    """Decoder LM shape (a Qwen2-architecture causal LM when built from scratch)."""

    architecture: Literal["qwen2", "llama"] = "qwen2"
    hidden: int = Field(896, ge=8, le=16384)
    layers: int = Field(24, ge=1, le=128)
    heads: int = Field(14, ge=1, le=128)
    kv_heads: int = Field(2, ge=1, le=128)
    intermediate: int = Field(4864, ge=8, le=65536)
    max_positions: int = Field(32768, ge=128, le=1_048_576)
    rope_theta: float = Field(1_000_000.0, gt=0)
    tie_embeddings: bool = True
    text_vocab: int = Field(
        4096, ge=300, le=1_000_000, description="BPE size when the text tokenizer is built here."
    )

    @model_validator(mode="after")
    def _check(self) -> LMConfig:
        if self.hidden % self.heads or self.heads % self.kv_heads:
            raise ValueError(
                f"hidden ({self.hidden}) must be divisible by heads ({self.heads}), "
                f"and heads by kv_heads ({self.kv_heads})"
            )
        return self


class ScheduleConfig(_Section):
    """How text and speech tokens interleave in a reply."""

    text_tokens: int = Field(13, ge=1, le=512, description="Text tokens per cycle (n).")
    speech_tokens: int = Field(26, ge=1, le=1024, description="Speech tokens per cycle (m).")
    min_speech_tokens: int = Field(
        0, ge=0, le=100_000, description="End of turn is suppressed before this many."
    )
    max_speech_tokens: int = Field(
        500, ge=1, le=100_000, description="The reply is ended once it has this many."
    )
    history_turns: int | None = Field(
        None,
        ge=0,
        le=100_000,
        description=(
            "Earlier turns (a question and its reply) the LM sees before a new question, "
            "the newest kept; None: as many as fit. A model trained on short dialogues "
            "loses its way in longer ones."
        ),
    )

    @model_validator(mode="after")
    def _check(self) -> ScheduleConfig:
        if self.min_speech_tokens > self.max_speech_tokens:
            raise ValueError(
                f"min_speech_tokens ({self.min_speech_tokens}) must not exceed "
                f"max_speech_tokens ({self.max_speech_tokens})"
            )
        return self


class CodecConfig(_Section):
    """Single-codebook speech tokenizer and streaming token vocoder."""

    codebook_size: int = Field(1024, ge=2, le=65536)
    # pydantic checks a float Literal as written; the typing spec allows no floats in one.
    token_rate_hz: Literal[12.5, 25.0, 50.0] = Field(  # type: ignore[valid-type]
        25.0, description="Speech tokens per second."
    )
    sample_rate: Literal[16000, 22050, 24000] = 16000
    dim: int = Field(256, ge=8, le=4096, description="Vocoder backbone width.")
    layers: int = Field(6, ge=1, le=64, description="Causal ConvNeXt blocks in the vocoder.")
    kernel: int = Field(7, ge=1, le=31, description="Depthwise kernel of each block (causal).")
    lookahead: int = Field(2, ge=0, le=16, description="Future tokens the vocoder waits for.")
    n_fft: int = Field(640, ge=16, le=8192, description="iSTFT size of the vocoder head.")
    frames_per_token: int = Field(4, ge=1, le=64, description="iSTFT frames per speech token.")
    tokenizer_dim: int = Field(
        128, ge=8, le=4096, description="Speech tokenizer width ('stft' tokenizer only)."
    )
    max_log_magnitude: float = Field(
        2.0,
        gt=0.0,
        le=12.0,
        description=(
            "Clamp on the vocoder's predicted log-magnitudes, so untrained weights give "
            "bounded audio. One bin at 6.0 is a sinusoid of amplitude ~1.7 after overlap-add; "
            "full-scale speech needs bins up to ~4.6, which 2.0 cuts off: trained codecs use 6.0."
        ),
    )
    tokenizer: Literal["stft", "whisper-units"] = Field(
        "stft",
        description=(
            "'stft': a small seeded STFT tokenizer of its own. 'whisper-units': k-means "
            "centroids over the checkpoint's Whisper encoder frames (50 per second, averaged "
            "over 50 / token_rate_hz frames); vocoder/ then stores only the codebook."
        ),
    )

    unit_window: tuple[int, int] | None = Field(
        None,
        description=(
            "'whisper-units' only: (left, right) encoder frames of context each pair of "
            "frames is encoded with, always at the same positions of Whisper's table, so a "
            "unit says what was said and not when (units from the runtime's block-causal "
            "pass change with the position in the utterance). None: that block-causal pass "
            "(codecs trained before the window)."
        ),
    )

    @property
    def samples_per_token(self) -> int:
        return round(self.sample_rate / self.token_rate_hz)

    @property
    def frames_per_unit(self) -> int:
        """Whisper encoder frames averaged into one 'whisper-units' token: the encoder
        makes 50 frames per second (10 ms mel hop, stride-2 conv)."""
        return round(50.0 / self.token_rate_hz)

    @property
    def hop_length(self) -> int:
        return self.samples_per_token // self.frames_per_token

    @model_validator(mode="after")
    def _check(self) -> CodecConfig:
        spt = self.sample_rate / self.token_rate_hz
        if spt != int(spt) or int(spt) % self.frames_per_token:
            raise ValueError(
                f"sample_rate / token_rate_hz ({spt:g}) must be a whole multiple of "
                f"frames_per_token ({self.frames_per_token})"
            )
        if self.n_fft < self.hop_length or self.n_fft % self.hop_length:
            raise ValueError(
                f"n_fft ({self.n_fft}) must be a multiple of the iSTFT hop ({self.hop_length})"
            )
        if self.tokenizer == "whisper-units":
            if self.sample_rate != 16000:
                raise ValueError("tokenizer 'whisper-units' needs sample_rate 16000 (Whisper's)")
            if 50.0 % self.token_rate_hz:
                raise ValueError(
                    f"tokenizer 'whisper-units' averages whole encoder frames: token_rate_hz "
                    f"must divide 50, got {self.token_rate_hz:g}"
                )
        if self.unit_window is not None:
            left, right = self.unit_window
            if self.tokenizer != "whisper-units":
                raise ValueError("unit_window applies to tokenizer 'whisper-units' only")
            if left < 0 or right < 0 or left + right + 2 > 1500:
                raise ValueError(
                    f"unit_window (left, right) must be >= 0 and fit Whisper's 1500 "
                    f"positions, got {self.unit_window}"
                )
        return self


class ModelConfig(_Section):
    """Everything that shapes a checkpoint; saved as the checkpoint's root config."""

    features: FeatureConfig = FeatureConfig()
    encoder: EncoderConfig = EncoderConfig()
    adapter: AdapterConfig = AdapterConfig()
    lm: LMConfig = LMConfig()
    schedule: ScheduleConfig = ScheduleConfig()
    codec: CodecConfig = CodecConfig()


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
        "server_vad",
        description=(
            "server_vad: the turn ends after endpoint_silence_ms of silence. semantic_vad: "
            "the checkpoint's end-of-turn detector judges the words once a short silence "
            "has begun: a finished question is answered at once, a pause inside one waited "
            "out (a checkpoint without a detector falls back to server_vad). It knows the "
            "model's domain only: see docs/turn-taking.md before making it the default."
        ),
    )
    eagerness: Literal["low", "medium", "high", "auto"] = Field(
        "auto",
        description=(
            "semantic_vad: how readily a silence ends the turn. auto only shortens the "
            "endpoint when the detector is sure; low, medium and high also wait out pauses "
            "it judges unfinished (up to 3, 2 and 1.2 s), high answering soonest."
        ),
    )
    preemptive_reply_ms: int | None = Field(
        320,
        ge=0,
        le=10_000,
        description=(
            "Silence inside the user's turn after which the reply is started ahead, its "
            "audio held until the turn ends and thrown away, with nothing of it kept, if "
            "the user goes on: its compute runs in the silence instead of after it. The "
            "reply hears the user's words up to that point; at 320 ms, where the VAD calls "
            "the speech over, the same words as a reply started at the turn's end. None: "
            "replies start when the turn ends."
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
