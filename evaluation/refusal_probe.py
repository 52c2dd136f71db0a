"""Every held-out out-of-domain question in every held-out voice: a set for ``eval``.

A corpus's held-out set asks 14 out-of-domain questions, all in one held-out voice, so its
refusal figure moves 7 points a turn and cannot tell two models apart. This writes a
corpus directory of its own that asks each of the domain's held-out out-of-domain
sentences (``train/ood_sentences.txt``, every fifth line) once in each held-out voice,
unaugmented, each in a fresh conversation; ``eval`` judges it like any corpus::

    python -m parley.evaluation.refusal_probe --out data/ood-probe --corpus data/t15/corpus
    python run_agent.py eval --corpus data/ood-probe --out eval-ood

``--corpus`` (optional) lends the corpus's recording of the refusal in the agent's voice,
so the report can say how far the reply's speech is the voice's own.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
from dataclasses import asdict
from pathlib import Path

from parley.errors import ConfigError

CONDITION = "ood-probe"
# No augmentation but the silence a corpus puts around a question (it draws 0.1-0.3 s).
PLAN = {"pad_s": [0.2, 0.2]}


def probe_records() -> list[dict]:
    """One held-out dialogue per (held-out voice, held-out out-of-domain sentence)."""
    from parley.train.domain import ood_sentences, refusal_turn
    from parley.train.voices import available_voices

    voices = [v.name for v in available_voices() if v.split == "heldout"]
    if not voices:
        raise ConfigError("no held-out voice is installed here (see docs/training.md)")
    records = []
    for voice in voices:
        for i, sentence in enumerate(ood_sentences(heldout=True)):
            turn = asdict(refusal_turn(sentence))
            rid = f"ood-{voice}-{i:03d}"
            records.append(
                {
                    "id": rid,
                    "split": "heldout",
                    "condition": CONDITION,
                    "voice": voice,
                    "noise": None,
                    "turns": [{**turn, "audio": f"user/{rid}_0.wav", "augment": dict(PLAN)}],
                }
            )
    return records


def write_probe(out: Path, corpus: Path | None = None) -> list[dict]:
    """Render the probe's questions under ``out`` (kept where they exist) and write its
    manifest; returns its records."""
    from parley.train.corpus import answer_path, render_question

    out = Path(out)
    try:
        (out / "user").mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ConfigError(f"--out {out}: cannot write there ({exc.strerror})") from None
    records = probe_records()
    for rec in records:
        turn = rec["turns"][0]
        if not (out / turn["audio"]).is_file():
            render_question(rec["voice"], turn["question"], out, turn["audio"], turn["augment"])
    if corpus is not None:
        refusal = answer_path(records[0]["turns"][0]["answer"])
        if not (Path(corpus) / refusal).is_file():
            raise ConfigError(f"--corpus {corpus}: no recording of the refusal ({refusal})")
        (out / refusal).parent.mkdir(parents=True, exist_ok=True)
        if not (out / refusal).is_file():
            shutil.copyfile(Path(corpus) / refusal, out / refusal)
    tmp = out / f".manifest.{os.getpid()}.tmp"
    tmp.write_text("".join(json.dumps(r) + "\n" for r in records))
    os.replace(tmp, out / "manifest.jsonl")
    return records


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, default=Path("data/ood-probe"))
    parser.add_argument("--corpus", type=Path, default=None)
    args = parser.parse_args(argv)
    try:
        records = write_probe(args.out, args.corpus)
    except ConfigError as exc:
        raise SystemExit(f"error: {exc}") from None
    voices = sorted({r["voice"] for r in records})
    print(f"wrote {args.out / 'manifest.jsonl'}: {len(records)} questions in {', '.join(voices)}")


if __name__ == "__main__":
    main()
