"""The shape of a model: every setting a checkpoint is made with, saved as its root config.

Kept apart from the runtime settings (:mod:`parley.config`: engine, agent, service), which
a user changes per run; these are fixed once a checkpoint is trained.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

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
    tuned_layers: int = Field(
        0,
        ge=0,
        le=64,
        description=(
            "Top layers the LM's path reads tuned copies of (encoder_tuned.safetensors); "
            "the turn heads and the speech units keep reading Whisper's own. 0: none."
        ),
    )

    @model_validator(mode="after")
    def _check(self) -> EncoderConfig:
        if self.tuned_layers > self.layers:
            raise ValueError(
                f"tuned_layers ({self.tuned_layers}) exceeds the encoder's {self.layers} layers"
            )
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
