"""Streaming encoder: per-block cost at the start of a stream vs after minutes of audio.

Streams random mel, one block (``2 * block_frames`` mel frames) per push, through a
:class:`~parley.llm.encoder.StreamingEncoder` with random weights from a preset, and prints the
median push time over the first blocks and over the same number of blocks after ``--minutes``
of audio, and their ratio (goal: <= 1.1, i.e. the cost does not grow with stream length).

    python benchmarks/bench_encoder.py --preset tiny --minutes 5 --repeats 3
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from parley.config import load_config
from parley.llm.encoder import BlockCausalEncoder, StreamingEncoder

MEL_FRAMES_PER_SECOND = 100


def _block_times(
    stream: StreamingEncoder, n_mels: int, minutes: float, blocks: int
) -> tuple[list[float], list[float]]:
    """Seconds per block for the first ``blocks`` blocks and for ``blocks`` after ``minutes``."""
    model = stream.model
    step = 2 * model.block_frames
    # Block k needs one mel frame past its own; priming with that one frame makes every
    # later push of ``step`` frames complete exactly one block.
    stream.push(torch.randn(n_mels, 1))
    later_start = round(minutes * 60 * MEL_FRAMES_PER_SECOND / step)
    mel = torch.randn(n_mels, step)  # content does not change the cost
    early, late = [], []
    for k in range(later_start + blocks):
        t0 = time.perf_counter()
        out = stream.push(mel)
        dt = time.perf_counter() - t0
        assert out.shape[0] == model.block_frames
        if k < blocks:
            early.append(dt)
        elif k >= later_start:
            late.append(dt)
    return early, late


def main(argv: list[str] | None = None) -> None:
    """Parse arguments, run the measurement ``--repeats`` times, print medians and ratios."""
    parser = argparse.ArgumentParser(
        description="Streaming encoder per-block cost over a long stream."
    )
    parser.add_argument("--preset", choices=["tiny", "base"], default="tiny")
    parser.add_argument("--minutes", type=float, default=5.0, help="audio before the late window")
    parser.add_argument("--blocks", type=int, default=20, help="blocks per measured window")
    parser.add_argument("--repeats", type=int, default=3, help="fresh streams to measure")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    args = parser.parse_args(argv)

    torch.set_num_threads(args.threads)
    cfg = load_config(args.preset).model
    n_mels = cfg.features.n_mels
    model = BlockCausalEncoder.from_config(cfg.encoder, n_mels)
    stream = StreamingEncoder(model)
    e = cfg.encoder
    block_ms = 1000 * e.block_frames / 50
    print(
        f"preset {args.preset}: d_model {e.d_model}, {e.layers} layers, block {e.block_frames} "
        f"frames ({block_ms:.0f} ms), window {e.context_blocks} blocks, {args.threads} thread(s)"
    )
    # Warm up (allocator, kernels) on a throwaway stream longer than one window, so the
    # first measured block is not paying one-off costs.
    with stream.streaming():
        for _ in range(e.context_blocks + 5):
            stream.push(torch.randn(n_mels, 2 * e.block_frames))

    ratios = []
    for r in range(args.repeats):
        with stream.streaming():
            early, late = _block_times(stream, n_mels, args.minutes, args.blocks)
        m0, m1 = statistics.median(early), statistics.median(late)
        ratios.append(m1 / m0)
        print(
            f"run {r + 1}: first {args.blocks} blocks median {m0 * 1e3:.3f} ms, "
            f"after {args.minutes:g} min median {m1 * 1e3:.3f} ms, ratio {m1 / m0:.3f} "
            f"(real-time factor {m1 * 1e3 / block_ms:.3f})"
        )
    verdict = "ok" if statistics.median(ratios) <= 1.1 else "ABOVE GOAL"
    print(
        f"median ratio over {args.repeats} runs: {statistics.median(ratios):.3f} (goal <= 1.1: {verdict})"
    )


if __name__ == "__main__":
    main()
