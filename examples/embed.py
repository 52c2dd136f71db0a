"""Embedding Parley in Python: one agent (one engine), two sessions, typed events.

    python examples/embed.py [--checkpoint DIR] [--input WAV]

Each session hears the same question, in virtual time (a scripted clock, so the run is
deterministic and faster than real time), answers it, and then has its reply truncated
to the first half second, as an application does when it knows the user heard no more.
With a microphone and speaker, use ``session.connect_devices()`` and real time instead.
"""

from __future__ import annotations

import argparse
import asyncio
from pathlib import Path

import numpy as np

from parley import Agent, SessionSettings, VirtualClock
from parley.speech_io.audio import load_audio

SAMPLE = Path(__file__).resolve().parent.parent / "configs" / "samples" / "seven_times_eight.wav"
FRAME = 160  # 10 ms at 16 kHz


async def converse(agent: Agent, audio: np.ndarray, name: str) -> list[str]:
    clock = VirtualClock()
    session = agent.open_session(SessionSettings(endpoint_silence_ms=400), clock=clock)
    log: list[str] = []
    session.subscribe(lambda e: log.append(e.type) if e.type != "audio_played" else None)
    user = np.concatenate([audio, np.zeros(6 * 16000, np.float32)])  # then 6 s of quiet
    played = []
    for start in range(0, len(user) - FRAME + 1, FRAME):
        session.push_audio(user[start : start + FRAME])  # what the microphone heard
        clock.set((start + FRAME) / 16000)
        await session.settle()  # virtual time: let the model keep up
        played.append(session.pull_audio(FRAME))  # what the speaker plays next
    heard = await session.truncate(audio_end_ms=500)
    reply = np.concatenate(played)
    print(f"{name}: {len(reply[np.abs(reply) > 0]) / 16000:.2f} s of reply audio; kept {heard!r}")
    await session.aclose()
    return log


async def main(checkpoint: Path | None = None, wav: Path = SAMPLE) -> list[list[str]]:
    # Random-weight checkpoints speak noise until cut off: keep those replies short (a
    # trained model ends its own reply well within the bound).
    from parley import load_config

    config = load_config("tiny", {"agent": {"reply_min_s": 1.0, "reply_max_s": 4.0}})
    agent = Agent.load(checkpoint, config)
    try:
        audio = load_audio(wav, 16000)
        logs = await asyncio.gather(converse(agent, audio, "A"), converse(agent, audio, "B"))
    finally:
        await agent.aclose()
    for line in logs[0]:
        print("  ", line)
    return list(logs)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", type=Path, default=None)
    parser.add_argument("--input", type=Path, default=SAMPLE)
    args = parser.parse_args()
    asyncio.run(main(args.checkpoint, args.input))
