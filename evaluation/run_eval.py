"""``run_agent.py eval``: the model answers the held-out spoken questions; judges listen.

For each held-out dialogue of the corpus a fresh conversation runs every turn through the
whole speak path (the user's wav in, the reply's text and audio out; a follow-up keeps
the conversation's context). The reply is then judged three ways: from the model's own
text tokens, and from its audio by Whisper and by pocketsphinx (grammar + LM agreement).
Writes ``OUT/report.md``, ``OUT/results.json`` (one record per turn) and every reply's
audio as ``OUT/audio/ID_k.wav``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from itertools import zip_longest
from pathlib import Path

import numpy as np

from parley.errors import ParleyError
from parley.evaluation.judge import SphinxJudge, WhisperJudge
from parley.evaluation.report import summarize, write_report
from parley.evaluation.words import answer_heard, normalize, word_accuracy

__all__ = ["CorpusError", "EvalJudges", "load_heldout", "run"]

Log = Callable[[str], None]
JUDGE_RATE = 16000
SPEECH_MIN_S = 0.2  # silero speech a reply needs to count as spoken


class CorpusError(ParleyError):
    """The corpus directory or its manifest is missing or malformed."""


def load_heldout(corpus: Path, limit: int | None = None) -> list[dict]:
    """The held-out dialogues of ``corpus/manifest.jsonl``.

    With ``limit``, the first ``limit`` taken round-robin over the conditions, so every
    condition is represented in a short run.
    """
    corpus = Path(corpus)
    manifest = corpus / "manifest.jsonl"
    if not corpus.is_dir():
        raise CorpusError(
            f"corpus directory not found: {corpus} (build one: run_agent.py make-corpus --out DIR)"
        )
    if not manifest.is_file():
        raise CorpusError(f"{manifest}: not found; is {corpus} a corpus directory?")
    dialogues = []
    for n, line in enumerate(manifest.read_text().splitlines(), 1):
        if not line.strip():
            continue
        try:
            d = json.loads(line)
            turns = d["turns"]
            if not turns or any(not {"key", "answer", "audio"} <= set(t) for t in turns):
                raise KeyError("turns")
        except (json.JSONDecodeError, KeyError, TypeError) as exc:
            raise CorpusError(f"{manifest}:{n}: not a dialogue record ({exc})") from None
        if d.get("split") == "heldout":
            dialogues.append(d)
    if not dialogues:
        raise CorpusError(f"{manifest}: no held-out dialogues (split == 'heldout')")
    missing = [
        t["audio"] for d in dialogues for t in d["turns"] if not (corpus / t["audio"]).is_file()
    ]
    if missing:
        raise CorpusError(
            f"{corpus}: {len(missing)} held-out user wav(s) missing, e.g. {missing[0]}; "
            "finish the corpus (make-corpus resumes)"
        )
    if limit is not None:
        by_condition: dict[str, list[dict]] = {}
        for d in dialogues:
            by_condition.setdefault(str(d.get("condition")), []).append(d)
        mixed = [d for group in zip_longest(*by_condition.values()) for d in group if d]
        dialogues = mixed[: max(0, limit)]
    return dialogues


@dataclass
class EvalJudges:
    """Everything that listens to a reply: both recognizers and silero-vad."""

    whisper: WhisperJudge
    sphinx: SphinxJudge
    vad: object

    @classmethod
    def load(cls) -> EvalJudges:
        from silero_vad import load_silero_vad

        from parley.train.domain import all_answers

        with warnings.catch_warnings():
            # The loader's importlib/jit deprecations are the package's business.
            warnings.simplefilter("ignore", DeprecationWarning)
            vad = load_silero_vad()
        return cls(WhisperJudge(), SphinxJudge(all_answers()), vad)

    def speech_seconds(self, audio: np.ndarray) -> float:
        """Seconds of ``audio`` (16 kHz) that silero-vad calls speech."""
        import torch
        from silero_vad import get_speech_timestamps

        if audio.size < 512:
            return 0.0
        spans = get_speech_timestamps(torch.from_numpy(audio), self.vad, sampling_rate=JUDGE_RATE)
        return sum(s["end"] - s["start"] for s in spans) / JUDGE_RATE

    def judge(self, turn: dict, text: str, audio: np.ndarray) -> dict:
        """Every verdict on one reply (``audio`` at 16 kHz)."""
        heard = self.whisper.transcribe(audio)
        sphinx = self.sphinx.hear(audio)
        speech_s = self.speech_seconds(audio)
        return {
            "whisper": heard,
            "sphinx_grammar": sphinx.grammar,
            "sphinx_lm": sphinx.lm,
            "ok_text": answer_heard(turn, text),
            "ok_whisper": answer_heard(turn, heard),
            "ok_sphinx": sphinx.heard(turn),
            "says_text_wacc": round(word_accuracy(text, heard), 3) if normalize(text) else 0.0,
            "speech_s": round(speech_s, 3),
            "speech": speech_s >= SPEECH_MIN_S,
        }


def _to_judge_rate(audio: np.ndarray, rate: int) -> np.ndarray:
    import soxr

    x = np.asarray(audio, dtype=np.float32).reshape(-1)
    if rate == JUDGE_RATE or x.size == 0:
        return x
    return soxr.resample(x, rate, JUDGE_RATE).astype(np.float32)


def with_endpoint_silence(audio: np.ndarray, rate: int, agent) -> np.ndarray:
    """``audio`` followed by what a live session hears before it ends the turn: the
    endpoint's silence (a faint noise floor, as a microphone gives), so the model is judged
    on the input it gets in conversation and latency counts from the turn's end."""
    n = rate * agent.endpoint_silence_ms // 1000
    floor = np.random.default_rng(n).standard_normal(n).astype(np.float32) * 3e-4
    return np.concatenate([audio.astype(np.float32), floor])


class VoiceUnits:
    """The agent voice's own speech tokens for a reply text, from the corpus's recording of
    it: what the LM was trained to say. A reply whose tokens equal them sounds as good as
    the codec can make it, so a miss on such a reply is the codec's, not the LM's."""

    def __init__(self, corpus: Path, checkpoint) -> None:
        self.corpus = Path(corpus)
        self.tokenizer = checkpoint.speech_tokenizer
        self.layout = checkpoint.manifest.vocab
        self._cache: dict[str, list[int] | None] = {}
        self._heard: dict[str, float | None] = {}

    def recording(self, text: str) -> np.ndarray | None:
        """The voice saying ``text`` as the LM learnt it (trimmed); None where the corpus
        has no recording."""
        from parley.speech_io.audio import load_audio
        from parley.train.corpus import answer_path
        from parley.train.lm_data import trim_reply

        path = self.corpus / answer_path(text)
        return trim_reply(load_audio(path, 16000)) if normalize(text) and path.is_file() else None

    def reference(self, text: str) -> list[int] | None:
        """Units of ``text`` in the agent's voice; None where the corpus has no recording."""
        if text not in self._cache:
            audio = self.recording(text)
            self._cache[text] = (
                None if audio is None else [int(c) for c in self.tokenizer.encode(audio)]
            )
        return self._cache[text]

    def voice_says_text(self, text: str, whisper: WhisperJudge) -> float | None:
        """Whisper's word accuracy on the voice's own recording of ``text``: how well the
        judge follows this voice at all, so the ceiling of the model's audio=text."""
        if text not in self._heard:
            audio = self.recording(text)
            self._heard[text] = (
                None if audio is None else round(word_accuracy(text, whisper.transcribe(audio)), 3)
            )
        return self._heard[text]

    def match(self, text: str, token_ids: list[int]) -> bool | None:
        """Whether the reply's speech tokens are exactly the voice's units for its text."""
        from parley.tokenizers.vocab import TokenClass

        ref = self.reference(text)
        if ref is None:
            return None
        spoken = [
            self.layout.speech_code(t)
            for t in token_ids
            if self.layout.classify(t) is TokenClass.SPEECH
        ]
        return spoken == ref


async def _run_dialogues(model, cfg, dialogues, corpus, out, judges, log) -> list[dict]:
    from parley.agent.core.speak import SpeakPipeline
    from parley.speech_io.audio import load_audio, write_wav

    rate = cfg.model.features.sample_rate
    units = VoiceUnits(corpus, model.checkpoint)
    records = []
    for i, d in enumerate(dialogues, 1):
        pipeline = SpeakPipeline(model.checkpoint, model.engine, cfg.agent)
        did = str(d.get("id", f"d{i}"))
        try:
            for k, turn in enumerate(d["turns"]):
                user = with_endpoint_silence(
                    load_audio(Path(corpus) / turn["audio"], rate), rate, cfg.agent
                )
                result = await pipeline.run_turn(user)
                wav = out / "audio" / f"{did}_{k}.wav"
                write_wav(
                    wav, result.audio if result.audio.size else np.zeros(1), result.sample_rate
                )
                t0 = time.perf_counter()
                verdict = judges.judge(
                    turn, result.text, _to_judge_rate(result.audio, result.sample_rate)
                )
                latency = result.latencies_ms()
                records.append(
                    {
                        "id": did,
                        "turn": k,
                        "condition": d.get("condition"),
                        "voice": d.get("voice"),
                        "intent": turn.get("intent"),
                        "question": turn.get("question"),
                        "answer": turn["answer"],
                        "key": turn["key"],
                        "reply_text": result.text,
                        **verdict,
                        "speech_is_units": units.match(result.text, result.token_ids),
                        "voice_says_text_wacc": units.voice_says_text(result.text, judges.whisper),
                        "reply_audio_s": round(len(result.audio) / result.sample_rate, 3),
                        "first_audio_ms": latency.get("first_audio_out"),
                        "first_text_ms": latency.get("first_text_token"),
                        "reply_ms": latency.get("reply_end"),
                        "judge_ms": round((time.perf_counter() - t0) * 1000.0, 1),
                        "audio": str(wav.relative_to(out)),
                    }
                )
        finally:
            await pipeline.context.aclose()
        last = records[-1]
        log(
            f"dialogue {i}/{len(dialogues)} {did} [{d.get('condition')}]: "
            f"{'ok' if last['ok_whisper'] else 'miss'} "
            f"(heard {last['whisper'][:60]!r}; reply {last['reply_ms'] or 0:.0f} ms, "
            f"judged in {last['judge_ms']:.0f} ms)"
        )
    return records


def run(args: argparse.Namespace, log: Log) -> int:
    """The ``eval`` command."""
    from parley.agent.core.model import AgentModel
    from parley.agent.runtime import default_checkpoint, load_runtime_config
    from parley.llm.checkpoint import read_manifest

    # Check the user's inputs before loading anything heavy.
    dialogues = load_heldout(args.corpus, args.limit)
    path = args.checkpoint or default_checkpoint(log)
    read_manifest(path)
    cfg = load_runtime_config(args)
    out: Path = args.out
    out.mkdir(parents=True, exist_ok=True)
    turns = sum(len(d["turns"]) for d in dialogues)
    log(f"{len(dialogues)} held-out dialogue(s), {turns} turn(s) from {args.corpus}")
    log("loading the judges (faster-whisper tiny.en, pocketsphinx, silero-vad)")
    judges = EvalJudges.load()

    async def main() -> tuple[list[dict], bool]:
        log(f"loading checkpoint {path}")
        model = AgentModel.load(path, cfg)
        if model.random_weights:
            log("this checkpoint has random weights: expect accuracy near zero")
        try:
            records = await _run_dialogues(model, cfg, dialogues, args.corpus, out, judges, log)
            return records, model.random_weights
        finally:
            await model.aclose()

    t0 = time.perf_counter()
    records, random_weights = asyncio.run(main())
    elapsed = time.perf_counter() - t0
    meta = {
        "checkpoint": str(path),
        "random_weights": random_weights,
        "corpus": str(args.corpus),
        "engine": cfg.engine.name,
        "dialogues": len(dialogues),
        "turns": len(records),
        "seconds": round(elapsed, 1),
        "seconds_per_turn": round(elapsed / max(len(records), 1), 2),
    }
    summary = summarize(records)
    (out / "results.json").write_text(
        json.dumps({"meta": meta, "summary": summary, "turns": records}, indent=1) + "\n"
    )
    report = write_report(out / "report.md", meta, summary, records)
    print(report.split("\n## Turns")[0].rstrip())
    print(f"report: {out / 'report.md'}; per turn: {out / 'results.json'}", file=sys.stderr)
    return 0
