"""Many questions in one conversation: held-out dialogues asked one after another.

``eval`` asks every held-out dialogue in a fresh conversation; a user keeps talking. This
asks the first ``--n`` clean and held-out-voice dialogues of a corpus in a row, in one
conversation, once per ``--history`` setting (``schedule.history_turns``: how many earlier
turns the LM sees; ``all``: as many as fit), and counts the answers right in the model's own
text, apart for new questions and for follow-ups::

    python -m parley.evaluation.conversation_probe --checkpoint ckpt/talk4 \\
        --corpus data/train3/corpus --history 0 1 all
"""

from __future__ import annotations

import argparse
import asyncio
from pathlib import Path
from types import SimpleNamespace

import torch


def _history(text: str) -> int | None:
    return None if text == "all" else int(text)


async def _run(ckpt, engine, cfg, records, corpus: Path, history: int | None) -> tuple[int, ...]:
    from parley.agent.core.speak import SpeakPipeline
    from parley.evaluation.run_eval import with_endpoint_silence
    from parley.evaluation.words import answer_heard
    from parley.speech_io.audio import load_audio

    engine.schedule = engine.schedule.model_copy(update={"history_turns": history})
    rate = cfg.model.features.sample_rate
    right = [0, 0]
    asked = [0, 0]
    pipeline = SpeakPipeline(ckpt, engine, cfg.agent)
    try:
        for rec in records:
            for k, turn in enumerate(rec["turns"]):
                user = load_audio(corpus / turn["audio"], rate)
                result = await pipeline.run_turn(with_endpoint_silence(user, rate, cfg.agent))
                kind = 0 if k == 0 else 1
                asked[kind] += 1
                right[kind] += answer_heard(SimpleNamespace(**turn), result.text)
    finally:
        await pipeline.context.aclose()
    return right[0], asked[0], right[1], asked[1]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--checkpoint", type=Path, default=Path("configs/model"))
    parser.add_argument("--corpus", type=Path, default=Path("data/corpus"))
    parser.add_argument("--n", type=int, default=60, help="dialogues in the conversation")
    parser.add_argument("--history", nargs="+", default=["0", "1", "all"])
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    from parley.config import load_config
    from parley.llm.checkpoint import load_checkpoint
    from parley.llm.engines import create_engine
    from parley.train.corpus import read_manifest

    records = [r for r in read_manifest(args.corpus) if r["condition"] in ("clean", "voice")]
    ckpt = load_checkpoint(args.checkpoint)
    cfg = load_config("tiny")
    engine = create_engine(ckpt, cfg.engine)
    for text in args.history:
        fresh, n_fresh, follow, n_follow = asyncio.run(
            _run(ckpt, engine, cfg, records[: args.n], args.corpus, _history(text))
        )
        print(
            f"history {text}: new questions {fresh}/{n_fresh}, follow-ups {follow}/{n_follow}",
            flush=True,
        )


if __name__ == "__main__":
    main()
