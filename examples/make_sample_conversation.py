"""Write ``configs/samples/conversation.flac``, the user channel ``duplex`` plays by default.

Three turns in flite's "rms" voice, which the shipped model never trained on: a question,
a follow-up on its answer, and a question the user then cuts into with another one while
the agent is still answering. The pauses leave the agent time to answer in full, except
before the barge-in. Needs flite (Debian: ``apt-get install flite``)::

    python examples/make_sample_conversation.py
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import soundfile as sf

from parley.train.corpus import trim
from parley.train.voices import voice

RATE = 16000
OUT = Path(__file__).resolve().parent.parent / "configs" / "samples" / "conversation.flac"

# (what the user says, seconds of silence after it)
SCRIPT = (
    ("what is seven times eight", 4.0),
    ("and times two", 4.5),
    ("what month comes after march", 1.3),  # cut into the agent's reply
    ("stop, what day comes after monday", 4.0),
)


def main() -> None:
    speaker = voice("flite-rms")
    parts = [np.zeros(int(0.3 * RATE), np.float32)]
    for text, pause in SCRIPT:
        speech = trim(speaker.synthesize(text))
        speech = 0.5 * speech / max(float(np.abs(speech).max()), 1e-6)
        parts += [speech.astype(np.float32), np.zeros(int(pause * RATE), np.float32)]
    audio = np.concatenate(parts)
    sf.write(OUT, audio, RATE, subtype="PCM_16", format="FLAC")
    print(f"wrote {OUT} ({audio.size / RATE:.1f} s)")


if __name__ == "__main__":
    main()
