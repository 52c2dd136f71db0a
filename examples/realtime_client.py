"""Talk to ``python run_agent.py serve`` with the official ``openai`` SDK, unchanged.

    python run_agent.py serve &                  # ws://127.0.0.1:8765/v1/realtime
    python examples/realtime_client.py [--input WAV] [--output reply.wav]

Streams a WAV file as the microphone at real time (PCM16, 24 kHz), lets the server's turn
detection end the turn, and writes the reply audio it receives.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
from pathlib import Path

import numpy as np
from openai import AsyncOpenAI

from parley.speech_io.audio import load_audio, write_wav

SAMPLE = Path(__file__).resolve().parent.parent / "configs" / "samples" / "seven_times_eight.wav"


async def main(url: str, wav: Path, out: Path, token: str) -> None:
    client = AsyncOpenAI(base_url=url, api_key=token)  # the key goes out as a bearer token
    audio = load_audio(wav, 24000)
    pcm = np.clip(audio * 32768, -32768, 32767).astype("<i2").tobytes()
    reply = bytearray()
    async with client.realtime.connect(model="parley") as conn:
        for i in range(0, len(pcm), 4800):  # 100 ms chunks, at real time
            await conn.input_audio_buffer.append(audio=base64.b64encode(pcm[i : i + 4800]).decode())
            await asyncio.sleep(0.1)
        async for event in conn:
            if event.type == "response.output_audio.delta":
                reply += base64.b64decode(event.delta)
            elif event.type == "response.output_audio_transcript.delta":
                print(event.delta, end="", flush=True)
            elif event.type == "response.done":
                print(f"\nresponse {event.response.status}")
                break
            elif event.type == "error":
                print(f"error: {event.error.code}: {event.error.message}")
    samples = np.frombuffer(bytes(reply), dtype="<i2").astype(np.float32) / 32768
    write_wav(out, samples, 24000)
    print(f"wrote {out} ({len(samples) / 24000:.2f} s)")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", default="http://127.0.0.1:8765/v1")
    parser.add_argument("--input", type=Path, default=SAMPLE)
    parser.add_argument("--output", type=Path, default=Path("reply.wav"))
    parser.add_argument("--token", default="unused")
    args = parser.parse_args()
    asyncio.run(main(args.url, args.input, args.output, args.token))
