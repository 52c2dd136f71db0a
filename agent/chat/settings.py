"""Turn-taking settings the chat app changes while a conversation runs.

Timing and echo handling go through :meth:`DuplexSession.reconfigure`; VAD sensitivity
swaps the detector's (frozen) options object, whose thresholds it reads per frame, as the
service's ``session.update`` does. Both run on the loop thread, between input frames.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from pydantic import ValidationError

from parley.agent.core.session import DuplexSession
from parley.config import AgentConfig

Sensitivity = Literal["low", "normal", "high"]
TurnDetection = Literal["server_vad", "semantic_vad"]
Eagerness = Literal["low", "medium", "high", "auto"]

# VAD sensitivity as silero's confirmation threshold and the level floor: "high" takes
# softer, quieter speech (and more noise); "low" wants clear, loud speech.
_VAD_PRESETS: dict[str, tuple[float, float]] = {
    "low": (0.5, -40.0),
    "normal": (0.3, -50.0),
    "high": (0.2, -60.0),
}


@dataclass(frozen=True)
class ChatSettings:
    """What the settings panel edits."""

    vad_sensitivity: Sensitivity = "normal"
    min_interruption_ms: int = 600
    endpoint_silence_ms: int = 500
    echo_cancellation: bool = True
    turn_detection: TurnDetection = "semantic_vad"
    eagerness: Eagerness = "auto"

    @classmethod
    def from_config(cls, config: AgentConfig) -> ChatSettings:
        return cls(
            min_interruption_ms=config.min_interruption_ms,
            endpoint_silence_ms=config.endpoint_silence_ms,
            echo_cancellation=config.echo_cancellation,
            turn_detection=config.turn_detection,
            eagerness=config.eagerness,
        )

    def validate(self) -> None:
        """Raise ``ValueError`` with the same bounds as :class:`AgentConfig`."""
        try:
            AgentConfig(
                min_interruption_ms=self.min_interruption_ms,
                endpoint_silence_ms=self.endpoint_silence_ms,
                echo_cancellation=self.echo_cancellation,
                turn_detection=self.turn_detection,
                eagerness=self.eagerness,
            )
        except ValidationError as exc:
            err = exc.errors()[0]
            raise ValueError(f"{err['loc'][0]}: {err['msg']}") from None
        if self.vad_sensitivity not in _VAD_PRESETS:
            raise ValueError(f"vad_sensitivity must be one of {', '.join(_VAD_PRESETS)}")


def apply_live(session: DuplexSession, settings: ChatSettings) -> None:
    """Apply ``settings`` to a running session from its next input frame on."""
    settings.validate()
    session.reconfigure(
        session.config.model_copy(
            update={
                "min_interruption_ms": settings.min_interruption_ms,
                "endpoint_silence_ms": settings.endpoint_silence_ms,
                "echo_cancellation": settings.echo_cancellation,
                "turn_detection": settings.turn_detection,
                "eagerness": settings.eagerness,
            }
        )
    )
    confirm, floor = _VAD_PRESETS[settings.vad_sensitivity]
    session.input.detector.retune(confirm_threshold=confirm, min_level_db=floor)
