"""Semantic turn detection: the detector, its streaming peek, the policy, the session."""

import dataclasses
import json
import random

import numpy as np
import pytest
import torch

from parley.agent.core.endpoint import Endpointer, semantic_policy
from parley.errors import CheckpointError
from parley.llm.turn_detector import TurnDetector, TurnDetectorConfig, load_turn_detector
from parley.train.turn_data import cut_mid_phrase
from tests.test_session import SR, run, speechlike


def test_peek_is_the_offline_encoding_and_leaves_the_stream_alone(tiny_checkpoint):
    from parley.llm.checkpoint import load_checkpoint
    from parley.llm.frontend import StreamingFrontEnd
    from parley.tokenizers.features import log_mel

    ckpt = load_checkpoint(tiny_checkpoint)
    features = ckpt.manifest.model.features
    audio = speechlike(int(1.7 * SR), seed=3)
    said, silence = audio[: int(1.3 * SR)], audio[int(1.3 * SR) :]
    front = StreamingFrontEnd(features, ckpt.encoder, ckpt.adapter)
    for at in range(0, said.size, 1234):  # odd chunks: blocks end mid-chunk
        front.push(said[at : at + 1234])
    peeked = front.peek(silence, keep=40)
    with torch.inference_mode():
        offline = ckpt.encoder(torch.from_numpy(log_mel(audio, features)))
    torch.testing.assert_close(peeked, offline[-40:], atol=1e-4, rtol=1e-4)
    # The stream goes on as if nobody had looked.
    front.push(silence)
    twin = StreamingFrontEnd(features, ckpt.encoder, ckpt.adapter)
    twin.push(audio)
    torch.testing.assert_close(front.finish(), twin.finish())


def test_an_utterance_ends_with_added_samples_as_if_they_had_been_pushed(tiny_checkpoint):
    # The reply hears the turn's silence topped up: finish(pcm) and peek_utterance(pcm)
    # are the utterance with pcm pushed, and the peek leaves the stream as it was.
    from parley.llm.checkpoint import load_checkpoint
    from parley.llm.frontend import StreamingFrontEnd

    ckpt = load_checkpoint(tiny_checkpoint)
    features = ckpt.manifest.model.features

    def front(audio):
        f = StreamingFrontEnd(features, ckpt.encoder, ckpt.adapter)
        f.push(audio)
        return f

    said, more = speechlike(int(1.3 * SR), seed=4), speechlike(int(0.12 * SR), seed=5)
    whole = front(np.concatenate([said, more])).finish()
    stream = front(said)
    torch.testing.assert_close(stream.peek_utterance(more), whole)
    torch.testing.assert_close(stream.peek_utterance(), front(said).finish())
    torch.testing.assert_close(stream.finish(more), whole)


def test_semantic_policy_asks_then_decides_and_waits_out_a_pause():
    turn = Endpointer(endpoint=8000, preroll=0)
    turn.policy = semantic_policy("medium", SR, 500)  # ask from 200 ms, P >= 0.5, at most 2 s
    turn.speech_started(0, oldest=0)
    turn.speech_stopped(16000)
    assert not turn.ask_due(16000 + 3199)
    assert turn.ask_due(16000 + 3200) and not turn.ask_due(16000 + 3201)
    assert not turn.ended(16000 + 3200, finished=0.05)  # "what is seven ...": wait
    assert turn.ask_due(16000 + 4000)  # again 50 ms later
    assert turn.ended(16000 + 4000, finished=0.9)  # finished: answer now
    assert not turn.ended(16000 + 4000, finished=0.05)  # (had it said no: wait)
    assert not turn.ask_due(16000 + 6401 + 800)  # past 400 ms the detector is not asked
    assert not turn.ended(16000 + 31999) and turn.ended(16000 + 32000)  # the longest wait
    # Speech within the wait carries the turn on and starts the asking afresh.
    turn.speech_started(20000, oldest=0)
    assert turn.silence_from is None and not turn.ended(60000, finished=1.0)


def test_a_leaning_answer_ends_the_turn_after_the_unsure_wait():
    turn = Endpointer(endpoint=8000, preroll=0)
    turn.policy = semantic_policy("medium", SR, 500)  # P >= 0.15 ends it after 700 ms
    turn.speech_started(0, oldest=0)
    turn.closing(16000)  # the VAD hears silence; no stop called yet
    assert turn.quiet_from == 16000 and turn.ask_due(16000 + 3200)
    assert not turn.ended(16000 + 3200, finished=0.3)
    assert not turn.ended(16000 + 11199)  # the answer is remembered between asks
    assert turn.ended(16000 + 11200)
    turn.speech_stopped(16000)  # the VAD's stop for the same silence keeps the answer
    assert turn.last_p == 0.3 and turn.ended(16000 + 11200)
    turn.speech_started(20000, oldest=0)  # the user goes on: forgotten
    assert turn.last_p is None and turn.quiet_from is None


def test_eagerness_orders_the_waits():
    waits = {e: semantic_policy(e, SR, 500) for e in ("high", "medium", "low", "auto")}
    # auto asks from 200 ms into the silence: a sure yes ends the turn then; at the VAD's
    # stop a yes more likely than not does; a sure no waits up to 2 s, anything between
    # the 500 ms endpoint.
    auto = waits["auto"]
    assert (auto.first_ask, auto.threshold, auto.stop_threshold) == (200 * 16, 0.9, 0.5)
    assert (auto.unsure_threshold, auto.unsure_wait, auto.longest) == (0.15, 8000, 32000)
    assert semantic_policy("auto", SR, 3000).longest == 3000 * 16  # never under the endpoint
    turn = Endpointer(endpoint=8000, preroll=0)
    turn.policy = auto
    turn.speech_started(0, oldest=0)
    turn.closing(16000)  # silence the VAD has not called a stop
    assert not turn.ask_due(16000 + 3199)
    assert turn.ask_due(16000 + 3200) and not turn.ended(16000 + 3200, finished=0.8)
    assert turn.ask_due(16000 + 4000)
    assert not turn.ended(16000 + 4000, finished=0.99, within_domain=False)  # the refusal
    assert turn.ended(16000 + 4000, finished=0.95)
    turn.speech_stopped(16000)  # the stop, 320 ms in: asked at once, more likely than not
    assert turn.ask_due(16000 + 5120) and turn.ended(16000 + 5120, finished=0.6)
    assert not turn.ended(16000 + 5120, finished=0.4)  # between: the endpoint
    assert not turn.ended(16000 + 7999) and turn.ended(16000 + 8000)
    # A sure no waits out the pause, unless the turn began over a reply: the endpoint (and
    # over a reply, where the user has taken the turn, the stop's P ends it sooner).
    for over_reply, ends_at in ((False, 32000), (True, 8000)):
        turn.drop()
        turn.speech_started(0, oldest=0, over_reply=over_reply)
        turn.closing(16000)
        assert turn.ask_due(16000 + 3200)
        assert turn.ended(16000 + 3200, finished=0.6) is over_reply
        turn.speech_stopped(16000)
        assert turn.ask_due(16000 + 5120) and not turn.ended(16000 + 5120, finished=0.05)
        assert not turn.ended(16000 + ends_at - 1) and turn.ended(16000 + ends_at)
    # Once a pause has outlasted the endpoint and the user went on, the rest ("... four")
    # ends at the VAD's stop, whatever the detector, which hears mostly the pause, says.
    turn.drop()
    turn.speech_started(0, oldest=0)
    turn.speech_stopped(16000)
    assert turn.ask_due(16000 + 3200) and not turn.ended(16000 + 3200, finished=0.05)
    assert not turn.ended(16000 + 16000)  # waiting out the pause, 1 s in
    turn.speech_started(16000 + 19200, oldest=0)  # the rest, after 1.2 s
    assert turn.waited_out
    turn.closing(48000)
    assert turn.ask_due(48000 + 3200) and not turn.ended(48000 + 3200, finished=0.05)
    turn.speech_stopped(48000)
    assert turn.ended(48000 + 5120)
    turn.drop()  # a new turn may wait again
    turn.speech_started(60000, oldest=0)
    assert not turn.waited_out
    # Never asked (a VAD tuned to call its stop past the asking window): the endpoint.
    turn.drop()
    turn.speech_started(20000, oldest=0)
    turn.speech_stopped(30000)
    assert not turn.ended(30000 + 7999) and turn.ended(30000 + 8000)
    assert waits["high"].first_ask < waits["medium"].first_ask < waits["low"].first_ask
    assert waits["high"].threshold < waits["medium"].threshold < waits["low"].threshold
    assert waits["high"].longest < waits["medium"].longest < waits["low"].longest
    assert waits["high"].unsure_wait < waits["medium"].unsure_wait < waits["low"].unsure_wait


class _Says:
    """A detector that gives one answer, and counts the questions."""

    def __init__(self, p: float, beyond_reply: str | None = None) -> None:
        self.p, self.asked = p, 0
        self.cfg = TurnDetectorConfig(d_model=0, frames=60, beyond_reply=beyond_reply)

    def probability(self, frames: torch.Tensor) -> float:
        # As many frames as it reads (the turn, with its pre-roll, is longer than 1.2 s).
        assert frames.ndim == 2 and frames.shape[0] == 60
        self.asked += 1
        return self.p


@pytest.mark.parametrize(
    ("p", "eagerness", "after_s"),
    [
        (0.95, "auto", 0.2),  # sure: when the (scripted) VAD calls its stop, 200 ms in
        (0.6, "auto", 0.2),  # more likely than not at the stop: ends there too
        (0.3, "auto", 0.5),  # between: the timer
        (0.05, "auto", 2.0),  # sure it is unfinished: auto waits for the rest too
        (0.6, "medium", 0.2),
        (0.2, "medium", 0.7),  # leaning: the middle wait
        (0.05, "medium", 2.0),  # unfinished: the longest wait
    ],
)
async def test_the_session_ends_a_finished_turn_early_and_waits_out_an_unfinished_one(
    tiny_model, p, eagerness, after_s
):
    detector = _Says(p)
    model = dataclasses.replace(tiny_model, turn_detector=detector)
    _, events, _ = await run(
        model, [(0.2, 1.4)], 6.0, turn_detection="semantic_vad", eagerness=eagerness
    )
    turn_end = next(e for e in events if e.type == "user_turn_ended")
    assert turn_end.t == pytest.approx(1.4 + after_s, abs=0.011)
    assert detector.asked >= 1


@pytest.mark.parametrize(
    ("beyond_reply", "after_s"),
    [
        ("the words the tiny model never says", 0.2),  # it answers: sure at 200 ms ends
        (None, 0.32),  # no refusal known: only the VAD's stop, 320 ms in
    ],
)
async def test_auto_trusts_a_sure_yes_before_the_stop_only_where_the_reply_answers(
    tiny_model, beyond_reply, after_s
):
    detector = _Says(0.95, beyond_reply)
    model = dataclasses.replace(tiny_model, turn_detector=detector)
    _, events, _ = await run(model, [(0.2, 1.4)], 6.0, stop_delay=5120)
    turn_end = next(e for e in events if e.type == "user_turn_ended")
    assert turn_end.t == pytest.approx(1.4 + after_s, abs=0.011)


def test_a_reply_started_ahead_says_whether_the_words_are_of_the_domain():
    from types import SimpleNamespace

    from parley.agent.core.preemptive import Preemption

    refusal = "sorry i can only help with sums numbers days and months"
    ahead = Preemption(None, None, None, None, None, None)  # type: ignore[arg-type]
    assert not ahead.within_domain(refusal)  # no reply ahead
    for pieces, within in (
        ([], False),  # nothing said yet
        (["sor"], False),  # may yet be the refusal
        (["sorry i can", " only help"], False),
        (["Sorry, I can only help with sums numbers days and months."], False),
        (["seven", " times eight"], True),
    ):
        ahead.held = SimpleNamespace(text=pieces)  # type: ignore[assignment]
        assert ahead.within_domain(refusal) is within, pieces
        assert not ahead.within_domain(None)  # no refusal to tell it by


async def test_server_vad_keeps_the_timer_even_with_a_detector(tiny_model):
    detector = _Says(0.99)
    model = dataclasses.replace(tiny_model, turn_detector=detector)
    _, events, _ = await run(model, [(0.2, 1.4)], 6.0, turn_detection="server_vad")
    turn_end = next(e for e in events if e.type == "user_turn_ended")
    assert turn_end.t == pytest.approx(1.4 + 0.5, abs=0.011) and detector.asked == 0


def test_detector_round_trips_and_a_broken_one_is_a_clear_error(tmp_path):
    torch.manual_seed(0)
    model = TurnDetector(TurnDetectorConfig(d_model=16, hidden=8, frames=10)).eval()
    frames = torch.randn(7, 16)  # fewer than the window: zeros in front
    model.save(tmp_path)
    again = load_turn_detector(tmp_path)
    assert again is not None and again.probability(frames) == model.probability(frames)
    assert 0.0 < model.probability(frames) < 1.0
    assert load_turn_detector(tmp_path / "none") is None  # no detector: the timer
    (tmp_path / "turn" / "config.json").write_text("{")
    with pytest.raises(CheckpointError, match="turn detector config"):
        load_turn_detector(tmp_path)


def test_cuts_never_leave_a_finished_question():
    rng = random.Random(0)
    cuts = {cut_mid_phrase("um, what comes after seventy one please", rng) for _ in range(50)}
    # Not after "seventy" (another finished question), not before "please" alone.
    assert cuts == {"um", "um, what", "um, what comes", "um, what comes after"}
    assert cut_mid_phrase("hello", rng) is None


def tiny_slice(tiny_checkpoint, tmp_path, dialogues: int):
    """A corpus of ``dialogues`` in two espeak voices, and a copy of the tiny checkpoint to
    add a head to: (corpus, checkpoint, voices)."""
    import shutil

    from parley.agent.cli import main
    from parley.train.voices import available_voices

    voices = [v.name for v in available_voices() if v.engine == "espeak"][:2]
    assert voices, "espeak-ng voices are needed to speak the examples"
    corpus, ckpt = tmp_path / "corpus", tmp_path / "ckpt"
    args = ["make-corpus", "--out", str(corpus), "--dialogues", str(dialogues), "--heldout"]
    args += ["1", "--workers", "1", "--quiet", "--voices", ",".join(voices), "--seed", "2"]
    assert main(args) == 0
    shutil.copytree(tiny_checkpoint, ckpt)
    return corpus, ckpt, voices


def test_train_turns_on_a_tiny_slice_adds_a_traceable_detector(tiny_checkpoint, tmp_path):
    from parley.agent.cli import main
    from parley.agent.core.model import AgentModel
    from parley.agent.core.session import DuplexSession
    from parley.config import load_config
    from parley.train.export import sha256_of

    corpus, ckpt, _ = tiny_slice(tiny_checkpoint, tmp_path, 8)
    argv = ["train-turns", "--checkpoint", str(ckpt), "--corpus", str(corpus)]
    argv += ["--work", str(tmp_path / "work"), "--questions", "10", "--epochs", "2"]
    assert main([*argv, "--threads", "1", "--no-progress"]) == 0
    prov = json.loads((ckpt / "parley.json").read_text())["provenance"]
    assert prov["turn_detector"]["reproduce"].startswith("python run_agent.py train-turns")
    assert set(prov["turn_detector"]["heldout"]) >= {"all_finished", "all_cut"}
    for name in ("turn/config.json", "turn/model.safetensors", "turn/metrics.json"):
        assert prov["files_sha256"][name] == sha256_of(ckpt / name)
    model = AgentModel.load(ckpt, load_config("tiny"))
    assert model.turn_detector is not None
    assert DuplexSession(model).turn_detection == "semantic_vad"  # the default, now possible
    timer = model.config.agent.model_copy(update={"turn_detection": "server_vad"})
    assert DuplexSession(model, timer).turn_detection == "server_vad"


def test_commands_are_finished_however_short(tiny_checkpoint):
    import numpy as np

    from parley.llm.checkpoint import load_checkpoint
    from parley.train.turn_data import make_examples
    from parley.train.voices import voice

    ckpt = load_checkpoint(tiny_checkpoint)
    speaker = voice("espeak-en-us")
    items = [("stop please", speaker), ("i need a taxi to the train station", speaker)]
    echo = np.sin(np.arange(16000) / 7).astype(np.float32)
    window = TurnDetector(TurnDetectorConfig(d_model=ckpt.manifest.model.encoder.d_model)).window
    beyond = {"i need a taxi to the train station"}
    examples = make_examples(
        items, ckpt.manifest.model.features, ckpt.encoder, window, 0, echo=echo, beyond=beyond
    )
    command = [e for e in examples if e.text == "stop please"]
    assert len(command) == 3 and all(e.finished for e in command)  # whole only, 3 silences
    assert {e.kind for e in command} == {"command"}
    request = [e for e in examples if e.text != "stop please"]
    assert {e.finished for e in request} == {True, False} and len(request) == 6
    assert {e.kind for e in request} == {"beyond"}  # its cut too


def test_beyond_share_adds_requests_beyond_the_domain(tmp_path):
    from parley.train.domain import ood_sentences
    from parley.train.spoken_refusals import more_ood_sentences
    from parley.train.turn_data import BEYOND_DOMAIN, COMMANDS, HELDOUT_BEYOND
    from parley.train.turn_train import _questions

    records = [
        {
            "split": split,
            "condition": "voice",
            "voice": voice,
            "turns": [{"question": f"what is {i} plus one"} for i in range(20)],
        }
        for split, voice in (("train", "espeak-en-us"), ("heldout", "flite-rms"))
    ]
    (tmp_path / "manifest.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    plain = [q for q, _ in _questions(tmp_path, "train", 16, seed=0)]
    assert len(plain) == 16 + 3 * len(BEYOND_DOMAIN) + 3 * len(COMMANDS)  # the shipped recipe
    train = [q for q, _ in _questions(tmp_path, "train", 16, seed=0, share=0.25)]
    assert train[:-4] == plain and train[-4:] == list(more_ood_sentences()[:4])  # in turn
    held = [q for q, _ in _questions(tmp_path, "heldout", 16, seed=0, share=0.25)]
    assert held[-4:] == ood_sentences(heldout=True)[:4]
    assert set(held) & set(HELDOUT_BEYOND) and not set(held) & set(more_ood_sentences())


@pytest.mark.parametrize(
    ("p", "ahead_ms", "topped_up"),
    [
        (0.95, 100, ("peek_utterance", 400)),  # the reply started 100 ms in, then taken
        (0.3, None, ("finish", 180)),  # the timer's turn, fed up to the stop
    ],
)
async def test_every_turn_hears_its_silence_topped_up(
    tiny_model, monkeypatch, p, ahead_ms, topped_up
):
    # The model hears 500 ms of the silence, what it heard repeated: a reply started 100
    # ms in gets 400 ms more; a turn that waits the endpoint was fed up to the VAD's stop
    # (here, as the shipped VAD's, 320 ms in), and gets 180 ms more.
    from parley.llm.frontend import StreamingFrontEnd

    added = []

    def spying(name):
        real = getattr(StreamingFrontEnd, name)

        def spy(self, pcm=None):
            added.append((name, 0 if pcm is None else pcm.size // 16))
            return real(self, pcm)

        return spy

    for name in ("finish", "peek_utterance"):
        monkeypatch.setattr(StreamingFrontEnd, name, spying(name))
    model = dataclasses.replace(tiny_model, turn_detector=_Says(p, "never said"))
    await run(model, [(0.2, 1.4)], 4.0, stop_delay=5120, preemptive_reply_ms=ahead_ms)
    assert added == [topped_up]
