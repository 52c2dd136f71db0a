"""LM engine figures: decode tokens/s, and a follow-up turn with cached context vs re-prefill.

    python benchmarks/bench_lm.py [--preset tiny] [--turns 4] [--repeats 5] [--threads 1]

The follow-up figure is the time to the first reply token of turn ``--turns + 1``: with the
conversation's KV cache kept (only the new turn is prefilled) against a fresh context that
prefills the whole history. Goal: ratio <= 0.3. Prints medians over ``--repeats`` runs.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time

import torch
from transformers import DynamicCache

from parley.config import EngineConfig, load_config
from parley.llm.engine import ReplyParams
from parley.llm.lm_build import layout_of, random_lm
from parley.llm.transformers_engine import TransformersSpokenLM


async def _reply(ctx, params):
    tokens = []
    async for d in ctx.reply(params):
        tokens.append(d.token_id)
    return tokens


def _parse_args() -> argparse.Namespace:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--preset", default="tiny")
    ap.add_argument("--turns", type=int, default=4, help="earlier turns in the history")
    ap.add_argument("--audio-positions", type=int, default=75, help="LM positions per user turn")
    ap.add_argument("--reply-speech", type=int, default=150, help="speech tokens per reply")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--threads", type=int, default=1)
    return ap.parse_args()


def main() -> None:
    args = _parse_args()
    torch.set_num_threads(args.threads)

    cfg = load_config(args.preset)
    model, tok = random_lm(cfg.model.lm, cfg.model.codec.codebook_size, seed=0)
    layout = layout_of(model, tok, cfg.model.codec.codebook_size)
    engine = TransformersSpokenLM(model, layout, cfg.model.schedule, EngineConfig())
    params = ReplyParams(min_speech_tokens=args.reply_speech, max_speech_tokens=args.reply_speech)
    gen = torch.Generator().manual_seed(0)

    def user_audio() -> torch.Tensor:
        return torch.randn(args.audio_positions, engine.hidden_size, generator=gen) * 0.02

    decode_rates, cached, full = [], [], []
    for _ in range(args.repeats):
        ctx = engine.open_context()
        history: list[torch.Tensor] = []
        for _turn in range(args.turns):
            a = user_audio()
            ctx.add_user_audio(a)
            t0 = time.perf_counter()
            reply = asyncio.run(_reply(ctx, params))
            decode_rates.append(len(reply) / (time.perf_counter() - t0))
            history += [engine.embed_ids([layout.user]), a, engine.embed_ids([layout.assistant])]
            history.append(engine.embed_ids(reply))
        new = user_audio()

        # Cached: the context holds the history; only the new turn is prefilled.
        ctx.add_user_audio(new)
        stream = ctx.reply(params)
        t0 = time.perf_counter()
        asyncio.run(anext(stream))
        cached.append(time.perf_counter() - t0)
        asyncio.run(stream.aclose())

        # Full re-prefill: the same history and new turn, from an empty cache.
        whole = torch.cat(
            history + [engine.embed_ids([layout.user]), new, engine.embed_ids([layout.assistant])]
        )
        t0 = time.perf_counter()
        engine.forward(whole, DynamicCache(config=model.config))
        full.append(time.perf_counter() - t0)

    positions = sum(h.shape[0] for h in history) + args.audio_positions + 2
    c, f = statistics.median(cached), statistics.median(full)
    print(
        f"preset {args.preset}: LM hidden {cfg.model.lm.hidden} x {cfg.model.lm.layers} layers, {args.threads} thread(s)"
    )
    print(f"decode: median {statistics.median(decode_rates):.1f} tokens/s")
    print(f"follow-up turn after {args.turns} turns ({positions} positions of context):")
    print(f"  cached context: median {c * 1000:.1f} ms to first token")
    print(f"  full re-prefill: median {f * 1000:.1f} ms")
    print(f"  ratio cached/full: {c / f:.3f} (goal <= 0.3)")


if __name__ == "__main__":
    main()
