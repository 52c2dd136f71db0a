"""Write the synthetic spoken-dialogue corpus: a manifest, user audio and agent replies.

The corpus is planned first, in this process and from the seed alone: the dialogues'
text, each dialogue's voice, every utterance's TTS parameters, padding and augmentation
(all in the manifest). Only then is audio made, in a process pool; a file that exists is
skipped, so an interrupted run resumes where it stopped, and the same seed always gives
the same manifest. Each dialogue draws from its own seeded generator, so a larger
``--dialogues`` keeps every earlier dialogue as it was.

Layout of ``out``::

    manifest.jsonl        one dialogue a line (see ``_record``)
    corpus.json           the options it was made with (checked when resuming)
    user/ID_k.wav         turn k of dialogue ID, 16 kHz mono PCM16
    agent/answers.jsonl   {"answer", "audio", "duration_s"} for every distinct answer
    agent/SHA.wav         the answer spoken by the agent's voice (sha1(answer)[:16])
    babble/{train,heldout}/N.wav   the talkers babble noise is mixed from

Held-out conditions (``condition`` in the manifest; one evaluation table each):
``clean`` (training voices and phrasings, no augmentation), ``voice`` (held-out voices,
training phrasings), ``phrasing`` (training voices, held-out phrasings and out-of-domain
sentences), and ``noise-white``, ``noise-brown``, ``noise-babble``: the ``clean``
dialogues again with noise at exactly 10 dB SNR (``copy_of`` names the clean one).
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import sys
import time
from collections import defaultdict
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from dataclasses import asdict, dataclass
from functools import cache
from multiprocessing import get_context
from pathlib import Path
from typing import Any

import numpy as np
import soundfile as sf

from parley.errors import ConfigError
from parley.speech_io.audio import SAMPLE_RATE
from parley.train.augment import NOISE_KINDS, apply_augment, normalize, plan_augment
from parley.train.domain import Dialogue, make_dialogue, ood_sentences
from parley.train.voices import (
    VOICES,
    Voice,
    agent_voice,
    available_voices,
    require_voices,
    voice,
)

EVAL_SNR_DB = 10.0
PAD_RANGE_S = (0.1, 0.3)
BABBLE_CLIPS = 24
CONDITIONS = ("clean", "voice", "phrasing", *(f"noise-{k}" for k in NOISE_KINDS))
FORMAT = 3  # bump when the same options would give different files (3: sums from parts)
_FAST_ENGINES = ("espeak", "mbrola", "flite")
# Share of training dialogues per engine: espeak has the most voices; Piper joe least,
# being the agent's own voice too.
ENGINE_SHARE = {"espeak": 0.3, "mbrola": 0.2, "flite": 0.2, "festival": 0.2, "piper": 0.1}

Log = Callable[[str], None]


@dataclass(frozen=True)
class CorpusOptions:
    """What ``make-corpus`` builds."""

    out: Path
    dialogues: int = 1000
    """Training dialogues."""
    heldout: int = 60
    """Dialogues per held-out condition; in the ``voice`` condition, per held-out voice."""
    seed: int = 0
    workers: int = 2
    """Synthesis processes (1: all in this process)."""
    voices: tuple[str, ...] | None = None
    """Restrict to these voices or engines (names from ``VOICES`` or "espeak", "flite",
    ...); None: all of them."""
    progress: bool = True


@dataclass(frozen=True)
class _Job:
    """One audio file to make; plain data so it can cross into a worker process."""

    kind: str  # "user", "babble" or "agent"
    voice: str
    text: str
    path: str  # relative to the corpus root
    augment: dict[str, Any] | None = None
    babble: str | None = None  # which babble pool the noise is mixed from


def select_voices(names: Iterable[str] | None) -> list[Voice]:
    """The registered voices named (or of the engines named); all when ``names`` is None."""
    if names is None:
        return list(VOICES)
    wanted = set(names)
    chosen = [v for v in VOICES if v.name in wanted or v.engine in wanted]
    unknown = wanted - {v.name for v in chosen} - {v.engine for v in chosen}
    if unknown:
        known = sorted({v.engine for v in VOICES} | {v.name for v in VOICES})
        raise ConfigError(f"unknown voice(s) {sorted(unknown)}; known: {', '.join(known)}")
    return chosen


def _pick_train_voice(rng: random.Random, voices: list[Voice]) -> Voice:
    """An engine by ``ENGINE_SHARE``, then each of its voices equally often."""
    engines = sorted({v.engine for v in voices})
    engine = rng.choices(engines, weights=[ENGINE_SHARE[e] for e in engines])[0]
    return rng.choice([v for v in voices if v.engine == engine])


def _turn_augment(rng: random.Random, v: Voice, *, train: bool) -> dict[str, Any]:
    aug: dict[str, Any] = {
        "tts": v.sample_params(rng),
        "pad_s": [round(rng.uniform(*PAD_RANGE_S), 3), round(rng.uniform(*PAD_RANGE_S), 3)],
    }
    if train:
        aug.update(plan_augment(rng))
    return aug


def _record(
    did: str,
    split: str,
    condition: str,
    v: Voice,
    dialogue: Dialogue,
    augments: list[dict[str, Any]],
    noise: dict[str, Any] | None = None,
    copy_of: str | None = None,
) -> dict[str, Any]:
    rec: dict[str, Any] = {
        "id": did,
        "split": split,
        "condition": condition,
        "voice": v.name,
        "noise": noise,
    }
    if copy_of:
        rec["copy_of"] = copy_of
    rec["turns"] = [
        {**asdict(t), "audio": f"user/{did}_{k}.wav", "augment": aug}
        for k, (t, aug) in enumerate(zip(dialogue.turns, augments, strict=True))
    ]
    return rec


def plan_corpus(
    n_train: int, n_heldout: int, seed: int, voices: list[Voice]
) -> list[dict[str, Any]]:
    """Every manifest record, from the seed alone (no audio is made)."""
    train_voices = [v for v in voices if v.split == "train"]
    held_voices = [v for v in voices if v.split == "heldout"]
    if not train_voices:
        raise ConfigError("no training voice selected: --voices must include a training voice")
    records = []
    for i in range(n_train):
        rng = random.Random(f"{seed}:train:{i}")
        d, v = make_dialogue(rng), _pick_train_voice(rng, train_voices)
        augs = [_turn_augment(rng, v, train=True) for _ in d.turns]
        records.append(_record(f"train-{i:06d}", "train", "train", v, d, augs))
    for i in range(n_heldout):
        rng = random.Random(f"{seed}:clean:{i}")
        d, v = make_dialogue(rng), _pick_train_voice(rng, train_voices)
        augs = [_turn_augment(rng, v, train=False) for _ in d.turns]
        clean_id = f"heldout-clean-{i:05d}"
        records.append(_record(clean_id, "heldout", "clean", v, d, augs))
        for kind in NOISE_KINDS:
            noise = {"kind": kind, "snr_db": EVAL_SNR_DB}
            noisy = [{**a, "seed": rng.randrange(2**31), "noise": noise} for a in augs]
            rid = f"heldout-noise-{kind}-{i:05d}"
            records.append(
                _record(rid, "heldout", f"noise-{kind}", v, d, noisy, noise, copy_of=clean_id)
            )
    for v in held_voices:
        for i in range(n_heldout):
            rng = random.Random(f"{seed}:voice:{v.name}:{i}")
            d = make_dialogue(rng)
            augs = [_turn_augment(rng, v, train=False) for _ in d.turns]
            records.append(
                _record(f"heldout-voice-{v.name}-{i:05d}", "heldout", "voice", v, d, augs)
            )
    for i in range(n_heldout):
        rng = random.Random(f"{seed}:phrasing:{i}")
        d, v = make_dialogue(rng, heldout_phrasing=True), _pick_train_voice(rng, train_voices)
        augs = [_turn_augment(rng, v, train=False) for _ in d.turns]
        records.append(_record(f"heldout-phrasing-{i:05d}", "heldout", "phrasing", v, d, augs))
    return records


def answer_path(answer: str) -> str:
    """Where the agent's spoken ``answer`` lies, relative to the corpus root."""
    return f"agent/{hashlib.sha1(answer.encode()).hexdigest()[:16]}.wav"


def _babble_jobs(seed: int, train_voices: list[Voice]) -> list[_Job]:
    """Talkers for babble: training voices saying out-of-domain sentences (training
    sentences for the training pool, held-out ones for the held-out pool).

    The fast engines speak them where they are selected: babble needs many talkers, not
    the best ones.
    """
    fast = [v for v in train_voices if v.engine in _FAST_ENGINES]
    train_voices = fast or train_voices
    jobs = []
    for pool, heldout in (("train", False), ("heldout", True)):
        rng = random.Random(f"{seed}:babble:{pool}")
        sentences = ood_sentences(heldout)
        for i in range(BABBLE_CLIPS):
            v = train_voices[i % len(train_voices)]
            path = f"babble/{pool}/{i:03d}.wav"
            jobs.append(_Job("babble", v.name, rng.choice(sentences), path))
    return jobs


def _jobs(records: list[dict[str, Any]], seed: int, voices: list[Voice]) -> list[_Job]:
    jobs = _babble_jobs(seed, [v for v in voices if v.split == "train"])
    answers: dict[str, None] = {}
    for rec in records:
        pool = "train" if rec["split"] == "train" else "heldout"
        for t in rec["turns"]:
            jobs.append(_Job("user", rec["voice"], t["question"], t["audio"], t["augment"], pool))
            answers.setdefault(t["answer"])
    jobs += [_Job("agent", agent_voice().name, a, answer_path(a)) for a in answers]
    return jobs


# --- rendering (runs in the workers) -------------------------------------------------------


@cache
def _babble_pool(root: str, pool: str) -> tuple[np.ndarray, ...]:
    files = sorted(Path(root, "babble", pool).glob("*.wav"))
    return tuple(sf.read(f, dtype="float32")[0] for f in files)


def trim(audio: np.ndarray, rel_level: float = 0.005, margin_s: float = 0.02) -> np.ndarray:
    """Cut the engine's own silence at both ends (keeping ``margin_s``), so padding is ours."""
    peak = float(np.max(np.abs(audio))) if audio.size else 0.0
    if peak <= 0:
        return audio
    loud = np.flatnonzero(np.abs(audio) > rel_level * peak)
    margin = int(margin_s * SAMPLE_RATE)
    return audio[max(0, loud[0] - margin) : loud[-1] + 1 + margin]


def _speaker(name: str) -> Voice:
    return agent_voice() if name == agent_voice().name else voice(name)


def render(job: _Job, root: str, babble_from: Path | None = None) -> tuple[str, str, float]:
    """Make one file; return (path, engine, seconds spent in the TTS engine)."""
    v = _speaker(job.voice)
    aug = job.augment or {}
    start = time.perf_counter()
    audio = v.synthesize(job.text, aug.get("tts"))
    tts_s = time.perf_counter() - start
    if job.kind == "agent":
        out = audio  # exactly agent_voice().synthesize(answer), as the codec hears it
    else:
        audio = normalize(trim(audio))
        if job.kind == "babble":
            out = audio
        else:
            pool = _babble_pool(str(babble_from or root), job.babble or "train")
            pad = tuple(aug.get("pad_s", (0.0, 0.0)))
            out = apply_augment(audio, aug, pool, pad_s=(pad[0], pad[1]))
    _write_wav(Path(root, job.path), out)
    return job.path, v.engine, tts_s


def training_utterance(
    rng: random.Random, voices: list[str] | None = None
) -> tuple[str, dict[str, Any]]:
    """A training voice (of ``voices``, else of those installed) and an augmentation for
    one more user utterance, drawn as the corpus draws its training ones."""
    pool = [voice(name) for name in voices] if voices else available_voices()
    train_voices = [v for v in pool if v.split == "train"]
    if not train_voices:
        raise ConfigError("no training voice is installed (see docs/training.md)")
    v = _pick_train_voice(rng, train_voices)
    return v.name, _turn_augment(rng, v, train=True)


def render_question(
    voice: str,
    text: str,
    root: Path,
    path: str,
    plan: dict | None,
    babble_from: Path | None = None,
) -> Path:
    """``voice`` saying ``text`` as a corpus's user audio (trimmed, levelled, then ``plan``
    applied: see :func:`~parley.train.augment.apply_augment`), at ``root/path``; babble
    noise is made from ``babble_from``'s training talkers (default: ``root``'s)."""
    render(_Job("user", voice, text, path, plan), str(root), babble_from)
    return Path(root) / path


def record_answer(answer: str, root: Path) -> Path:
    """The agent's recording of ``answer`` under ``root``, made as make-corpus makes it
    (kept when it is there already); returns its path."""
    path = Path(root) / answer_path(answer)
    if not path.is_file():
        render(_Job("agent", agent_voice().name, answer, answer_path(answer)), str(root))
    return path


def _write_wav(path: Path, audio: np.ndarray) -> None:
    """Write then rename, so a file that exists is always whole (resuming trusts that)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    sf.write(tmp, np.clip(audio, -1.0, 1.0), SAMPLE_RATE, subtype="PCM_16", format="WAV")
    os.replace(tmp, path)


def _worker_init() -> None:
    os.environ.setdefault("OMP_NUM_THREADS", "1")


# --- driving -------------------------------------------------------------------------------


def _progress(total: int, desc: str, enabled: bool) -> Any:
    try:
        from tqdm import tqdm

        return tqdm(total=total, desc=desc, unit="file", disable=not enabled, file=sys.stderr)
    except ImportError:
        return _SimpleProgress(total, desc, enabled)


class _SimpleProgress:
    """A few lines on stderr when tqdm is not installed."""

    def __init__(self, total: int, desc: str, enabled: bool) -> None:
        self.total, self.desc, self.enabled, self.done, self.shown = total, desc, enabled, 0, -1

    def update(self, n: int = 1) -> None:
        self.done += n
        tenth = self.done * 10 // max(self.total, 1)
        if self.enabled and tenth != self.shown:
            self.shown = tenth
            print(f"{self.desc}: {self.done}/{self.total}", file=sys.stderr, flush=True)

    def close(self) -> None:
        pass


def _run_jobs(
    jobs: list[_Job], root: Path, workers: int, desc: str, progress: bool
) -> Iterator[tuple[str, str, float]]:
    bar = _progress(len(jobs), desc, progress)
    try:
        if workers <= 1:
            for job in jobs:
                yield render(job, str(root))
                bar.update()
            return
        with ProcessPoolExecutor(
            workers, mp_context=get_context("spawn"), initializer=_worker_init
        ) as pool:
            pending: set[Future] = {pool.submit(render, j, str(root)) for j in jobs}
            try:
                while pending:
                    done, pending = wait(pending, return_when=FIRST_COMPLETED)
                    for fut in done:
                        yield fut.result()
                        bar.update()
            finally:
                for fut in pending:
                    fut.cancel()
    finally:
        bar.close()


def _check_out(opts: CorpusOptions, settings: dict[str, Any]) -> None:
    try:
        opts.out.mkdir(parents=True, exist_ok=True)
        probe = opts.out / ".write-test"
        probe.write_text("")
        probe.unlink()
    except OSError as exc:
        raise ConfigError(f"cannot write the corpus to {opts.out}: {exc.strerror or exc}") from exc
    meta = opts.out / "corpus.json"
    if meta.is_file():
        old = json.loads(meta.read_text())
        same = {k: old.get(k) for k in ("format", "seed", "voices")}
        if same != {k: settings[k] for k in same}:
            raise ConfigError(
                f"{opts.out} holds a corpus made with other settings ({same}); "
                "resume with the same --seed and --voices, or choose another --out"
            )
        for key, flag in (("dialogues", "--dialogues"), ("heldout", "--heldout")):
            if old.get(key, 0) > getattr(opts, key):
                # A smaller plan would rewrite the manifest without dialogues that a model
                # may already have been trained on.
                raise ConfigError(
                    f"{opts.out} holds a corpus of {flag} {old[key]}; asking for "
                    f"{getattr(opts, key)} would drop some: pass {flag} {old[key]} (or more), "
                    "or choose another --out"
                )


def make_corpus(opts: CorpusOptions, log: Log = print) -> dict[str, Any]:
    """Plan and write the corpus; return a summary (counts and TTS seconds per engine)."""
    if opts.dialogues < 0 or opts.heldout < 0 or opts.workers < 1:
        raise ConfigError("--dialogues and --heldout must be >= 0 and --workers >= 1")
    voices = select_voices(opts.voices)
    _babble_pool.cache_clear()
    require_voices([*voices, agent_voice()])
    settings = {"format": FORMAT, "seed": opts.seed, "voices": [v.name for v in voices]}
    _check_out(opts, settings)

    records = plan_corpus(opts.dialogues, opts.heldout, opts.seed, voices)
    jobs = _jobs(records, opts.seed, voices)
    todo = [j for j in jobs if not (opts.out / j.path).is_file()]
    log(
        f"{len(records)} dialogues, {len(jobs)} audio files ({len(jobs) - len(todo)} exist already)"
    )
    meta = {**settings, "dialogues": opts.dialogues, "heldout": opts.heldout}
    (opts.out / "corpus.json").write_text(json.dumps(meta, indent=1) + "\n")

    seconds: dict[str, float] = defaultdict(float)
    counts: dict[str, int] = defaultdict(int)
    # Babble talkers first: the noisy utterances are mixed from them.
    babble = [j for j in todo if j.kind == "babble"]
    rest = [j for j in todo if j.kind != "babble"]
    for batch, desc in ((babble, "babble"), (rest, "speech")):
        if not batch:
            continue
        for _, engine, tts_s in _run_jobs(batch, opts.out, opts.workers, desc, opts.progress):
            seconds[engine] += tts_s
            counts[engine] += 1

    _write_lines(opts.out / "manifest.jsonl", (json.dumps(r) for r in records))
    answers = sorted({t["answer"] for r in records for t in r["turns"]})
    _write_lines(
        opts.out / "agent" / "answers.jsonl",
        (
            json.dumps({"answer": a, "audio": answer_path(a), "duration_s": _duration(opts.out, a)})
            for a in answers
        ),
    )
    speed = {e: {"files": counts[e], "tts_s": round(seconds[e], 2)} for e in sorted(counts)}
    for engine, s in speed.items():
        per = s["tts_s"] / max(s["files"], 1)
        log(f"{engine:>9}: {s['files']} files, {per * 1000:.0f} ms each in TTS (one process)")
    log(f"wrote {opts.out / 'manifest.jsonl'}: {len(records)} dialogues, {len(answers)} answers")
    return {"dialogues": len(records), "files": len(jobs), "made": len(todo), "speed": speed}


def _duration(root: Path, answer: str) -> float:
    return round(sf.info(str(root / answer_path(answer))).duration, 3)


def _write_lines(path: Path, lines: Iterable[str]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    with tmp.open("w", encoding="utf-8") as f:
        for line in lines:
            f.write(line + "\n")
    os.replace(tmp, path)


def read_manifest(root: Path) -> list[dict[str, Any]]:
    """The records of a corpus's manifest."""
    with (Path(root) / "manifest.jsonl").open(encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]
