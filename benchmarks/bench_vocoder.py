"""Streaming vocoder speed: real-time factor and time to first audio, on one CPU thread.

    python benchmarks/bench_vocoder.py --preset tiny --repeats 5
    python -m benchmarks.bench_vocoder --preset base

Each run streams ``--seconds`` of random speech tokens in chunks of ``--chunk`` tokens (the
agent's vocoder_chunk_tokens) through a fresh stream and times every push and the flush.
Real-time factor = compute time / audio duration (goal: <= 0.2). Time to first audio is
the compute time from the stream's start until a push first returns samples, and how many
tokens had been pushed by then.
"""

from __future__ import annotations

import argparse
import importlib.util
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch

# Run as a plain script from a checkout, the repository root is not on sys.path.
if importlib.util.find_spec("parley") is None:
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from parley.config import load_config  # noqa: E402
from parley.tokenizers.vocoder import StreamingVocoder, TokenVocoder  # noqa: E402

RTF_GOAL = 0.2


def run_once(stream: StreamingVocoder, ids: torch.Tensor, chunk: int) -> tuple[float, float, int]:
    """One stream: (compute seconds, seconds to first audio, tokens pushed by first audio)."""
    stream.reset()
    compute, first_s, first_tokens = 0.0, float("nan"), 0
    samples = 0
    for start in range(0, len(ids), chunk):
        t0 = time.perf_counter()
        audio = stream.push(ids[start : start + chunk])
        compute += time.perf_counter() - t0
        if audio.size and not first_tokens:
            first_s, first_tokens = compute, stream.tokens_pushed
        samples += audio.size
    t0 = time.perf_counter()
    samples += stream.flush().size
    compute += time.perf_counter() - t0
    assert samples == len(ids) * stream.vocoder.cfg.samples_per_token
    return compute, first_s, first_tokens


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--preset", default="tiny", help="config preset name or YAML path")
    parser.add_argument("--repeats", type=int, default=5, help="timed runs (median reported)")
    parser.add_argument("--seconds", type=float, default=20.0, help="audio per run")
    parser.add_argument("--chunk", type=int, default=4, help="tokens per push")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)

    torch.set_num_threads(args.threads)
    cfg = load_config(args.preset).model.codec
    vocoder = TokenVocoder(cfg, seed=args.seed).eval()
    stream = StreamingVocoder(vocoder)
    n_tokens = round(args.seconds * cfg.token_rate_hz)
    gen = torch.Generator().manual_seed(args.seed)
    ids = torch.randint(0, cfg.codebook_size, (n_tokens,), generator=gen)
    duration = n_tokens * cfg.samples_per_token / cfg.sample_rate

    run_once(stream, ids[: 4 * args.chunk], args.chunk)  # warm-up: allocator, kernels
    runs = [run_once(stream, ids, args.chunk) for _ in range(max(1, args.repeats))]
    rtfs = [compute / duration for compute, _, _ in runs]
    firsts_ms = [first * 1e3 for _, first, _ in runs]
    first_tokens = statistics.median(tokens for _, _, tokens in runs)

    print(
        f"preset {args.preset}: dim {cfg.dim}, {cfg.layers} layers, lookahead {cfg.lookahead}, "
        f"{cfg.token_rate_hz:g} tokens/s at {cfg.sample_rate} Hz; {args.threads} thread(s)"
    )
    print(
        f"{n_tokens} tokens ({duration:.1f} s) in chunks of {args.chunk}, "
        f"{len(runs)} runs (+1 warm-up)"
    )
    verdict = "ok" if statistics.median(rtfs) <= RTF_GOAL else "ABOVE GOAL"
    print(
        f"real-time factor: median {statistics.median(rtfs):.4f} "
        f"(min {min(rtfs):.4f}, max {max(rtfs):.4f}; goal <= {RTF_GOAL}: {verdict})"
    )
    print(f"                  = {1 / statistics.median(rtfs):.0f}x faster than real time")
    print(
        f"time to first audio: median {statistics.median(firsts_ms):.2f} ms compute, "
        f"after {first_tokens:g} tokens pushed "
        f"({first_tokens / cfg.token_rate_hz * 1e3:.0f} ms of token time)"
    )
    per_push_ms = np.median(rtfs) * duration / (n_tokens / args.chunk) * 1e3
    print(f"per push of {args.chunk} tokens: {per_push_ms:.3f} ms")


if __name__ == "__main__":
    main()
