"""The chat app, headless (Textual's Pilot) over virtual audio in virtual time.

The room is in memory (:class:`VirtualBackend`): espeak speech at scripted places, a
:class:`ScriptedDetector` saying where the user speaks, a virtual clock moved frame by
frame, and the session settled after every frame, so each run gives the same events.
"""

from __future__ import annotations

import asyncio
import html
import json
import re

import numpy as np
import pytest

from parley.agent.chat import (
    CUT_MARK,
    NOISE_WARNING,
    AgentTurn,
    ChatApp,
    Conversation,
    UserTurn,
    VirtualBackend,
)
from parley.agent.chat.command import check_devices
from parley.agent.core.clock import VirtualClock
from parley.agent.core.events import (
    FirstAudio,
    Interrupted,
    PlaybackPaused,
    ReplyEnded,
    ReplyStarted,
    TextDelta,
    UserSpeechStarted,
    UserTurnEnded,
)
from parley.agent.core.session import DuplexSession
from parley.agent.harness.render import say
from parley.agent.harness.scenario import DEFAULT_VOICE
from parley.config import load_config
from parley.speech_io.soundcard import AudioDeviceError
from tests.scripted import ScriptedDetector

SR = 16000
FIRST_AT, CUT_AT = 0.3, 3.6  # seconds: the question, then the barge-in over the reply


async def until(pilot, condition) -> None:
    """Let the app run until ``condition()`` holds: a fixed pause was not always enough for
    a redraw on a loaded machine. Gives up after 20 s, failing the test."""
    async with asyncio.timeout(20):
        while not condition():
            await pilot.pause(0.02)


def screen_text(app: ChatApp) -> str:
    """What the terminal shows, as plain text (from the SVG export)."""
    svg = app.export_screenshot()
    return html.unescape(re.sub(r"<[^>]+>", "", svg)).replace("\xa0", " ")


@pytest.fixture(scope="module")
def speech(tmp_path_factory) -> tuple[np.ndarray, np.ndarray]:
    cache = tmp_path_factory.mktemp("tts")
    return (
        say("tell me a story about the sea", DEFAULT_VOICE, cache),
        say("no wait, stop please", DEFAULT_VOICE, cache),
    )


def make_chat(tiny_model, speech, *, cut: bool = True, total_s: float = 8.0, **backend_kw):
    """A chat app over a scripted room: a question, and (``cut``) a barge-in over the reply."""
    user = np.zeros(int(total_s * SR), np.float32)
    spans = []
    for clip, at in zip(speech, (FIRST_AT, CUT_AT) if cut else (FIRST_AT,), strict=False):
        a = int(at * SR)
        user[a : a + len(clip)] = clip
        spans.append((a, a + len(clip)))
    clock = VirtualClock()
    # Replies start when the turn ends (not ahead, in the silence): "thinking" then lasts
    # the model's compute, long enough to be drawn.
    agent = load_config("tiny").agent.model_copy(
        update={"reply_min_s": 4, "reply_max_s": 6, "preemptive_reply_ms": None}
    )
    session = DuplexSession(tiny_model, agent, clock=clock, detector=ScriptedDetector(spans))
    backend = VirtualBackend(user, on_frame=clock.set, **backend_kw)
    return ChatApp(session, backend, random_weights=True), session, backend


async def test_conversation_with_interruption(tiny_model, speech, tmp_path):
    # Three times real time: slow enough that every state stays up for a few redraws.
    app, session, backend = make_chat(tiny_model, speech, speed=3.0)
    states: list[str] = []
    async with app.run_test(size=(140, 40)) as pilot:
        # Sample the status bar while the room runs: the state changes must be on screen.
        while not backend._task.done():
            words = str(app.query_one("#status").content).split()
            state = words[1].lower() if len(words) > 1 else ""
            if state and (not states or states[-1] != state):
                states.append(state)
            await pilot.pause(0.005)
        await backend.wait()
        await pilot.pause(0.2)
        shown = screen_text(app)
        turns = app.conversation.turns
        cut = next(t for t in turns if isinstance(t, AgentTurn) and t.status == "interrupted")
        # The reply's text up to where the user stopped hearing it, then the marker, then
        # the rest struck through (present, not dropped).
        assert cut.heard_text and cut.unheard_text
        assert CUT_MARK in shown and cut.heard_text[:20].replace("\n", "↵") in shown
        assert cut.unheard_text.replace("\n", "↵")[:10] in shown
        assert NOISE_WARNING in shown
        assert len(re.findall(r"🎤 speech \d\.\d\d s at -\d+ dBFS", shown)) == 2  # user turns
        # Per turn and running figures.
        assert cut.latency_ms is not None and cut.stop_ms is not None
        assert 0 <= cut.stop_ms <= 150  # the pause follows the VAD onset within a frame or two
        assert f"latency {cut.latency_ms:.0f} ms" in shown
        assert f"barge-in stop {cut.stop_ms:.0f} ms" in shown
        assert "response latency p50" in shown and "p95" in shown and "interruptions 1" in shown
        shot = app.save_screenshot("chat-interrupted.svg", str(tmp_path))
    assert {"listening", "thinking", "speaking", "paused", "interrupted"} <= set(states)
    assert states.index("paused") < states.index("interrupted")
    kinds = [e["type"] for e in app.event_log]
    assert kinds.count("interrupted") == 1 and kinds.count("reply_started") == 2
    svg = (tmp_path / "chat-interrupted.svg").read_text()
    assert shot.endswith("chat-interrupted.svg") and "cut" in svg and "✂" in svg
    await session.aclose()


async def test_keys_do_what_the_footer_says(tiny_model, speech, tmp_path):
    app, session, backend = make_chat(tiny_model, speech, cut=False)
    app.save_dir = tmp_path
    held = False

    def hold_while_speaking(_t: float) -> None:
        # Stop the room once the reply plays, so the keys act on a speaking agent.
        nonlocal held
        if not held and session.state.value == "speaking":
            held = True
            backend.resume.clear()

    backend._on_frame = lambda t: (session.clock.set(t), hold_while_speaking(t))
    async with app.run_test(size=(160, 40)) as pilot:
        labels = ("Mute mic", "Push-to-talk", "Talk (PTT)", "Interrupt", "Save",
                  "Settings", "Devices", "Quit")  # fmt: skip
        await until(pilot, lambda: labels[0] in screen_text(app))
        footer = screen_text(app)
        for label in labels:
            assert label in footer
        async with asyncio.timeout(60):
            while not held:
                await pilot.pause(0.01)
        # i: the reply is cut now, by the application.
        await pilot.press("i")
        await until(pilot, lambda: "interrupted" in screen_text(app))
        assert session.state.value == "listening"
        assert any(e["type"] == "interrupted" for e in app.event_log)
        assert "interrupted" in screen_text(app)
        # m: mute; the session hears silence while the room still speaks.
        await pilot.press("m")
        await until(pilot, lambda: "MUTED" in screen_text(app))
        assert app.endpoint.muted
        app.endpoint.push_input(np.full(160, 0.3, np.float32))
        assert app.endpoint.mic.samples()[-160:].max() == 0.0 and app.endpoint.mic_db > -20
        await pilot.press("m")
        # p, space: push-to-talk closes the mic until space opens it.
        await pilot.press("p")
        await until(pilot, lambda: "PTT idle" in screen_text(app))
        assert not app.endpoint.open
        await pilot.press("space")
        await until(pilot, lambda: "PTT talking" in screen_text(app))
        assert app.endpoint.open
        await pilot.press("p")
        # o: settings, applied to the running session.
        await pilot.press("o")
        await pilot.pause(0.1)
        screen = app.screen
        screen.query_one("#min_interruption").value = "900"
        screen.query_one("#endpoint_silence").value = "700"
        screen.query_one("#echo").value = False
        screen.query_one("#vad").value = "high"
        screen.query_one("#turn_detection").value = "semantic_vad"
        screen.query_one("#eagerness").value = "low"
        await pilot.click("#apply")
        await pilot.pause(0.1)
        cfg = session.config
        assert (cfg.min_interruption_ms, cfg.endpoint_silence_ms) == (900, 700)
        assert (cfg.turn_detection, cfg.eagerness) == ("semantic_vad", "low")
        assert session.turn_detection == "server_vad"  # the tiny model has no detector
        assert not cfg.echo_cancellation and session.input.echo is None
        assert session.input.detector.confirm_threshold == 0.2  # "high"
        assert "min_interruption 900 ms" in screen_text(app)
        # A bad value is refused in the panel, not applied.
        await pilot.press("o")
        await pilot.pause(0.1)
        app.screen.query_one("#min_interruption").value = "-5"
        await pilot.click("#apply")
        await pilot.pause(0.1)
        assert isinstance(app.screen, type(screen)) and session.config.min_interruption_ms == 900
        error = str(app.screen.query_one("#settings-error").content)
        assert error.startswith("min_interruption_ms: Input should be greater than or equal")
        await pilot.press("escape")
        # d: the picker says there is nothing to pick on virtual audio.
        await pilot.press("d")
        await until(pilot, lambda: "No sound devices" in screen_text(app))
        await pilot.press("escape")
        # s: both channels and the event log.
        backend.resume.set()
        await pilot.pause(0.2)
        await pilot.press("s")
        await pilot.pause(0.1)
        saved = app.last_save
        assert saved is not None and saved.parent == tmp_path and "saved" in app.notice
        log = json.loads((saved / "events.json").read_text())
        assert any(e["type"] == "interrupted" for e in log["events"])
        assert (saved / "mic.wav").stat().st_size > 44 and (saved / "agent.wav").stat().st_size > 44
        # q: quit.
        await pilot.press("q")
        await until(pilot, lambda: not app.is_running)
    await session.aclose()


async def test_device_lost_mid_session_is_a_message(tiny_model, speech):
    app, session, backend = make_chat(tiny_model, speech, cut=False, fail_at=SR)
    async with app.run_test(size=(140, 30)) as pilot:
        async with asyncio.timeout(30):
            while app.audio_running:
                await pilot.pause(0.02)
        await pilot.pause(0.2)
        shown = screen_text(app)
        assert "audio stopped" in shown and "simulated unplug" in shown and app.is_running
    await session.aclose()


def test_no_device_names_what_was_found_and_the_file_commands(monkeypatch):
    monkeypatch.setattr("parley.speech_io.soundcard.list_devices", lambda: [])
    with pytest.raises(AudioDeviceError) as info:
        check_devices(None, None)
    msg = str(info.value)
    assert "devices found: none" in msg and "demo" in msg and "duplex" in msg


def test_conversation_figures_from_events():
    conv = Conversation(mic_audio=lambda a, b: np.full(b - a, 0.1, np.float32))
    kw = {"t": 0.0, "epoch": 0}
    conv.apply(UserTurnEnded(input_sample=16000, audio_s=1.0, **kw))
    conv.apply(ReplyStarted(reply_id=1, **kw))
    conv.apply(TextDelta(reply_id=1, text="hello there", **kw))
    conv.apply(FirstAudio(reply_id=1, output_sample=16000 + 8000, **kw))
    conv.apply(UserSpeechStarted(input_sample=40000, **kw))
    conv.apply(
        PlaybackPaused(reply_id=1, position=9000, output_sample=40800, onset_sample=40000, **kw)
    )
    conv.apply(Interrupted(reply_id=1, played=9000, heard_text="hello", output_sample=49600, **kw))
    conv.apply(ReplyEnded(reply_id=1, status="interrupted", played=9000, text="hello", **kw))
    user, reply = conv.turns
    assert isinstance(user, UserTurn) and user.level_db == pytest.approx(-20.0, abs=0.01)
    assert isinstance(reply, AgentTurn) and reply.unheard_text == " there"
    assert reply.latency_ms == 500.0 and reply.stop_ms == 50.0
    assert conv.response.p50 == 500.0 and conv.barge_in.summary().startswith("p50 50 / p95 50")


async def test_device_picker_switches_the_audio(tiny_model, speech):
    from parley.speech_io.soundcard import DeviceInfo

    fake = [
        DeviceInfo(3, "USB mic", "ALSA", 1, 0, 16000.0),
        DeviceInfo(5, "Headphones", "ALSA", 0, 2, 48000.0),
    ]
    app, session, backend = make_chat(tiny_model, speech, cut=False)
    backend.devices = lambda: fake  # type: ignore[method-assign]
    chosen: list[tuple] = []

    def factory(inp, out):
        chosen.append((inp, out))
        return VirtualBackend(np.zeros(30 * SR, np.float32), speed=1.0)

    app.backend_factory = factory
    async with app.run_test(size=(140, 30)) as pilot:
        await pilot.press("d")
        await pilot.pause(0.1)
        assert "USB mic" in screen_text(app) and "Headphones" not in screen_text(app)
        await pilot.press("enter")  # the only microphone
        await pilot.pause(0.1)
        assert "Headphones" in screen_text(app)
        await pilot.press("enter")
        await pilot.pause(0.2)
        assert chosen == [(3, 5)] and app.backend is not backend and backend._task.done()
        assert "virtual audio" in app.notice
        await app.backend.aclose()
    await session.aclose()


def test_device_figures_are_taken_on_the_input_timeline():
    # On devices the output counter runs ahead of the input by what the transport holds;
    # the figures count from the user's speech on the input timeline, plus the devices'
    # own buffers.
    conv = Conversation(device_latency_ms=40.0)
    kw = {"t": 0.0, "epoch": 0}
    conv.apply(UserTurnEnded(input_sample=16000, audio_s=1.0, **kw))
    conv.apply(ReplyStarted(reply_id=1, **kw))
    conv.apply(FirstAudio(reply_id=1, output_sample=27200, input_sample=24000, **kw))
    conv.apply(
        PlaybackPaused(
            reply_id=1, position=9000, output_sample=44000, onset_sample=40000,
            input_sample=40800, **kw,
        )
    )  # fmt: skip
    conv.apply(Interrupted(reply_id=1, played=9000, heard_text="", output_sample=52800, **kw))
    reply = conv.turns[-1]
    assert reply.latency_ms == 540.0 and reply.stop_ms == 90.0


def test_the_device_scope_passes_on_everything_the_pump_calls() -> None:
    # It wraps the chat's endpoint for DeviceTransport (duck-typed, so mypy cannot tell):
    # a member of AudioEndpoint it did not pass on stopped the audio in the middle of a chat.
    from types import SimpleNamespace

    from parley.agent.chat.audio import _Scoped
    from parley.speech_io.block_pump import AudioEndpoint

    members = [n for n in vars(AudioEndpoint) if not n.startswith("_")]
    members += list(AudioEndpoint.__annotations__)
    assert "played_silence" in members
    endpoint = SimpleNamespace(**{n: object() for n in members}, subscribe=lambda f: None)
    scope = _Scoped(endpoint)  # type: ignore[arg-type]
    assert [n for n in members if getattr(scope, n, None) is not getattr(endpoint, n)] == []
