"""Many conversations on one engine: the transformers engine against vLLM, same checkpoint.

    python benchmarks/bench_sessions.py [--preset tiny] [--sessions 1,2,4,8,16]
        [--reply-speech 150] [--repeats 3] [--engines transformers,vllm] [--turns 4]

For each number of concurrent sessions N, every session queues one user turn (adapter
embeddings) and all N replies run at once on the one engine. Printed per N, as medians
over ``--repeats`` rounds:

* aggregate tokens/s: all tokens of all replies / wall time of the round;
* per-session real-time factor: a reply's generation time / the audio its speech tokens
  make (below 1 means the reply is produced faster than it plays); median and worst.

Then, for vLLM, the cost of a follow-up turn after ``--turns`` turns: the conversation's
prefix-cache hit rate, and the median time to the first token of the follow-up against the
same prompt under a fresh ``cache_salt`` (nothing cached).

Both engines run greedy, float32, one torch thread for transformers; vLLM's CPU build
pins its inference thread to one core. The transformers engine runs one forward at a time
(one model, one lock), so its aggregate stays flat; vLLM batches the N decode steps.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

from parley.agent.preflight import need_vllm
from parley.config import EngineConfig, load_config
from parley.errors import EngineUnavailableError
from parley.llm.builder import build_checkpoint
from parley.llm.checkpoint import load_checkpoint
from parley.llm.engine import ReplyParams
from parley.llm.engines import create_engine
from parley.llm.prompt_context import Sampling

VLLM = dict(dtype="float32", eager=True, kv_cache_mb=1024, block_size=32, max_model_len=8192)


async def _one_reply(engine, audio: torch.Tensor, params: ReplyParams) -> tuple[int, int, float]:
    ctx = engine.open_context()
    ctx.add_user_audio(audio)
    t0 = time.perf_counter()
    tokens = speech = 0
    try:
        async for d in ctx.reply(params):
            tokens += 1
            speech += d.kind.name == "SPEECH"
    finally:
        await ctx.aclose()
    return tokens, speech, time.perf_counter() - t0


async def _round(engine, n: int, audio: list[torch.Tensor], params: ReplyParams, token_hz: float):
    t0 = time.perf_counter()
    results = await asyncio.gather(*(_one_reply(engine, audio[i], params) for i in range(n)))
    wall = time.perf_counter() - t0
    total = sum(r[0] for r in results)
    rtf = [r[2] / (r[1] / token_hz) for r in results]
    return total / wall, statistics.median(rtf), max(rtf)


async def _curve(engine, sessions, audio, params, token_hz, repeats):
    await _round(engine, 1, audio, params, token_hz)  # warm-up
    rows = {}
    for n in sessions:
        runs = [await _round(engine, n, audio, params, token_hz) for _ in range(repeats)]
        rows[n] = tuple(statistics.median(r[i] for r in runs) for i in range(3))
        tps, rtf, worst = rows[n]
        print(
            f"  N={n:>2}: {tps:8.0f} tokens/s  RTF median {rtf:.3f}  worst {worst:.3f}", flush=True
        )
    return rows


async def _first_token_s(engine, prompt: torch.Tensor, salt: str | None) -> float:
    t0 = time.perf_counter()
    stream = engine.stream(
        f"ttft-{time.perf_counter_ns()}", prompt, Sampling(max_tokens=1, cache_salt=salt)
    )
    async for _ in stream:
        break
    await stream.aclose()
    return time.perf_counter() - t0


async def _follow_up(engine, audio, params, turns: int, repeats: int) -> None:
    ctx = engine.open_context()
    for i in range(turns):
        ctx.add_user_audio(audio[i % len(audio)])
        async for _ in ctx.reply(params):
            pass
        await ctx.wait_primed()  # the reply would still be playing: priming has time
    ctx.add_user_audio(audio[turns % len(audio)])
    async for _ in ctx.reply(params):
        pass
    stats = ctx.stats
    prompt = ctx.last_prompt()
    cached = [await _first_token_s(engine, prompt, None) for _ in range(repeats)]
    fresh = [await _first_token_s(engine, prompt, f"salt-{r}") for r in range(repeats)]
    await ctx.aclose()
    c, f = statistics.median(cached), statistics.median(fresh)
    print(
        f"  follow-up after {turns} turns: prompt {stats.last_prompt} positions, "
        f"{stats.last_cached} cached ({stats.last_cached / stats.last_prompt:.0%})"
    )
    print(f"  conversation hit rate over {stats.requests} replies: {stats.hit_rate:.0%}")
    print(
        f"  first token: cached {c * 1000:.1f} ms, nothing cached {f * 1000:.1f} ms, ratio {c / f:.3f}"
    )


async def _run_engine(name, path, cfg, args, audio, params, token_hz):
    extra = VLLM if name == "vllm" else {"threads": 1}
    engine_cfg = EngineConfig(name=name, **extra)
    ckpt = load_checkpoint(path, lm_weights=name == "transformers")
    t0 = time.perf_counter()
    engine = create_engine(ckpt, engine_cfg)
    print(f"{name}: ready in {time.perf_counter() - t0:.1f} s", flush=True)
    try:
        rows = await _curve(engine, args.sessions, audio, params, token_hz, args.repeats)
        if name == "vllm":
            await _follow_up(engine, audio, params, args.turns, args.repeats)
    finally:
        await engine.aclose()
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--preset", default="tiny")
    ap.add_argument("--sessions", default="1,2,4,8,16")
    ap.add_argument("--engines", default="transformers,vllm")
    ap.add_argument("--audio-positions", type=int, default=75, help="LM positions per user turn")
    ap.add_argument("--reply-speech", type=int, default=150, help="speech tokens per reply")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--turns", type=int, default=4, help="turns before the follow-up (vLLM)")
    args = ap.parse_args()
    args.sessions = [int(n) for n in args.sessions.split(",")]
    if "vllm" in args.engines.split(","):
        try:
            need_vllm("--engines vllm")
        except EngineUnavailableError as exc:
            # Before the transformers half runs: minutes spent, then a traceback, otherwise.
            print(f"error: {exc} (or measure one engine: --engines transformers)", file=sys.stderr)
            sys.exit(2)
    torch.set_num_threads(1)

    cfg = load_config(args.preset)
    token_hz = cfg.model.codec.token_rate_hz
    params = ReplyParams(min_speech_tokens=args.reply_speech, max_speech_tokens=args.reply_speech)
    gen = torch.Generator().manual_seed(0)
    audio = [
        torch.randn(args.audio_positions, cfg.model.lm.hidden, generator=gen) * 0.02
        for _ in range(max(args.sessions))
    ]
    results = {}
    with tempfile.TemporaryDirectory(prefix="parley-bench-") as tmp:
        path = build_checkpoint(Path(tmp) / "ckpt", cfg.model, seed=0)
        print(
            f"preset {args.preset}: LM hidden {cfg.model.lm.hidden} x {cfg.model.lm.layers} layers; "
            f"replies of {args.reply_speech} speech tokens ({args.reply_speech / token_hz:.1f} s audio)"
        )
        for name in args.engines.split(","):
            results[name] = asyncio.run(_run_engine(name, path, cfg, args, audio, params, token_hz))
            gc.collect()
    if {"transformers", "vllm"} <= results.keys():
        print("vLLM / transformers aggregate tokens/s:")
        for n in args.sessions:
            print(f"  N={n:>2}: {results['vllm'][n][0] / results['transformers'][n][0]:.2f}x")


if __name__ == "__main__":
    main()
