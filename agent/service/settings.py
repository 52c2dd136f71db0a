"""Per-session settings a client may change: turn detection and instructions.

``None`` keeps the agent's configured value (``agent:`` in the config). Only what the
duplex session really honours is here; the wire protocol maps its own fields onto these
(``docs/protocol.md``).
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

from parley.config import AgentConfig


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
    vad_threshold: float | None = Field(
        None,
        ge=0.0,
        le=1.0,
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
