"""What the model answers when the turn ends sooner in the user's silence.

    python benchmarks/bench_turn_end_silence.py [--corpus data/corpus] [--limit 60]
        [--silence-ms 200 320 500] [--checkpoint DIR] [--threads 1]

A live session hands the model the user's audio up to where the turn ended: 500 ms into
the silence with the timer, 320 ms at the VAD's stop, 200 ms where ``semantic_vad`` auto
is sure at its first ask. The LM learnt utterances followed by 0.25-0.9 s of silence. The
held-out dialogues of a corpus (but those under noise, which runs to the end of their
recordings: no silence to cut) run through the speak path (follow-ups keep their
context) with each question's own trailing silence cut and that much of a faint noise
floor put back, and each reply is judged from the model's own text: right (its key
words), and whether it is the same reply at every silence. Printed per silence: answers
right, and the turns whose reply changed with the silence.
"""

from __future__ import annotations

import argparse
import asyncio
from itertools import zip_longest
from pathlib import Path

import numpy as np
import torch

from parley.agent.core.model import AgentModel
from parley.agent.core.speak import SpeakPipeline
from parley.agent.runtime import default_checkpoint
from parley.config import load_config
from parley.evaluation.run_eval import load_heldout
from parley.evaluation.words import answer_heard
from parley.speech_io.audio import load_audio
from parley.train.lm_data import trim_silence

RATE = 16000


def ending(audio: np.ndarray, silence_ms: int) -> np.ndarray:
    """``audio`` cut at its last sound, then ``silence_ms`` of a microphone's noise floor."""
    said = trim_silence(audio, lead_s=1.0, tail_s=0.0)
    n = RATE * silence_ms // 1000
    floor = np.random.default_rng(n).standard_normal(n).astype(np.float32) * 3e-4
    return np.concatenate([said.astype(np.float32), floor])


async def replies(model: AgentModel, dialogues: list[dict], corpus: Path, silence_ms: int):
    """(turn, reply text) of every held-out turn, its question ending ``silence_ms`` in."""
    out = []
    for d in dialogues:
        pipeline = SpeakPipeline(model.checkpoint, model.engine, model.config.agent)
        try:
            for turn in d["turns"]:
                audio = ending(load_audio(corpus / turn["audio"], RATE), silence_ms)
                result = await pipeline.run_turn(audio)
                out.append((turn, result.text))
        finally:
            await pipeline.context.aclose()
    return out


async def run(args: argparse.Namespace) -> None:
    model = AgentModel.load(args.checkpoint or default_checkpoint(print), load_config("tiny"))
    quiet = [d for d in load_heldout(args.corpus) if not d.get("condition", "").startswith("noise")]
    by_condition: dict[str, list[dict]] = {}
    for d in quiet:
        by_condition.setdefault(d.get("condition", ""), []).append(d)
    dealt = [d for group in zip_longest(*by_condition.values()) for d in group if d]
    dialogues = dealt[: args.limit]
    got = {}
    try:
        for ms in args.silence_ms:
            got[ms] = await replies(model, dialogues, Path(args.corpus), ms)
            right = sum(answer_heard(turn, text) for turn, text in got[ms])
            print(f"{ms:4d} ms of silence: {right}/{len(got[ms])} answers right", flush=True)
    finally:
        await model.aclose()
    first, *rest = args.silence_ms
    for ms in rest:
        changed = [
            (turn, a, b) for (turn, a), (_, b) in zip(got[first], got[ms], strict=True) if a != b
        ]
        print(f"replies that differ between {first} and {ms} ms: {len(changed)}")
        for turn, a, b in changed:
            print(f"    {turn.get('question')!r}: {a!r} / {b!r}")


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--checkpoint", default=None)
    ap.add_argument("--corpus", type=Path, default=Path("data/corpus"))
    ap.add_argument("--limit", type=int, default=60, help="held-out dialogues (all: 0)")
    ap.add_argument("--silence-ms", type=int, nargs="+", default=[200, 320, 500])
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    args.limit = args.limit or None
    torch.set_num_threads(args.threads)
    asyncio.run(run(args))


if __name__ == "__main__":
    main()
