"""How well the codec keeps the agent's words: Whisper on original vs resynthesized joe.

For each held-out sentence (never in codec training): faster-whisper tiny.en transcribes
Piper's audio and the vocoder's reconstruction from its unit ids; both are scored with word
accuracy against the text, and every number in the text is checked one by one (a number
counts only when heard as that number: "sixteen" is not "sixty"), and so is every day and
month name (the sequence replies end on one). Also the vocoder's
real-time factor on one thread (streamed in the agent's chunks) and its first-audio tokens.

    python -m parley.evaluation.codec_eval --codec data/codec/run/vocoder --cache data/codec --n 100
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch

from parley.evaluation.words import _tokens, key_heard, normalize, spell_number, word_accuracy
from parley.tokenizers.unit_tokenizer import UnitTokenizer
from parley.tokenizers.vocoder import StreamingVocoder, TokenVocoder, first_audio_tokens

__all__ = [
    "CodecReport",
    "evaluate_codec",
    "heldout_utterances",
    "names_in",
    "numbers_in",
    "vocoder_rtf",
]


def numbers_in(text: str) -> list[str]:
    """The numbers ``text`` says, each spelled out: "six times eight is forty eight" ->
    ["six", "eight", "forty eight"]."""
    return [
        spell_number(int(t[1:]))
        for t in _tokens(normalize(text).split())
        if t[1:].isdigit() and t[0] == "#"
    ]


def names_in(text: str) -> list[str]:
    """The day and month names ``text`` says: the last word of every sequence reply, and
    the words the codec garbled most ("january" heard as "ten you worry")."""
    from parley.train.domain import DAYS, MONTHS

    return [w for w in normalize(text).split() if w in DAYS or w in MONTHS]


@dataclass
class CodecReport:
    """Intelligibility of original and resynthesized audio, and the vocoder's speed."""

    sentences: int
    accuracy_original: float
    """Mean word accuracy (1 - WER, floored at 0) of Whisper on Piper's audio."""
    accuracy_resynth: float
    """The same on the vocoder's audio from the unit ids of Piper's audio."""
    numbers: int
    number_errors_original: int
    number_errors_resynth: int
    vocoder_params: int
    rtf: float
    """Median compute time / audio time, streamed on one thread."""
    first_audio_tokens: int
    token_rate_hz: float
    names: int = 0
    """Day and month names in the sentences."""
    name_errors_original: int = 0
    name_errors_resynth: int = 0
    examples: list[dict] = field(default_factory=list)
    """Sentences whose resynthesis Whisper heard worse than the original."""
    kind: str = "held-out sentences"
    """What was judged: sentences codec training never used, or the agent's replies."""

    def summary(self) -> str:
        """One paragraph for logs."""
        return (
            f"{self.sentences} {self.kind}: word accuracy original {self.accuracy_original:.3f}, "
            f"resynthesized {self.accuracy_resynth:.3f} "
            f"(gap {self.accuracy_original - self.accuracy_resynth:+.3f}); numbers wrong "
            f"{self.number_errors_original}/{self.numbers} original, "
            f"{self.number_errors_resynth}/{self.numbers} resynthesized; day and month names "
            f"wrong {self.name_errors_original}/{self.names} original, "
            f"{self.name_errors_resynth}/{self.names} resynthesized; vocoder "
            f"{self.vocoder_params / 1e6:.2f} M params, RTF {self.rtf:.3f} (1 thread), first audio "
            f"after {self.first_audio_tokens} tokens ({self.first_audio_tokens / self.token_rate_hz * 1000:.0f} ms)"
        )


def resynthesize(vocoder: TokenVocoder, tokenizer: UnitTokenizer, audio: np.ndarray) -> np.ndarray:
    """The vocoder's audio for the unit ids of ``audio``."""
    with torch.inference_mode():
        return vocoder(tokenizer.encode(audio)).numpy()


def vocoder_rtf(
    vocoder: TokenVocoder, seconds: float = 10.0, chunk: int = 4, repeats: int = 3
) -> float:
    """Median real-time factor of streaming ``seconds`` of random ids in ``chunk``-token pushes
    (set the thread count before calling)."""
    cfg = vocoder.cfg
    ids = torch.randint(0, cfg.codebook_size, (round(seconds * cfg.token_rate_hz),),
                        generator=torch.Generator().manual_seed(0))  # fmt: skip
    stream = StreamingVocoder(vocoder)
    stream.push(ids[:chunk])  # warm-up
    times = []
    for _ in range(repeats):
        stream.reset()
        t0 = time.perf_counter()
        for lo in range(0, ids.numel(), chunk):
            stream.push(ids[lo : lo + chunk])
        stream.flush()
        times.append((time.perf_counter() - t0) / seconds)
    return statistics.median(times)


def evaluate_codec(
    vocoder: TokenVocoder,
    tokenizer: UnitTokenizer,
    utterances: Sequence[tuple[str, np.ndarray]],
    judge: object | None = None,
    log=print,
) -> CodecReport:
    """Judge ``(text, audio)`` pairs (16 kHz joe audio) before and after the codec."""
    if judge is None:
        from parley.evaluation.judge import WhisperJudge

        judge = WhisperJudge()
    tally = _Tally()
    for i, (text, audio) in enumerate(utterances):
        heard_o = judge.transcribe(audio)  # type: ignore[attr-defined]
        heard_r = judge.transcribe(resynthesize(vocoder, tokenizer, audio))  # type: ignore[attr-defined]
        tally.add(text, heard_o, heard_r)
        if (i + 1) % 25 == 0:
            log(
                f"codec eval: {i + 1}/{len(utterances)}: "
                f"{np.mean(tally.acc_o):.3f} vs {np.mean(tally.acc_r):.3f}"
            )
    cfg = vocoder.cfg
    return CodecReport(
        sentences=len(utterances),
        accuracy_original=round(float(np.mean(tally.acc_o)), 4),
        accuracy_resynth=round(float(np.mean(tally.acc_r)), 4),
        numbers=tally.numbers,
        number_errors_original=tally.wrong_o,
        number_errors_resynth=tally.wrong_r,
        names=tally.names,
        name_errors_original=tally.names_o,
        name_errors_resynth=tally.names_r,
        vocoder_params=sum(p.numel() for p in vocoder.parameters()),
        rtf=round(vocoder_rtf(vocoder), 4),
        first_audio_tokens=first_audio_tokens(cfg),
        token_rate_hz=cfg.token_rate_hz,
        examples=tally.examples,
    )


@dataclass
class _Tally:
    """Running totals of :func:`evaluate_codec`: ``_o`` of the original audio, ``_r`` of
    the resynthesis."""

    acc_o: list[float] = field(default_factory=list)
    acc_r: list[float] = field(default_factory=list)
    numbers: int = 0
    wrong_o: int = 0
    wrong_r: int = 0
    names: int = 0
    names_o: int = 0
    names_r: int = 0
    examples: list[dict] = field(default_factory=list)

    def add(self, text: str, heard_o: str, heard_r: str) -> None:
        """Score one sentence as heard in both; kept as an example where the codec lost
        something the original had."""
        a_o, a_r = word_accuracy(text, heard_o), word_accuracy(text, heard_r)
        self.acc_o.append(a_o)
        self.acc_r.append(a_r)
        nums = numbers_in(text)
        miss_o = [n for n in nums if not key_heard(n, heard_o)]
        miss_r = [n for n in nums if not key_heard(n, heard_r)]
        self.numbers += len(nums)
        self.wrong_o += len(miss_o)
        self.wrong_r += len(miss_r)
        names = names_in(text)
        lost_o = [w for w in names if not key_heard(w, heard_o)]
        lost_r = [w for w in names if not key_heard(w, heard_r)]
        self.names += len(names)
        self.names_o += len(lost_o)
        self.names_r += len(lost_r)
        if a_r < a_o or len(miss_r) > len(miss_o) or len(lost_r) > len(lost_o):
            self.examples.append(
                {
                    "text": text,
                    "original": heard_o,
                    "resynth": heard_r,
                    "numbers_missed": miss_r,
                    "names_missed": lost_r,
                }
            )


def heldout_utterances(
    cache: Path, n: int | None = None, texts: Sequence[str] | None = None
) -> list[tuple[str, np.ndarray]]:
    """``n`` held-out sentences of ``texts`` (default: every codec text), spread over the
    list, with their cached joe audio (synthesized into ``cache`` if missing)."""
    from parley.train.codec_data import codec_texts, is_heldout, prepare_corpus

    # The whole list, as training cached it (shards follow the list), then the held-out part.
    held = [
        (u.text, u.audio)
        for u in prepare_corpus(Path(cache), texts or codec_texts(), None)
        if is_heldout(u.text)
    ]
    if n is not None and n < len(held):
        held = [held[round(i * len(held) / n)] for i in range(n)]
    return held


def reply_utterances(per_family: int) -> list[tuple[str, np.ndarray]]:
    """Up to ``per_family`` of the agent's own replies of each family (sums, numbers, days,
    months, the fixed replies), spread over each, in joe's voice: what the vocoder was
    trained to say and every user hears, rather than sentences it never saw."""
    from parley.train.codec_data import agent_speech
    from parley.train.domain import ANSWER_FAMILIES, all_answers, answer_family

    chosen: list[str] = []
    for family in ANSWER_FAMILIES:
        texts = [a for a in all_answers() if answer_family(a) == family]
        step = max(len(texts) / per_family, 1.0)
        chosen += [texts[int(i * step)] for i in range(min(per_family, len(texts)))]
    return [(t, agent_speech(t)) for t in chosen]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Intelligibility and speed of a trained codec.")
    parser.add_argument("--codec", type=Path, required=True, help="a codec part (vocoder/) dir")
    parser.add_argument("--cache", type=Path, default=Path("data/codec"), help="audio cache")
    parser.add_argument("--n", type=int, default=100, help="held-out sentences")
    parser.add_argument(
        "--replies", type=int, default=0, metavar="N",
        help="judge up to N of the agent's replies per family instead of held-out sentences",
    )  # fmt: skip
    parser.add_argument("--json", type=Path, default=None, help="write the report here")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    from parley.tokenizers.codec_io import load_codec
    from parley.train.codec_train import UNIT_FEATURES, default_unit_encoder

    vocoder, tokenizer, _ = load_codec(
        args.codec, encoder=default_unit_encoder(), features=UNIT_FEATURES
    )
    assert isinstance(tokenizer, UnitTokenizer)
    utterances = (
        reply_utterances(args.replies) if args.replies else heldout_utterances(args.cache, args.n)
    )
    report = evaluate_codec(vocoder, tokenizer, utterances)
    if args.replies:
        report.kind = "of the agent's replies"
    print(report.summary())
    if args.json:
        args.json.write_text(json.dumps(asdict(report), indent=2) + "\n")


if __name__ == "__main__":
    main()
