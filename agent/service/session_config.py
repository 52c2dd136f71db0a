"""A connection's Realtime session configuration: wire formats and turn detection.

``session.update`` is checked here as a whole before anything changes, so a rejected
update leaves the session as it was.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

from parley.agent.service import protocol as P
from parley.agent.service.audio import PCM_RATES
from parley.agent.service.settings import VAD_THRESHOLD_MAX, VAD_THRESHOLD_MIN, SessionSettings
from parley.config import AgentConfig
from parley.speech_io.vad import VADOptions

DEFAULT_RATE = 24000  # the Realtime protocol's PCM rate


@dataclass(frozen=True)
class WireConfig:
    """What the client sees of the session beyond :class:`SessionSettings`."""

    model: str = "parley"
    input_rate: int = DEFAULT_RATE
    output_rate: int = DEFAULT_RATE
    turn_detection: str | None = "server_vad"  # None: the client commits turns itself
    voice: str | None = None

    def updated(
        self, cfg: P.SessionConfig, settings: SessionSettings, event_id: str | None
    ) -> tuple[WireConfig, SessionSettings]:
        """This config and ``settings`` with ``cfg`` applied; a ProtocolError if any part
        of it cannot be honoured."""

        def refuse(code: str, param: str, message: str) -> P.ProtocolError:
            return P.ProtocolError(code, message, param=f"session.{param}", event_id=event_id)

        wire = self
        new: dict[str, Any] = {}
        if cfg.output_modalities is not None and cfg.output_modalities != ["audio"]:
            raise refuse(
                "unsupported_modalities",
                "output_modalities",
                "Parley replies with audio and its transcript: output_modalities must be ['audio']",
            )
        if cfg.instructions is not None:
            new["instructions"] = cfg.instructions
        audio = cfg.audio
        if audio is not None and audio.input is not None:
            if audio.input.format is not None:
                rate = _pcm_rate(audio.input.format, "audio.input.format", refuse)
                wire = replace(wire, input_rate=rate)
            if "turn_detection" in audio.input.model_fields_set:
                td = audio.input.turn_detection
                if td is None:
                    wire = replace(wire, turn_detection=None)
                else:
                    _check_turn_detection(td, refuse)
                    wire = replace(wire, turn_detection="server_vad")
                    for field, value in (
                        ("turn_detection", td.type),
                        ("eagerness", td.eagerness),
                        ("endpoint_silence_ms", td.silence_duration_ms),
                        ("preroll_ms", td.prefix_padding_ms),
                        ("vad_threshold", td.threshold),
                    ):
                        if value is not None:
                            new[field] = value
        if audio is not None and audio.output is not None:
            if audio.output.format is not None:
                rate = _pcm_rate(audio.output.format, "audio.output.format", refuse)
                wire = replace(wire, output_rate=rate)
            if audio.output.voice is not None:
                wire = replace(wire, voice=audio.output.voice)
        return wire, SessionSettings.model_validate({**settings.model_dump(), **new})


def _pcm_rate(fmt: P.AudioFormat, param: str, refuse) -> int:
    if fmt.type != "audio/pcm":
        raise refuse(
            "unsupported_audio_format", param, f"{fmt.type} is not supported; use audio/pcm"
        )
    rate = DEFAULT_RATE if fmt.rate is None else fmt.rate
    if rate not in PCM_RATES:
        raise refuse(
            "unsupported_audio_format",
            f"{param}.rate",
            f"audio/pcm at {rate} Hz is not supported; rates: {', '.join(map(str, PCM_RATES))}",
        )
    return rate


def _check_turn_detection(td: P.TurnDetection, refuse) -> None:
    param = "audio.input.turn_detection"
    # Each type has its own knob: a silence length for the timer, eagerness for the detector.
    wrong = (
        [("silence_duration_ms", td.silence_duration_ms)]
        if td.type == "semantic_vad"
        else [("eagerness", td.eagerness)]
    )
    for name, value in wrong:
        if value is not None:
            raise refuse(
                "invalid_value",
                f"{param}.{name}",
                f"{name} does not apply to {td.type} (server_vad takes silence_duration_ms, "
                "semantic_vad eagerness)",
            )
    for name in ("create_response", "interrupt_response"):
        if getattr(td, name) is False:
            raise refuse(
                "unsupported_turn_detection",
                f"{param}.{name}",
                f"{name}=false is not supported: the duplex session always answers a "
                "finished turn and always lets the user cut in",
            )
    if td.idle_timeout_ms is not None:
        raise refuse("unsupported_turn_detection", f"{param}.idle_timeout_ms", "not supported")
    # Written so that NaN (which Python's JSON reader accepts) is refused too.
    if td.threshold is not None and not VAD_THRESHOLD_MIN <= td.threshold <= VAD_THRESHOLD_MAX:
        raise refuse(
            "invalid_value",
            f"{param}.threshold",
            f"{param}.threshold must be between {VAD_THRESHOLD_MIN:g} and "
            f"{VAD_THRESHOLD_MAX:g} (silero's speech probability; default "
            f"{VADOptions.confirm_threshold:g}), got {td.threshold!r}",
        )


def session_object(
    session_id: str,
    wire: WireConfig,
    settings: SessionSettings,
    agent: AgentConfig,
    detection: str = "server_vad",
) -> dict[str, Any]:
    """The ``session`` of ``session.created`` / ``session.updated``: effective values
    (``detection``: how the session ends turns, semantic_vad only where the model has an
    end-of-turn detector)."""
    turn_detection: dict[str, Any] | None = None
    if wire.turn_detection is not None and detection == "semantic_vad":
        turn_detection = {
            "type": "semantic_vad",
            "eagerness": agent.eagerness,
            "create_response": True,
            "interrupt_response": True,
        }
    elif wire.turn_detection is not None:
        threshold = settings.vad_threshold
        turn_detection = {
            "type": "server_vad",
            "silence_duration_ms": settings.endpoint_silence_ms or agent.endpoint_silence_ms,
            "prefix_padding_ms": (
                agent.preroll_ms if settings.preroll_ms is None else settings.preroll_ms
            ),
            "threshold": VADOptions.confirm_threshold if threshold is None else threshold,
            "create_response": True,
            "interrupt_response": True,
            "idle_timeout_ms": None,
        }
    return {
        "type": "realtime",
        "object": "realtime.session",
        "id": session_id,
        "model": wire.model,
        "output_modalities": ["audio"],
        "instructions": settings.instructions,
        "audio": {
            "input": {
                "format": {"type": "audio/pcm", "rate": wire.input_rate},
                "turn_detection": turn_detection,
            },
            "output": {
                "format": {"type": "audio/pcm", "rate": wire.output_rate},
                "voice": wire.voice,
            },
        },
    }
