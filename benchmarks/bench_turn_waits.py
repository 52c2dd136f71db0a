"""How long each turn detection waits after finished speech the detector never learnt.

    python benchmarks/bench_turn_waits.py [--checkpoint DIR] [--out DIR] [--threads 1]

The end-of-turn detector learnt the model's domain; what it makes of other speech is the
risk of letting it end turns. Every held-out out-of-domain sentence of the corpus (the
refusal probe's 37) in every held-out voice, and a few bare commands and replies, each
said once and followed by silence, go through a duplex session in virtual time under
each turn detection: the silence timer, ``semantic_vad`` auto (the default) and medium.
Printed per setting: how many turns ended at the VAD's stop or sooner (~320 ms), by the
500 ms endpoint, later; the median, p95 and max wait; and utterances split into two
turns (a pause inside taken for the end). The questions are rendered once into ``--out``.
"""

from __future__ import annotations

import argparse
import asyncio
from pathlib import Path

import torch

from parley.agent.core.model import AgentModel
from parley.agent.harness.metrics import _dist, turn_wait_ms
from parley.agent.harness.runner import run_scenario
from parley.agent.harness.scenario import ReplyBounds, Scenario, Step
from parley.agent.runtime import default_checkpoint
from parley.config import load_config
from parley.speech_io.audio import SAMPLE_RATE as SR

# Finished on their own, and not questions of the domain: what a user says to stop or
# answer the agent.
COMMANDS = (
    "stop",
    "stop please",
    "wait",
    "hold on",
    "never mind",
    "no",
    "yes please",
    "okay that is all",
)
SETTINGS = {
    "server_vad": {"turn_detection": "server_vad"},
    "semantic_vad auto": {"turn_detection": "semantic_vad", "eagerness": "auto"},
    "semantic_vad medium": {"turn_detection": "semantic_vad", "eagerness": "medium"},
}
LEAD_S = 0.3


def utterances(out: Path) -> list[tuple[str, Path]]:
    """(label, wav) of every sentence in every held-out voice, rendered where missing."""
    from parley.train.corpus import render_question
    from parley.train.domain import ood_sentences
    from parley.train.voices import available_voices

    voices = [v.name for v in available_voices() if v.split == "heldout"]
    plan = {"pad_s": [0.0, 0.0]}
    found = []
    for voice in voices:
        for kind, sentences in (("ood", ood_sentences(heldout=True)), ("command", COMMANDS)):
            for i, text in enumerate(sentences):
                path = f"{voice}/{kind}-{i:03d}.wav"
                if not (out / path).is_file():
                    render_question(voice, text, out, path, plan)
                found.append((f"{kind} {voice}: {text}", out / path))
    return found


async def waits(model: AgentModel, wav: Path, settings: dict) -> list[float]:
    """The silence (ms) each turn of one utterance waited before it was called over."""
    scenario = Scenario(
        name="turn-wait",
        timeline=[Step(at=LEAD_S, wav=str(wav))],  # then the harness's 3 s of silence
        reply=ReplyBounds(max_s=0.5),
    )
    base = model.config.agent.model_copy(update=settings)
    record = await run_scenario(model, scenario, base)
    ended = [turn_wait_ms(e, SR) for e in record.events if e["type"] == "user_turn_ended"]
    return [w for w in ended if w is not None]  # the session always says


async def run(args: argparse.Namespace) -> None:
    cfg = load_config("tiny")
    model = AgentModel.load(args.checkpoint or default_checkpoint(print), cfg)
    if model.turn_detector is None:
        raise SystemExit("this checkpoint has no end-of-turn detector: nothing to compare")
    found = utterances(Path(args.out))
    print(f"{len(found)} utterances; waits in ms of silence after the speech")
    for name, settings in SETTINGS.items():
        firsts, split, unanswered, slow = [], 0, 0, []
        for label, path in found:
            got = await waits(model, path, settings)
            if not got:
                unanswered += 1
                continue
            split += len(got) > 1
            firsts.append(got[-1])
            if got[-1] > 520:
                slow.append(f"{got[-1]:.0f} ms  {label}")
        stop = sum(w <= 330 for w in firsts)
        endpoint = sum(330 < w <= 520 for w in firsts)
        d = _dist(firsts)
        print(
            f"{name:<20} at the stop {stop:3d}  by the endpoint {endpoint:3d}  later "
            f"{len(firsts) - stop - endpoint:3d}  | median {d['p50']:5.0f}  "
            f"p95 {d['p95']:5.0f}  max {d['max']:5.0f}  | split {split}  "
            f"no turn {unanswered}"
        )
        for line in slow:
            print(f"    {line}")
    await model.aclose()


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--checkpoint", default=None)
    ap.add_argument("--out", default="data/turn-waits", help="where the utterances are kept")
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    asyncio.run(run(args))


if __name__ == "__main__":
    main()
