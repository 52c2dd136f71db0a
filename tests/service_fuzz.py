"""A seeded generator of hostile Realtime client messages, each of which must get exactly
one ``error`` event from a server with turn detection on and no reply running."""

from __future__ import annotations

import base64
import json
import random

JUNK_VALUES = [None, True, 0, -1, 1.5, 10**30, "", "x" * 300, [], {}, [1, [2]], {"a": {}}]


def _junk(rng: random.Random):
    return rng.choice(JUNK_VALUES)


def _text(rng: random.Random, n: int) -> str:
    return "".join(chr(rng.randrange(0x20, 0x2FF)) for _ in range(n))


def hostile_messages(seed: int, n: int, max_bytes: int):
    """``n`` messages (str or bytes) from ``seed``; each one is wrong in some way."""
    rng = random.Random(seed)
    makers = [
        lambda: "{" + _text(rng, rng.randrange(0, 80)),  # not JSON
        lambda: json.dumps(_junk(rng)),  # JSON, not an object
        lambda: "[" * (d := rng.randrange(1, 3000)) + "]" * d,  # deep nesting
        lambda: "[" * max_bytes + "]",  # too big to read as a message
        lambda: json.dumps({"event_id": _junk(rng)}),  # no type
        lambda: json.dumps({"type": _junk(rng)}),  # type not a string
        lambda: json.dumps({"type": _text(rng, rng.randrange(1, 400))}),  # unknown type
        lambda: '{"type": "\\ud800\\udfff\\ud800"}',  # lone surrogates
        lambda: json.dumps({"type": "conversation.item.create", "item": _junk(rng)}),
        lambda: json.dumps({"type": "input_audio_buffer.append", "audio": _junk(rng) or 0}),
        lambda: json.dumps({"type": "input_audio_buffer.append", "audio": "**" + _text(rng, 9)}),
        lambda: json.dumps(
            {
                "type": "input_audio_buffer.append",
                "audio": base64.b64encode(rng.randbytes(2 * rng.randrange(0, 200) + 1)).decode(),
            }
        ),
        lambda: json.dumps({"type": "input_audio_buffer.commit", "event_id": _text(rng, 5)}),
        lambda: json.dumps({"type": "response.create", "response": _junk(rng) or {}}),
        lambda: json.dumps({"type": "response.cancel", "response_id": rng.choice([None, "r"])}),
        lambda: json.dumps(
            {
                "type": "conversation.item.truncate",
                "item_id": _text(rng, 12),
                "content_index": rng.choice([0, 1, -1, "0"]),
                "audio_end_ms": rng.choice([-5, 0, 1.5, "10", None, 10**30, 100]),
            }
        ),
        lambda: json.dumps(
            {"type": "session.update", "session": rng.choice([None, True, 0, "", [], [{}]])}
        ),
        lambda: json.dumps(
            {
                "type": "session.update",
                "session": {
                    "audio": {
                        "input": {
                            "format": rng.choice(
                                [
                                    {"type": "audio/pcmu"},
                                    {
                                        "type": "audio/pcm",
                                        "rate": rng.choice([0, 1, 8000, 22050, 48000]),
                                    },
                                    {"type": "audio/opus"},
                                    "pcm16",
                                ]
                            )
                        }
                    }
                },
            }
        ),
        lambda: json.dumps(
            {
                "type": "session.update",
                "session": {
                    "audio": {
                        "input": {
                            "turn_detection": rng.choice(
                                [
                                    {"type": "semantic_vad", "silence_duration_ms": 300},
                                    {"type": "semantic_vad", "eagerness": "sometimes"},
                                    {"type": "server_vad", "silence_duration_ms": -1},
                                    {"type": "server_vad", "threshold": 7},
                                    {"type": "server_vad", "create_response": False},
                                    {"type": "bogus"},
                                ]
                            )
                        }
                    }
                },
            }
        ),
        lambda: json.dumps({"type": "session.update", "session": {"output_modalities": ["text"]}}),
        lambda: rng.randbytes(rng.randrange(1, 64)),  # a binary frame
    ]
    for _ in range(n):
        message = rng.choice(makers)()
        # A message over twice the limit closes the connection by design; keep it under.
        yield message[: 2 * max_bytes - 1] if len(message) >= 2 * max_bytes else message
