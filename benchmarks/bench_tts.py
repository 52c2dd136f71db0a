"""How long each TTS engine takes per corpus utterance, on one process and one thread.

    .venv/bin/python benchmarks/bench_tts.py [--n 1000] [--engines espeak,flite]

Cycles through the engine's voices and random training questions; prints the median and
mean per utterance, the time for 1000 utterances, and the real-time factor.
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import time

os.environ.setdefault("OMP_NUM_THREADS", "1")

from parley.train.domain import make_dialogue  # noqa: E402
from parley.train.voices import VOICES, available_voices  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=1000, help="utterances per engine")
    parser.add_argument("--engines", default=None, help="comma-separated engines (default: all)")
    args = parser.parse_args()
    engines = args.engines.split(",") if args.engines else sorted({v.engine for v in VOICES})
    rng = random.Random(0)
    texts = [t.question for _ in range(args.n) for t in make_dialogue(rng).turns][: args.n]
    print(f"{'engine':>9} {'n':>5} {'median ms':>10} {'mean ms':>8} {'1000 utt s':>10} {'RTF':>6}")
    for engine in engines:
        voices = [v for v in available_voices() if v.engine == engine]
        if not voices:
            print(f"{engine:>9}: not installed")
            continue
        voices[0].synthesize("warm up")
        times, audio_s = [], 0.0
        for i, text in enumerate(texts):
            v = voices[i % len(voices)]
            start = time.perf_counter()
            audio = v.synthesize(text, v.sample_params(rng))
            times.append(time.perf_counter() - start)
            audio_s += len(audio) / 16000
        mean = statistics.fmean(times)
        print(
            f"{engine:>9} {len(times):>5} {statistics.median(times) * 1000:>10.1f} "
            f"{mean * 1000:>8.1f} {mean * 1000:>10.1f} {sum(times) / audio_s:>6.3f}"
        )


if __name__ == "__main__":
    main()
