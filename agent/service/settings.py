"""Per-session settings a client may change: turn detection and instructions.

``None`` keeps the agent's configured value (``agent:`` in the config). Only what the
duplex session really honours is here; the wire protocol maps its own fields onto these
(``docs/protocol.md``).
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from parley.config import AgentConfig
from parley.speech_io.vad import VADOptions

# The VAD confirms speech when silero's probability reaches the threshold (VADOptions.
# confirm_threshold, default 0.3); 0 and 1 are not sane values. At 0 every frame webrtcvad
# calls voiced counts, so noise starts turns. Below the VAD's own "possible speech" bar
# (tentative_threshold, 0.15) speech would be confirmed before it is even possible, and
# silero sits at 0.1-0.4 in loud noise right after speech (VADOptions). At 1.0 silero must
# be certain, which left a probed session deaf; on clean TTS speech 0.95-0.99 already
# confirm onsets 50-100 ms later than the default, and 0.99 dated one 100 ms late.
VAD_THRESHOLD_MIN = VADOptions.tentative_threshold
VAD_THRESHOLD_MAX = 0.9


class SessionSettings(BaseModel):
    """Turn-taking and prompt settings of one session."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    endpoint_silence_ms: int | None = Field(
        None, ge=50, le=10_000, description="Silence after user speech that ends the user's turn."
    )
    preroll_ms: int | None = Field(
        None, ge=0, le=2000, description="Audio before the detected onset sent to the model."
    )
    min_interruption_ms: int | None = Field(
        None, ge=0, le=10_000, description="User speech over a reply this long interrupts it."
    )
    turn_detection: Literal["server_vad", "semantic_vad"] | None = Field(
        None, description="How the server ends turns (AgentConfig.turn_detection)."
    )
    eagerness: Literal["low", "medium", "high", "auto"] | None = Field(
        None, description="semantic_vad: how readily a silence ends the turn."
    )
    vad_threshold: float | None = Field(
        None,
        ge=VAD_THRESHOLD_MIN,
        le=VAD_THRESHOLD_MAX,
        description="Speech probability silero-vad must reach to confirm speech (VADOptions).",
    )
    instructions: str = Field(
        "",
        max_length=65_536,
        description=(
            "Kept and reported back; the spoken LM has no text-prompt input yet, so it does "
            "not steer replies."
        ),
    )

    def agent_config(self, base: AgentConfig) -> AgentConfig:
        """``base`` with this session's turn-taking values put in."""
        update = {
            k: v
            for k, v in (
                ("endpoint_silence_ms", self.endpoint_silence_ms),
                ("preroll_ms", self.preroll_ms),
                ("min_interruption_ms", self.min_interruption_ms),
                ("turn_detection", self.turn_detection),
                ("eagerness", self.eagerness),
            )
            if v is not None
        }
        return AgentConfig.model_validate({**base.model_dump(), **update})

    @property
    def shapes_session(self) -> tuple:
        """The values the duplex session is built with (changing them rebuilds it)."""
        return (
            self.endpoint_silence_ms,
            self.preroll_ms,
            self.min_interruption_ms,
            self.vad_threshold,
        )
