"""LM training: the laid-out dialogues are what inference feeds, and training resumes."""

import asyncio
import contextlib

import numpy as np
import pytest
import torch

from parley.config import AdapterConfig, EngineConfig, LMConfig, ScheduleConfig
from parley.errors import ConfigError
from parley.llm.adapter import Adapter
from parley.llm.lm_build import layout_of, random_lm
from parley.llm.transformers_engine import TransformersSpokenLM
from parley.train.lm_data import AUDIO, Dialogue, Turn, layout_dialogue
from parley.train.lm_train import LMTrainConfig, SpokenLMTrainee, train_lm

LM = LMConfig(hidden=48, layers=2, heads=2, kv_heads=1, intermediate=96, text_vocab=300)
SCHED = ScheduleConfig(text_tokens=3, speech_tokens=5, min_speech_tokens=0, max_speech_tokens=40)
CODEBOOK = 16
D_MODEL = 8
ANSWERS = ["seven times eight is fifty six", "the day after monday is tuesday", "goodbye"]


def setup(seed=0):
    torch.manual_seed(seed)
    lm, tok = random_lm(LM, CODEBOOK, seed, corpus="\n".join(ANSWERS * 3))
    layout = layout_of(lm, tok, CODEBOOK)
    adapter = Adapter.from_config(AdapterConfig(stack=2, hidden=32), D_MODEL, LM.hidden, 1)
    g = torch.Generator().manual_seed(seed)
    replies = {
        a: (
            tok.encode(a, add_special_tokens=False),
            torch.randint(0, CODEBOOK, (20 + i,), generator=g).tolist(),
        )
        for i, a in enumerate(ANSWERS)
    }
    frames = {f"u{i}": torch.randn(11 + 2 * i, D_MODEL, generator=g) for i in range(4)}
    dialogues = [
        Dialogue("a", "train", [Turn("u0", ANSWERS[0])], {}),
        Dialogue("b", "train", [Turn("u1", ANSWERS[1]), Turn("u2", ANSWERS[2])], {}),
    ]
    examples = [layout_dialogue(d, frames, replies, layout, SCHED, 2) for d in dialogues]
    return SpokenLMTrainee(adapter, lm), layout, replies, frames, dialogues, examples


def test_layout_marks_audio_and_targets_only_replies():
    _, layout, _, frames, _, (one, two) = setup()
    assert one.ids[0] == layout.user and one.ids.count(AUDIO) == -(-frames["u0"].shape[0] // 2)
    assert two.ids.count(layout.user) == 2 and two.ids.count(layout.eot) == 2
    for ex in (one, two):
        for i, t in enumerate(ex.targets):
            if t != -100:  # a target is always the next id, and never an audio position
                assert t == ex.ids[i + 1] and ex.ids[i + 1] != AUDIO
        # every reply token is learnt, from <|assistant|> on, up to its <|eot|>
        reply_positions = sum(1 for t in ex.targets if t != -100)
        assert reply_positions == sum(
            len(ex.ids[i + 1 : ex.ids.index(layout.eot, i) + 1])
            for i, t in enumerate(ex.ids)
            if t == layout.assistant
        )


async def _reply(ctx):
    async with contextlib.aclosing(ctx.reply()) as stream:
        return [d.token_id async for d in stream]


def test_memorised_dialogues_replay_through_the_inference_engine(tmp_path):
    model, layout, replies, frames, dialogues, examples = setup()
    cfg = LMTrainConfig(
        steps=300,
        batch_size=2,
        lr=3e-3,
        warmup=10,
        save_every=300,
        eval_every=1000,
        threads=1,
        frame_dropout=0.0,
        bf16=False,
    )
    last = train_lm(model, examples, [], cfg, tmp_path, progress=False)
    assert last["loss"] < 0.05, last
    assert (tmp_path / "loss.png").is_file() and (tmp_path / "metrics.jsonl").is_file()
    engine = TransformersSpokenLM(model.lm, layout, SCHED, EngineConfig())
    for dialogue, example in zip(dialogues, examples, strict=True):
        ctx = engine.open_context()
        for turn in dialogue.turns:
            with torch.no_grad():
                ctx.add_user_audio(model.adapter(frames[turn.audio]))
            got = asyncio.run(_reply(ctx))
            start = [i for i, t in enumerate(example.ids) if t == layout.assistant][
                dialogue.turns.index(turn)
            ]
            want = example.ids[start + 1 : example.ids.index(layout.eot, start) + 1]
            assert got == want


def test_training_resumes_where_it_stopped(tmp_path):
    cfg = dict(
        batch_size=2,
        lr=3e-3,
        warmup=2,
        save_every=4,
        eval_every=1000,
        threads=1,
        bf16=False,
        seed=3,
    )
    a, *_, ex = setup()
    train_lm(a, ex, [], LMTrainConfig(steps=8, **cfg), tmp_path / "a", progress=False)
    b, *_, ex = setup()
    train_lm(b, ex, [], LMTrainConfig(steps=8, **cfg), tmp_path / "b", progress=False, stop_at=4)
    c, *_, ex = setup()  # fresh weights: everything must come from the saved state
    train_lm(c, ex, [], LMTrainConfig(steps=8, **cfg), tmp_path / "b", progress=False)
    for k, v in a.state_dict().items():
        torch.testing.assert_close(c.state_dict()[k], v, msg=k)


def test_a_state_saved_for_another_model_is_refused_by_name(tmp_path):
    cfg = LMTrainConfig(steps=2, batch_size=2, warmup=1, eval_every=1000, threads=1, bf16=False)
    a, *_, ex = setup()
    train_lm(a, ex, [], cfg, tmp_path, progress=False)
    other = SpokenLMTrainee(
        Adapter.from_config(AdapterConfig(stack=2, hidden=16), D_MODEL, LM.hidden, 1), a.lm
    )
    with pytest.raises(ConfigError, match=r"train_state.pt was saved by a run with another"):
        train_lm(other, ex, [], LMTrainConfig(**{**cfg.__dict__, "steps": 4}), tmp_path)


def test_threads_grow_once_the_cpu_is_shared_no_more(tmp_path):
    # The vocoder's process ends long before the LM: from the next check on, the LM takes
    # the threads it was given back.
    model, *_, ex = setup()
    cfg = LMTrainConfig(steps=60, batch_size=2, warmup=2, eval_every=1000, threads=1, bf16=False)
    asked, said = [], []

    def more_threads():
        asked.append(torch.get_num_threads())
        return None if len(asked) < 2 else 2

    before = torch.get_num_threads()
    try:
        train_lm(model, ex, [], cfg, tmp_path, said.append, False, more_threads=more_threads)
        assert asked == [1, 1]  # asked at steps 25 and 50, then no more
        assert torch.get_num_threads() == 2
        assert said == ["step 50: the CPU is free, going on with 2 threads"]
    finally:
        torch.set_num_threads(before)


def test_interleave_refusal_is_a_value_error():
    model, layout, replies, frames, _, _ = setup()
    too_long = ScheduleConfig(
        text_tokens=3, speech_tokens=5, min_speech_tokens=0, max_speech_tokens=10
    )
    with pytest.raises(ValueError):
        layout_dialogue(
            Dialogue("x", "train", [Turn("u0", ANSWERS[0])], {}),
            frames,
            replies,
            layout,
            too_long,
            2,
        )


def test_chained_conversations_join_whole_dialogues_in_order():
    from parley.train.lm_data import chain_dialogues

    dialogues = [
        Dialogue(f"d{i}", "train", [Turn(f"u{i}_{k}", f"a{i}_{k}") for k in range(1 + i % 2)], {})
        for i in range(40)
    ]
    chains = chain_dialogues(dialogues, share=0.5, seed=3)
    assert len(chains) == 20
    assert chains == chain_dialogues(dialogues, share=0.5, seed=3)  # seeded
    by_id = {d.id: d for d in dialogues}
    for chain in chains:
        parts = [by_id[i] for i in chain.id.split("+")]
        assert 2 <= len(parts) <= 3 and len(set(chain.id.split("+"))) == len(parts)
        assert chain.turns == [t for d in parts for t in d.turns]  # each whole, in order
        assert chain.split == "train"
    assert chain_dialogues(dialogues, share=0.0, seed=3) == []
    # More chains than one pass allows: the order is shuffled again, never cut short.
    assert len(chain_dialogues(dialogues, share=2.0, seed=3)) == 80


def test_train_refuses_a_chained_share_out_of_range(tmp_path, capsys):
    from parley.agent.cli import main

    args = ["train", "--out", str(tmp_path / "o"), "--work", str(tmp_path / "w")]
    assert main([*args, "--chained", "-0.5"]) == 2
    assert "--chained -0.5" in capsys.readouterr().err
    assert main([*args, "--tune-encoder", "-1"]) == 2
    assert "--tune-encoder and --tuned-rank take 0 or more" in capsys.readouterr().err
    # The shipped model's LM hears two tuned layers: going on from it needs them.
    assert main([*args, "--init-from", "configs/model", "--tune-encoder", "1"]) == 2
    assert "pass --tune-encoder 2 to go on from it" in capsys.readouterr().err


def test_a_reply_keeps_its_lead_before_the_first_sound():
    from parley.train.lm_data import REPLY_LEAD_S, trim_reply, trim_silence

    sr = 16000
    tone = 0.3 * np.sin(2 * np.pi * 220 * np.arange(sr // 2) / sr)
    audio = np.concatenate([np.zeros(sr // 5), tone, np.zeros(sr // 5)]).astype(np.float32)
    assert len(trim_silence(audio)) == len(tone) + 2 * 640  # 40 ms either side
    assert len(trim_reply(audio)) == len(tone) + round(REPLY_LEAD_S * sr) + 640
    assert trim_reply(audio)[: round(REPLY_LEAD_S * sr)].max() == 0.0


def test_a_text_only_reply_is_the_full_replys_layout_up_to_its_first_speech():
    _, layout, replies, frames, _, _ = setup()
    full = Dialogue("b", "train", [Turn("u1", ANSWERS[1]), Turn("u2", ANSWERS[0])], {})
    drill = Dialogue(
        "b>", "train", [Turn("u1", ANSWERS[1]), Turn("u2", ANSWERS[0], text_only=True)], {}
    )
    whole = layout_dialogue(full, frames, replies, layout, SCHED, 2)
    # A drill needs no speech codes: the same text with none laid out the same.
    text_alone = {**replies, ANSWERS[0]: (replies[ANSWERS[0]][0], [])}
    cut = layout_dialogue(drill, frames, text_alone, layout, SCHED, 2)
    first_speech = next(
        i
        for i in range(whole.ids.index(layout.eot) + 1, len(whole.ids))
        if layout.classify(whole.ids[i]).name == "SPEECH"
    )
    assert cut.ids == whole.ids[:first_speech]
    assert cut.targets[:-1] == whole.targets[: first_speech - 1] and cut.targets[-1] == -100
    # The answer's text fills more than one text slot here, so the drill holds the first.
    n_text = len(replies[ANSWERS[0]][0])
    assert n_text > SCHED.text_tokens
    assert cut.ids[-SCHED.text_tokens :] == replies[ANSWERS[0]][0][: SCHED.text_tokens]


def test_extra_refusals_copy_only_refusals_seeded():
    from parley.train.lm_data import extra_refusals

    def d(i, intent):
        return Dialogue(f"d{i}", "train", [Turn(f"u{i}", "x")], {"turns": [{"intent": intent}]})

    dialogues = [d(i, "refuse" if i % 5 == 0 else "plus") for i in range(40)]
    extra = extra_refusals(dialogues, 0.5, seed=0)
    assert len(extra) == 20 and {e.meta["turns"][0]["intent"] for e in extra} == {"refuse"}
    assert [e.id for e in extra] == [e.id for e in extra_refusals(dialogues, 0.5, seed=0)]
    assert extra_refusals(dialogues, 0.0, seed=0) == []
    assert extra_refusals([d(1, "plus")], 1.0, seed=0) == []


def test_question_drills_ask_a_new_first_question_after_a_whole_dialogue():
    from parley.train.lm_data import question_drills

    def d(i, follow):
        turns = [Turn(f"u{i}", f"a{i}")] + ([Turn(f"f{i}", f"b{i}")] if follow else [])
        return Dialogue(f"d{i}", "train", turns, {})

    dialogues = [d(i, i % 2 == 1) for i in range(20)]
    drills = question_drills(dialogues, 0.5, seed=3)
    assert len(drills) == 10
    by_id = {x.id: x for x in dialogues}
    for drill in drills:
        first, second = drill.id.rstrip("?").split("+")
        assert first != second
        # The whole first dialogue, laid out in full, then the other's opening question
        # with its reply as text alone (never its follow-up).
        assert drill.turns[:-1] == by_id[first].turns
        last = drill.turns[-1]
        assert (last.audio, last.answer, last.text_only) == (
            f"u{second[1:]}",
            f"a{second[1:]}",
            True,
        )
    assert [x.id for x in drills] == [x.id for x in question_drills(dialogues, 0.5, seed=3)]
    assert question_drills(dialogues, 0.0, seed=3) == []
    assert question_drills(dialogues[:1], 1.0, seed=3) == []
