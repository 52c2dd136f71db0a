"""The OpenAI Realtime event protocol, the subset Parley speaks (``docs/protocol.md``).

Client events are parsed into pydantic models, strictly: a wrong type is an error, not a
coercion. Anything wrong with a message becomes a :class:`ProtocolError`, which the bridge
sends back as an ``error`` event; the session goes on.
"""

from __future__ import annotations

import json
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

# Event types of the GA Realtime API that Parley understands but does not implement; they
# get an error naming them rather than "unknown event".
UNSUPPORTED_CLIENT_EVENTS = frozenset(
    {
        "conversation.item.create",
        "conversation.item.delete",
        "conversation.item.retrieve",
        "output_audio_buffer.clear",
        "transcription_session.update",
    }
)


class ProtocolError(Exception):
    """A client message the server cannot act on; becomes an ``error`` event."""

    def __init__(
        self,
        code: str,
        message: str,
        *,
        param: str | None = None,
        event_id: str | None = None,
        kind: str = "invalid_request_error",
    ) -> None:
        super().__init__(message)
        self.code, self.message, self.param, self.event_id, self.kind = (
            code,
            message,
            param,
            event_id,
            kind,
        )


class _Model(BaseModel):
    # Unknown fields are ignored, as the Realtime API's clients send fields Parley has no
    # use for (tools, tracing, ...); docs/protocol.md lists what is honoured.
    model_config = ConfigDict(extra="ignore", strict=True)


class AudioFormat(_Model):
    type: Literal["audio/pcm", "audio/pcmu", "audio/pcma"] = "audio/pcm"
    rate: int | None = None


class TurnDetection(_Model):
    type: Literal["server_vad", "semantic_vad"] = "server_vad"
    eagerness: Literal["low", "medium", "high", "auto"] | None = None
    silence_duration_ms: int | None = Field(None, ge=50, le=10_000)
    prefix_padding_ms: int | None = Field(None, ge=0, le=2000)
    # Its range is checked with the rest of session.update (session_config), which names it.
    threshold: float | None = None
    create_response: bool | None = None
    interrupt_response: bool | None = None
    idle_timeout_ms: int | None = None


class AudioInput(_Model):
    format: AudioFormat | None = None
    turn_detection: TurnDetection | None = None  # explicit null switches it off


class AudioOutput(_Model):
    format: AudioFormat | None = None
    voice: str | None = Field(None, max_length=256)


class AudioConfig(_Model):
    input: AudioInput | None = None
    output: AudioOutput | None = None


class SessionConfig(_Model):
    type: Literal["realtime"] | None = None
    audio: AudioConfig | None = None
    instructions: str | None = Field(None, max_length=65_536)
    output_modalities: list[Literal["text", "audio"]] | None = None


class ClientEvent(_Model):
    type: str
    event_id: str | None = Field(None, max_length=512)


class SessionUpdate(ClientEvent):
    type: Literal["session.update"]
    session: SessionConfig


class InputAudioBufferAppend(ClientEvent):
    type: Literal["input_audio_buffer.append"]
    audio: str


class InputAudioBufferCommit(ClientEvent):
    type: Literal["input_audio_buffer.commit"]


class InputAudioBufferClear(ClientEvent):
    type: Literal["input_audio_buffer.clear"]


class ResponseCreate(ClientEvent):
    type: Literal["response.create"]
    response: dict[str, Any] | None = None


class ResponseCancel(ClientEvent):
    type: Literal["response.cancel"]
    response_id: str | None = Field(None, max_length=512)


class ConversationItemTruncate(ClientEvent):
    type: Literal["conversation.item.truncate"]
    item_id: str = Field(max_length=512)
    content_index: int = Field(0, ge=0, le=0)
    audio_end_ms: int = Field(ge=0)


CLIENT_EVENTS: dict[str, type[ClientEvent]] = {
    m.model_fields["type"].annotation.__args__[0]: m  # type: ignore[union-attr]
    for m in (
        SessionUpdate,
        InputAudioBufferAppend,
        InputAudioBufferCommit,
        InputAudioBufferClear,
        ResponseCreate,
        ResponseCancel,
        ConversationItemTruncate,
    )
}


def parse_client_event(raw: str | bytes) -> ClientEvent:
    """One client message to its event model, or a :class:`ProtocolError` saying why not."""
    if isinstance(raw, bytes):
        raise ProtocolError("invalid_message", "binary messages are not supported; send JSON text")
    try:
        data = json.loads(raw)
    except (ValueError, RecursionError) as exc:
        raise ProtocolError("invalid_json", f"the message is not valid JSON: {exc}") from None
    if not isinstance(data, dict):
        raise ProtocolError("invalid_event", "an event must be a JSON object")
    event_id = data.get("event_id") if isinstance(data.get("event_id"), str) else None
    kind = data.get("type")
    if not isinstance(kind, str):
        raise ProtocolError(
            "invalid_event", "the event has no string 'type'", param="type", event_id=event_id
        )
    model = CLIENT_EVENTS.get(kind)
    if model is None:
        code = "unsupported_event" if kind in UNSUPPORTED_CLIENT_EVENTS else "unknown_event_type"
        shown = kind if len(kind) <= 64 else kind[:64] + "..."
        raise ProtocolError(
            code, f"event type {shown!r} is not supported", param="type", event_id=event_id
        )
    try:
        return model.model_validate(data)
    except (ValidationError, RecursionError) as exc:
        if isinstance(exc, RecursionError):
            raise ProtocolError("invalid_value", "the event is nested too deeply") from None
        err = exc.errors()[0]
        param = ".".join(str(p) for p in err["loc"])
        raise ProtocolError(
            "invalid_value", f"{param}: {err['msg']}", param=param, event_id=event_id
        ) from None


# ---------------------------------------------------------------------- server events


def error_event(exc: ProtocolError) -> dict[str, Any]:
    return {
        "type": "error",
        "error": {
            "type": exc.kind,
            "code": exc.code,
            "message": exc.message,
            "param": exc.param,
            "event_id": exc.event_id,
        },
    }


def response_object(
    response_id: str,
    item_id: str,
    status: str,
    transcript: str | None = None,
    reason: str | None = None,
    error: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """A ``realtime.response``; ``output`` holds the assistant item once there is one."""
    details: dict[str, Any] | None = None
    if status != "in_progress":
        details = {"type": status, "reason": reason, "error": error}
    output = []
    if transcript is not None:
        output.append(
            {
                "id": item_id,
                "object": "realtime.item",
                "type": "message",
                "role": "assistant",
                "status": "completed" if status == "completed" else "incomplete",
                "content": [{"type": "output_audio", "transcript": transcript}],
            }
        )
    return {
        "id": response_id,
        "object": "realtime.response",
        "status": status,
        "status_details": details,
        "output": output,
        "output_modalities": ["audio"],
        "conversation_id": None,
        "usage": None,
    }
