"""The reply side of a session on its own: numbering, ending, cutting, failing."""

import asyncio

from parley.agent.core.barge_in import BargeIn
from parley.agent.core.bus import EventBus
from parley.agent.core.clock import VirtualClock
from parley.agent.core.events import AgentState, HistoryItem
from parley.agent.core.replies import Replies
from parley.agent.core.state import Signal
from parley.llm.engine import ReplyParams
from parley.llm.frontend import StreamingFrontEnd
from parley.tokenizers.vocoder import StreamingVocoder
from tests.test_session import SR, speechlike


class Owner:
    """The session's side, recorded."""

    def __init__(self) -> None:
        self.state = AgentState.LISTENING
        self.output_sample = 0
        self.signals: list[Signal] = []
        self.rechecks = 0

    def signal(self, signal: Signal, reason: str) -> None:
        self.signals.append(signal)

    def recheck(self) -> None:
        self.rechecks += 1


def parts(model):
    checkpoint = model.checkpoint
    frontend = StreamingFrontEnd(
        checkpoint.manifest.model.features, checkpoint.encoder, checkpoint.adapter
    )
    context = model.engine.open_context()
    owner, bus, history, events = Owner(), EventBus(), [], []
    bus.subscribe(events.append)
    tasks = []

    def spawn(coro):
        tasks.append(asyncio.get_running_loop().create_task(coro))
        return tasks[-1]

    replies = Replies(
        owner, model, frontend, context, StreamingVocoder(checkpoint.vocoder), bus,
        VirtualClock(), BargeIn(1600, 0), history, spawn,
    )  # fmt: skip
    replies.params = ReplyParams(min_speech_tokens=10, max_speech_tokens=20)
    replies.chunk_tokens, replies.max_ahead = 4, 10 * SR  # nothing plays: generate it whole
    frontend.push(speechlike(SR))
    context.add_user_audio(frontend.finish())
    return replies, owner, history, events, context, tasks


async def test_a_reply_is_numbered_when_it_answers_and_ends_once(tiny_model):
    replies, owner, history, events, _, _ = parts(tiny_model)
    reply = replies.new()
    assert reply.id == 0 and replies.current is None  # started, not yet an answer
    replies.begin(reply)
    assert (reply.id, replies.current) == (1, reply) and owner.signals == [Signal.TURN_ENDED]
    await reply.task
    texts = [e.text for e in events if e.type == "text_delta"]
    assert texts and "".join(texts) == reply.detokenizer.text
    assert {e.reply_id for e in events} == {1}
    reply.position = len(reply.audio)
    waiting = asyncio.ensure_future(reply.wait_for_playout())
    await asyncio.sleep(0)
    assert not waiting.done()
    replies.finish(reply)
    assert await waiting == "completed"
    kinds = [e.type for e in events]
    assert kinds[0] == "reply_started" and kinds[-1] == "reply_ended"
    assert events[-1].status == "completed" and events[-1].text == reply.detokenizer.text
    assert history == [HistoryItem(role="assistant", text=reply.detokenizer.text)]
    assert replies.current is None and owner.signals[-1] is Signal.REPLY_FINISHED
    assert replies.compute_s == reply.compute_s > 0
    second = replies.new()
    replies.begin(second)
    assert second.id == 2
    await second.stop()
    replies.close()  # the session closed: whoever waits for its playout is let go
    assert await second.wait_for_playout() == "closed" and replies.current is None
    await replies._context.aclose()


async def test_a_cut_keeps_what_was_heard_and_fences_the_rest(tiny_model):
    replies, owner, history, events, context, tasks = parts(tiny_model)
    spt = tiny_model.samples_per_token
    replies.max_ahead = 4 * spt  # the producer waits for playback after a few tokens
    reply = replies.new()
    replies.begin(reply)
    await reply.settle()
    assert not reply.task.done() and not reply.generation_done  # still generating
    reply.position = 3 * spt  # three speech tokens played
    replies.cut("user took the turn")
    assert replies.current is None and owner.signals[-1] is Signal.INTERRUPT
    cut = events[-1]
    assert cut.type == "interrupted" and cut.played == 3 * spt and cut.epoch == 0
    late = len(events)
    await asyncio.wait(tasks)  # the teardown
    assert reply.task.cancelled()
    assert owner.signals[-1] is Signal.TORN_DOWN and owner.rechecks == 1
    # Nothing of the cut reply got out after the cut but its end, under the new epoch,
    # with the heard text only.
    assert [(e.type, e.epoch) for e in events[late:]] == [("reply_ended", 1)]
    assert events[-1].status == "interrupted" and events[-1].text == cut.heard_text
    assert history[-1].status == "interrupted" and await reply.wait_for_playout() == "interrupted"
    kept = context.last_reply_tokens
    speech = [c for c in reply.classes[: len(kept)] if c.name == "SPEECH"]
    assert len(speech) == 3 and kept == reply.tokens[: len(kept)]
    await context.aclose()


async def test_a_failed_reply_ends_as_failed(tiny_model):
    replies, owner, history, events, context, tasks = parts(tiny_model)

    def broken(params):
        raise RuntimeError("device lost")

    context.reply = broken
    reply = replies.new()
    replies.begin(reply)
    await asyncio.wait(tasks)
    assert owner.signals[-1] is Signal.REPLY_FAILED
    assert events[-1].type == "reply_ended" and events[-1].status == "failed"
    assert history[-1] == HistoryItem(role="assistant", text="", status="failed")
    assert replies.current is None
    await context.aclose()
