"""The agent's voice for codec training: texts, their Piper "joe" audio and encoder frames.

Texts are every domain answer, the numbers 0..1000 in short carrier sentences, and general
sentences (``configs/corpus.txt`` and the out-of-domain questions). A fixed ~5% of them,
chosen by a hash of the text (so adding texts never moves the others), is held out of
codec training for the intelligibility evaluation.

Synthesis and encoding are slow, so both are cached under the output directory in shards
of :data:`SHARD_TEXTS` texts, each named by a hash of its texts: a rerun reuses every shard
whose texts did not change. Audio is stored as int16 and zero-padded to whole tokens
(``samples_per_token`` of the slowest rate compared, 640 at 16 kHz); encoder frames (50 per
second, float32) cover exactly that padded audio.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import numpy as np
import torch

from parley.speech_io.audio import SAMPLE_RATE
from parley.tokenizers.unit_tokenizer import UnitTokenizer

SHARD_TEXTS = 200
PAD_SAMPLES = 640
"""Audio is padded to a multiple of this (one 25 Hz token; two 50 Hz tokens)."""
HELDOUT_PER_MILLE = 50

_CARRIERS = (
    "the answer is {}",
    "it is {}",
    "{} is the number",
    "that makes {}",
    "i think it is {}",
    "the result is {}",
    "we have {} of them",
)


def number_sentences(last: int = 1000) -> list[str]:
    """Each number 0..``last`` spelled out in a short carrier sentence."""
    from parley.train.domain import number_words

    return [_CARRIERS[n % len(_CARRIERS)].format(number_words(n)) for n in range(last + 1)]


def general_sentences() -> list[str]:
    """``configs/corpus.txt`` and the out-of-domain questions, one sentence per line."""
    from parley.train.domain import ood_sentences

    corpus = resources.files("parley.configs").joinpath("corpus.txt").read_text("utf-8")
    lines = [line.strip() for line in corpus.splitlines()]
    return [s for s in lines if s] + ood_sentences(False) + ood_sentences(True)


def codec_texts() -> list[str]:
    """Every text the codec learns the voice from (training and held-out), sorted, unique."""
    from parley.train.domain import all_answers

    return sorted({*all_answers(), *number_sentences(), *general_sentences()})


def reply_focus(texts: Sequence[str]) -> list[float]:
    """A weight per text: each family of the agent's replies (sums, numbers, days, months,
    the fixed replies) an equal share, split evenly within it; other texts 0.

    By length alone a crop lands on one of the 14 day replies about 1 time in 400 and on
    "yes i can hear you" almost never, and those were the words the vocoder blurred."""
    from collections import Counter

    from parley.train.domain import answer_family

    families = [answer_family(t) for t in texts]
    sizes = Counter(f for f in families if f is not None)
    return [0.0 if f is None else 1.0 / (len(sizes) * sizes[f]) for f in families]


def is_heldout(text: str) -> bool:
    """Whether ``text`` belongs to the codec's held-out evaluation set (~5%, by hash)."""
    digest = hashlib.sha1(text.encode("utf-8")).digest()
    return int.from_bytes(digest[:4], "big") % 1000 < HELDOUT_PER_MILLE


def split_texts(texts: Sequence[str]) -> tuple[list[str], list[str]]:
    """(training texts, held-out texts), each in the given order."""
    train = [t for t in texts if not is_heldout(t)]
    held = [t for t in texts if is_heldout(t)]
    return train, held


def agent_speech(text: str) -> np.ndarray:
    """``text`` in the agent's voice (Piper joe, deterministic): float32 16 kHz."""
    from parley.train.voices import agent_voice

    return agent_voice().synthesize(text)


@dataclass
class Utterance:
    """One text, its padded audio (float32) and its 50 Hz encoder frames (or None)."""

    text: str
    audio: np.ndarray
    frames: torch.Tensor | None = None


def _shard_key(texts: Sequence[str]) -> str:
    return hashlib.sha1("\n".join(texts).encode("utf-8")).hexdigest()[:12]


def _pad(audio: np.ndarray) -> np.ndarray:
    n = -(-audio.size // PAD_SAMPLES) * PAD_SAMPLES
    return np.pad(audio.astype(np.float32), (0, n - audio.size))


def _shards(texts: Sequence[str]) -> Iterator[tuple[int, list[str]]]:
    for i, lo in enumerate(range(0, len(texts), SHARD_TEXTS)):
        yield i, list(texts[lo : lo + SHARD_TEXTS])


def prepare_corpus(
    cache: Path,
    texts: Sequence[str],
    tokenizer: UnitTokenizer | None,
    speak: Callable[[str], np.ndarray] = agent_speech,
    log: Callable[[str], None] = print,
) -> list[Utterance]:
    """Audio (and, with ``tokenizer``, its encoder frames) for ``texts``, cached in ``cache``.

    ``tokenizer`` only lends its encoder and features (its codebook is not used), and its
    ``frames_per_unit`` decides nothing here: frames are kept at 50 per second.
    """
    cache = Path(cache)
    frames_dir = cache / (tokenizer.frames_kind if tokenizer is not None else "frames")
    (cache / "audio").mkdir(parents=True, exist_ok=True)
    frames_dir.mkdir(parents=True, exist_ok=True)
    out: list[Utterance] = []
    n_shards = -(-len(texts) // SHARD_TEXTS)
    for i, shard in _shards(texts):
        key = _shard_key(shard)
        apath = cache / "audio" / f"{key}.npz"
        if apath.is_file():
            with np.load(apath) as z:
                pcm, lengths = z["pcm"], z["lengths"]
        else:
            clips = [_pad(speak(t)) for t in shard]
            lengths = np.array([c.size for c in clips], dtype=np.int64)
            pcm = np.concatenate([np.round(np.clip(c, -1, 1) * 32767) for c in clips])
            pcm = pcm.astype(np.int16)
            _atomic_savez(apath, pcm=pcm, lengths=lengths, texts=np.array(json.dumps(shard)))
            log(
                f"codec data: synthesized shard {i + 1}/{n_shards} ({lengths.sum() / SAMPLE_RATE:.0f} s)"
            )
        bounds = np.concatenate([[0], np.cumsum(lengths)])
        audios = [
            pcm[a:b].astype(np.float32) / 32767.0
            for a, b in zip(bounds[:-1], bounds[1:], strict=True)
        ]
        frames: list[torch.Tensor | None] = [None] * len(shard)
        if tokenizer is not None:
            fpath = frames_dir / f"{key}.npz"
            if fpath.is_file():
                with np.load(fpath) as z:
                    flat, counts = z["frames"], z["counts"]
            else:
                per = [tokenizer.frames(a).numpy() for a in audios]
                counts = np.array([f.shape[0] for f in per], dtype=np.int64)
                flat = np.concatenate(per).astype(np.float32)
                _atomic_savez(fpath, frames=flat, counts=counts)
                log(f"codec data: encoded shard {i + 1}/{n_shards}")
            fb = np.concatenate([[0], np.cumsum(counts)])
            frames = [torch.from_numpy(flat[a:b]) for a, b in zip(fb[:-1], fb[1:], strict=True)]
        out.extend(Utterance(t, a, f) for t, a, f in zip(shard, audios, frames, strict=True))
    return out


def _atomic_savez(path: Path, **arrays: np.ndarray) -> None:
    tmp = path.with_name(path.stem + ".tmp.npz")
    np.savez(tmp, **arrays)  # type: ignore[arg-type]  # numpy's stub reads **arrays as its flags
    tmp.replace(path)
