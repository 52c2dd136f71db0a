"""The LM's training data: dialogues of the corpus as token and audio-frame sequences.

The encoder is frozen, so each user utterance goes through features and encoder once and is
cached (float16 frames, 50 per second); every epoch then costs only the adapter and the LM.
Each reply is cached as its text ids and speech codes (the agent's voice, tokenized by the
codec). A training example is a whole dialogue laid out as inference sees it::

    <|user|> audio... <|assistant|> reply... <|eot|> <|user|> audio... <|assistant|> ...

where a reply is interleaved by :func:`parley.llm.schedule.interleave`. A reply marked
``text_only`` is laid out only up to its first speech token (its text, as the schedule puts
it first): a drill of what the reply says, for which no recording exists.
"""

from __future__ import annotations

import hashlib
import json
import random
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from parley.config import FeatureConfig, ScheduleConfig
from parley.llm.encoder import BlockCausalEncoder
from parley.llm.schedule import interleave
from parley.speech_io.audio import load_audio
from parley.tokenizers.features import log_mel
from parley.tokenizers.vocab import TokenClass, VocabLayout
from parley.train.corpus import answer_path, read_manifest

AUDIO = -100
"""Placeholder id of an audio position in a laid-out sequence (its embedding comes from the
adapter, not the embedding table)."""

TRAIL_S = (0.25, 0.9)
"""Silence appended to each user utterance: the session hands the model the audio up to its
endpoint (500 ms of silence by default) plus the VAD's hangover."""
LEAD_S = (0.0, 0.25)
"""Silence before it: the session's 200 ms pre-roll, give or take the VAD onset."""


def _seed_of(name: str) -> int:
    return int.from_bytes(hashlib.sha1(name.encode()).digest()[:4], "little")


def pad_like_the_session(audio: np.ndarray, name: str) -> np.ndarray:
    """``audio`` with the lead and trail of silence (a faint noise floor) a live turn has;
    seeded by ``name`` so the cache is reproducible."""
    rng = np.random.default_rng(_seed_of(name))
    lead = int(rng.uniform(*LEAD_S) * 16000)
    trail = int(rng.uniform(*TRAIL_S) * 16000)
    floor = 10 ** (rng.uniform(-75, -55) / 20)
    out = np.concatenate([np.zeros(lead), audio, np.zeros(trail)]).astype(np.float32)
    out[:lead] += floor * rng.standard_normal(lead).astype(np.float32)
    out[lead + audio.size :] += floor * rng.standard_normal(trail).astype(np.float32)
    return out


@torch.inference_mode()
def encode_utterance(
    audio: np.ndarray, features: FeatureConfig, encoder: BlockCausalEncoder, shared: bool = False
):
    """Frozen encoder frames ``(T, d_model)`` of one utterance, exactly as the streaming
    front end computes them (offline twin of the same block-causal pass); ``shared``: the
    residual stream below the encoder's tuned layers instead, which training runs on."""
    mel = torch.from_numpy(log_mel(audio, features))
    return encoder.below_branch(mel) if shared else encoder(mel)


# Silence kept before a reply's first sound in the units the LM learns. With 40 ms the
# codec rendered 9 of the 38 month and day replies with a last word Whisper misheard
# ("january" as "ten you worry"); with Piper's own lead (80 ms covers it) 4.
REPLY_LEAD_S = 0.08


def trim_silence(
    audio: np.ndarray, lead_s: float = 0.04, tail_s: float = 0.04, threshold_db: float = -45.0
):
    """``audio`` without its leading and trailing silence (``lead_s`` and ``tail_s`` of it
    stay): the reply's first sound should be its first audio."""
    frame = 160
    n = audio.size // frame
    if n == 0:
        return audio
    rms = np.sqrt((audio[: n * frame].reshape(n, frame) ** 2).mean(1) + 1e-12)
    loud = np.nonzero(20 * np.log10(rms / max(rms.max(), 1e-9)) > threshold_db)[0]
    if loud.size == 0:
        return audio
    lead, tail = int(lead_s * 16000), int(tail_s * 16000)
    return audio[max(0, loud[0] * frame - lead) : min(audio.size, (loud[-1] + 1) * frame + tail)]


def trim_reply(audio: np.ndarray) -> np.ndarray:
    """A recording of the agent's reply as the LM learns its units (and ``eval`` checks
    them): trimmed, with ``REPLY_LEAD_S`` of lead."""
    return trim_silence(audio, lead_s=REPLY_LEAD_S)


@dataclass
class Turn:
    audio: str  # utterance id: key of the frame cache
    answer: str
    text_only: bool = False  # lay out the reply's text and stop (the dialogue's last turn)


@dataclass
class Dialogue:
    id: str
    split: str
    turns: list[Turn]
    meta: dict


def chain_dialogues(
    dialogues: Sequence[Dialogue], share: float, seed: int, longest: int = 3
) -> list[Dialogue]:
    """Conversations of 2 to ``longest`` dialogues in a row, ``share`` as many as
    ``dialogues`` (seeded; each pass over a shuffled order).

    The corpus's dialogues are one question, or a question and a follow-up; a live
    conversation goes on. Trained on those alone, the model read every question after an
    exchange as a follow-up: chained in one conversation, 6 of 60 held-out questions after
    the first were answered right (58 of 60 each on its own). Chains teach it that a new
    question can follow an answer and owes it nothing.
    """
    rng = random.Random(f"chain:{seed}")
    order = list(dialogues)
    rng.shuffle(order)
    chains: list[Dialogue] = []
    at, wanted = 0, round(share * len(dialogues))
    while len(chains) < wanted:
        n = rng.randint(2, longest)
        if n > len(order):
            break
        if at + n > len(order):
            rng.shuffle(order)
            at = 0
        part = order[at : at + n]
        at += n
        turns = [t for d in part for t in d.turns]
        chains.append(Dialogue("+".join(d.id for d in part), part[0].split, turns, {}))
    return chains


def question_drills(dialogues: Sequence[Dialogue], share: float, seed: int) -> list[Dialogue]:
    """``share`` as many dialogues as ``dialogues``: one whole dialogue, then the first
    question of another with its reply laid out as text alone (seeded; drawn with
    replacement).

    A new question right after an answer owes that answer nothing, and the follow-up
    drills (arithmetic on the answer before) pulled the other way: trained with them, a
    model answered "what is ten minus ten" said right after "fifty two" with "fifty two
    minus ten". These pairs hold the line without recording anything.
    """
    wanted = round(share * len(dialogues))
    if len(dialogues) < 2 or wanted == 0:
        return []
    rng = random.Random(f"questions:{seed}")
    out: list[Dialogue] = []
    for _ in range(wanted):
        i, j = rng.sample(range(len(dialogues)), 2)
        first, second = dialogues[i], dialogues[j]
        asked = second.turns[0]
        turns = [*first.turns, Turn(asked.audio, asked.answer, text_only=True)]
        out.append(Dialogue(f"{first.id}+{second.id}?", first.split, turns, {}))
    return out


def extra_refusals(dialogues: Sequence[Dialogue], share: float, seed: int) -> list[Dialogue]:
    """``share`` as many dialogues as ``dialogues``, drawn (seeded, with replacement) from
    its out-of-domain questions and their refusal: more of the examples that teach the
    LM where the domain ends.

    Refusals are a small share of the corpus; as the in-domain wordings grew (lead-ins like
    "can you tell me", sums put together from parts) a model trained on it started to
    answer out-of-domain questions from a held-out voice with a sum (3 of 14).
    """
    pool = [d for d in dialogues if d.meta.get("turns", [{}])[0].get("intent") == "refuse"]
    wanted = round(share * len(dialogues))
    if not pool or wanted == 0:
        return []
    rng = random.Random(f"refusals:{seed}")
    return [rng.choice(pool) for _ in range(wanted)]


def read_dialogues(corpus: Path) -> list[Dialogue]:
    """The corpus's dialogues, as the LM's data needs them."""
    return [
        Dialogue(d["id"], d["split"], [Turn(t["audio"], t["answer"]) for t in d["turns"]], d)
        for d in read_manifest(corpus)
    ]


def cache_user_frames(
    corpus: Path,
    dialogues: Iterable[Dialogue],
    features: FeatureConfig,
    encoder: BlockCausalEncoder,
    cache: Path,
    progress: Callable[[Iterable], Iterable] = lambda it: it,
    load: Callable[[str], np.ndarray] | None = None,
    shared: bool = False,
) -> dict[str, torch.Tensor]:
    """Encoder frames of every user utterance, computed once and kept in ``cache``;
    ``load`` gives an utterance's audio by its key (default: the corpus file of that name);
    ``shared``: what enters the tuned layers (see :func:`encode_utterance`)."""
    frames: dict[str, torch.Tensor] = torch.load(cache) if cache.is_file() else {}
    todo = sorted({t.audio for d in dialogues for t in d.turns} - set(frames))
    for i, name in enumerate(progress(todo)):
        raw = load(name) if load is not None else load_audio(Path(corpus) / name)
        audio = pad_like_the_session(raw, name)
        frames[name] = encode_utterance(audio, features, encoder, shared).to(torch.float16)
        if (i + 1) % 2000 == 0:
            torch.save(frames, cache)
    if todo:
        torch.save(frames, cache)
    return frames


def reply_audio(corpus: Path, answer: str, extra: Path | None = None) -> np.ndarray:
    """The agent's recording of ``answer`` as the LM learns to say it (silence trimmed):
    the corpus's, else the one under ``extra`` (replies the corpus never recorded)."""
    path = Path(corpus) / answer_path(answer)
    if extra is not None and not path.is_file():
        path = Path(extra) / answer_path(answer)
    return trim_reply(load_audio(path))


def cache_replies(
    corpus: Path,
    answers: Iterable[str],
    text_tokenizer,
    speech_codes: Callable[[np.ndarray], list[int]],
    cache: Path,
    progress: Callable[[Iterable], Iterable] = lambda it: it,
    extra: Path | None = None,
) -> dict[str, tuple[list[int], list[int]]]:
    """Text ids and speech codes of every reply, computed once and kept in ``cache``
    (recordings from the corpus, else from ``extra``: see :func:`reply_audio`)."""
    replies: dict = json.loads(cache.read_text()) if cache.is_file() else {}
    todo = sorted(set(answers) - set(replies))
    for answer in progress(todo):
        audio = reply_audio(corpus, answer, extra)
        text_ids = text_tokenizer.encode(answer, add_special_tokens=False)
        replies[answer] = (list(text_ids), [int(c) for c in speech_codes(audio)])
    if todo:
        cache.write_text(json.dumps(replies))
    return {k: (list(v[0]), list(v[1])) for k, v in replies.items()}


@dataclass
class Example:
    """One dialogue laid out: ``ids`` with AUDIO where adapter rows go, the frames of each
    audio span in order, and per position the target to predict next (-100: none)."""

    ids: list[int]
    audio: list[torch.Tensor]
    targets: list[int]
    kinds: list[int]  # TokenClass of each target (-1 where none)


def layout_dialogue(
    dialogue: Dialogue,
    frames: dict[str, torch.Tensor],
    replies: dict[str, tuple[list[int], list[int]]],
    layout: VocabLayout,
    schedule: ScheduleConfig,
    stack: int,
) -> Example:
    """The token sequence of ``dialogue`` and what each position learns to predict."""
    ids: list[int] = []
    audio: list[torch.Tensor] = []
    for turn in dialogue.turns:
        f = frames[turn.audio]
        audio.append(f)
        ids += [layout.user] + [AUDIO] * -(-f.shape[0] // stack) + [layout.assistant]
        text, codes = replies[turn.answer]
        if turn.text_only:
            laid = _text_first(text, layout, schedule)
        else:
            laid = interleave(text, [layout.speech_offset + c for c in codes], schedule)
        special = {TokenClass.TEXT_END: layout.text_end, TokenClass.EOT: layout.eot}
        ids += [special.get(cls, tok) for cls, tok in laid]
        if turn.text_only:
            break
    return _shifted(ids, audio, layout)


def _text_first(
    text: list[int], layout: VocabLayout, schedule: ScheduleConfig
) -> list[tuple[TokenClass, int]]:
    """The reply as the schedule lays it out, up to its first speech token: what the model
    says before it speaks, the same whatever speech would follow."""
    slots = schedule.speech_tokens * (len(text) // max(1, schedule.text_tokens) + 2)
    stand_in = [layout.speech_offset] * min(slots, schedule.max_speech_tokens)
    laid = interleave(text, stand_in, schedule)
    first_speech = next(i for i, (cls, _) in enumerate(laid) if cls is TokenClass.SPEECH)
    return laid[:first_speech]


def _shifted(ids: list[int], audio: list[torch.Tensor], layout: VocabLayout) -> Example:
    """Targets are the next id wherever the next id is a reply token (after <|assistant|>
    up to and including the turn's <|eot|>)."""
    targets = [-100] * len(ids)
    kinds = [-1] * len(ids)
    in_reply = False
    for i, tok in enumerate(ids):
        if tok == layout.assistant:
            in_reply = True
        if in_reply and i + 1 < len(ids):
            targets[i] = ids[i + 1]
            kinds[i] = int(layout.classify(ids[i + 1]))
        if tok == layout.eot:
            in_reply = False
            targets[i], kinds[i] = -100, -1
    return Example(ids, audio, targets, kinds)
