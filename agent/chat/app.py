"""The Textual chat app over a :class:`~parley.agent.core.session.DuplexSession`.

The UI and the audio share one event loop but never wait on each other: the session's
events reach :class:`~parley.agent.chat.conversation.Conversation` through a synchronous
listener that only appends; the audio tap stores levels as floats; and the screen is
redrawn on a timer (``refresh_hz``) from that state. Keys act on the session directly
(interrupt, settings, mute), so a control never queues behind audio or rendering.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from rich.text import Text
from textual.app import App, ComposeResult
from textual.binding import Binding
from textual.containers import VerticalScroll
from textual.widgets import Footer, Header, Static

from parley.agent.chat.audio import AudioBackend, ChatEndpoint
from parley.agent.chat.conversation import Conversation
from parley.agent.chat.save import save_session
from parley.agent.chat.settings import ChatSettings, apply_live
from parley.agent.chat.widgets import DevicePicker, SettingsScreen, TurnView, meter
from parley.agent.core.events import AgentState, AudioPlayed, Event
from parley.agent.core.session import DuplexSession

log = logging.getLogger(__name__)

INTERRUPTED_HOLD_S = 1.0
NOISE_WARNING = "random-weight checkpoint: the reply will be noise, not speech"
_STATE_STYLE = {
    AgentState.LISTENING: "bold green",
    AgentState.THINKING: "bold yellow",
    AgentState.SPEAKING: "bold cyan",
    AgentState.PAUSED: "bold magenta",
    AgentState.INTERRUPTED: "bold red",
}


class ChatApp(App[None]):
    """A terminal voice chat: conversation pane, status bar, live figures, keys."""

    TITLE = "Parley chat"
    CSS = """
    #banner { background: $error; color: $text; padding: 0 1; }
    #conversation { height: 1fr; padding: 0 1; }
    .turn { margin: 0 0 1 0; }
    #status, #figures, #notice { height: auto; padding: 0 1; background: $panel; }
    #notice { color: $warning; }
    #settings, #picker { width: 80; height: auto; padding: 1 2; background: $surface;
                         border: thick $primary; }
    SettingsScreen, DevicePicker { align: center middle; }
    .row { height: auto; }
    """
    BINDINGS = [
        Binding("m", "toggle_mute", "Mute mic"),
        Binding("p", "toggle_ptt", "Push-to-talk"),
        Binding("space", "talk", "Talk (PTT)"),
        Binding("i", "interrupt", "Interrupt"),
        Binding("s", "save", "Save"),
        Binding("o", "settings", "Settings"),
        Binding("d", "devices", "Devices"),
        Binding("q", "quit", "Quit"),
    ]

    def __init__(
        self,
        session: DuplexSession,
        backend: AudioBackend,
        *,
        backend_factory: Callable[[Any, Any], AudioBackend] | None = None,
        random_weights: bool = False,
        save_dir: Path = Path("."),
        refresh_hz: float = 15.0,
        info: str = "",
    ) -> None:
        super().__init__()
        self.session = session
        self.backend = backend
        self.backend_factory = backend_factory
        self.random_weights = random_weights
        self.save_dir = save_dir
        self.refresh_hz = refresh_hz
        self.info = info
        self.endpoint = ChatEndpoint(session)
        self.conversation = Conversation(mic_audio=self.endpoint.mic.span)
        self.settings = ChatSettings.from_config(session.config)
        self.event_log: list[dict[str, Any]] = []
        self.audio_played = 0  # audio_played events, counted rather than logged
        self.notice = ""
        self.audio_running = False
        self.last_save: Path | None = None
        self.ui_cpu_s = 0.0  # process CPU time spent in redraws (for the benchmark)
        self._views: list[TurnView] = []
        self._shown_version = -1
        self._interruptions_seen = 0
        self._interrupted_until = 0.0
        session.subscribe(self._on_event)

    # ------------------------------------------------------------------ layout

    def compose(self) -> ComposeResult:
        yield Header()
        if self.random_weights:
            yield Static(f"⚠ {NOISE_WARNING}", id="banner")
        yield VerticalScroll(id="conversation")
        yield Static(id="notice")
        yield Static(id="figures")
        yield Static(id="status")
        yield Footer()

    async def on_mount(self) -> None:
        self.sub_title = NOISE_WARNING if self.random_weights else self.info
        # Held, not queried per redraw: while a modal screen is up, queries go to that screen.
        self._pane = self.query_one("#conversation", VerticalScroll)
        self._lines = {k: self.query_one(f"#{k}", Static) for k in ("status", "figures", "notice")}
        self.set_interval(1.0 / self.refresh_hz, self._redraw)
        await self._start_audio(self.backend)

    # ------------------------------------------------------------------ audio side

    def _on_event(self, event: Event) -> None:
        # Runs inside push_input/pull_output: append and count only.
        if isinstance(event, AudioPlayed):
            self.audio_played += 1
            return
        self.event_log.append(event.to_dict())
        self.conversation.apply(event)

    async def _start_audio(self, backend: AudioBackend) -> None:
        self.backend = backend
        try:
            await backend.start(self.endpoint)
        except Exception as exc:  # a device that will not open is a message, not a crash
            self._audio_stopped(f"audio did not start: {exc}")
            return
        self.audio_running = True
        self.conversation.device_latency_ms = getattr(backend, "latency_ms", 0.0)
        self.notice = f"audio: {backend.description}"
        self.run_worker(self._watch(backend), exit_on_error=False, group="audio")

    async def _watch(self, backend: AudioBackend) -> None:
        try:
            await backend.wait()
        except Exception as exc:
            if backend is self.backend:
                self._audio_stopped(f"audio stopped: {exc}")
            return
        if backend is self.backend:
            self.audio_running = False
            self.notice = "audio input ended"

    def _audio_stopped(self, why: str) -> None:
        self.audio_running = False
        self.notice = f"{why} — press d to pick a device, q to quit"
        log.warning("%s", why)

    # ------------------------------------------------------------------ drawing

    def _redraw(self) -> None:
        t0 = time.process_time()
        conv = self.conversation
        if conv.version != self._shown_version:
            self._shown_version = conv.version
            pane = self._pane
            new = [TurnView(t) for t in conv.turns[len(self._views) :]]
            if new:
                self._views.extend(new)
                pane.mount_all(new)
                pane.scroll_end(animate=False)
            for view in self._views[-4:]:  # only the newest turns still change
                view.refresh_turn()
        self._lines["status"].update(self.status_text())
        self._lines["figures"].update(self.figures_text())
        self._lines["notice"].update(self.notice)
        self.ui_cpu_s += time.process_time() - t0

    def status_text(self) -> Text:
        """State, microphone level and VAD decision, output level, mic mode, glitches."""
        ep, st = self.endpoint, self.backend.stats
        state = self.displayed_state()
        if ep.muted:
            mic_mode = ("MUTED", "bold red")
        elif ep.push_to_talk:
            mic_mode = ("PTT talking", "bold green") if ep.talking else ("PTT idle", "yellow")
        else:
            mic_mode = ("mic open", "green")
        vad = ("speech", "bold green") if ep.vad_speech else ("silence", "dim")
        return Text.assemble(
            (f"● {state.value.upper():<11}", _STATE_STYLE[state]),
            " mic ",
            meter(ep.mic_db),
            f" {ep.mic_db:4.0f} dB ",
            vad,
            "  out ",
            meter(ep.out_db),
            f" {ep.out_db:4.0f} dB  ",
            mic_mode,
            f"  underruns {st.output_underruns} overruns {st.input_overruns}",
        )

    def displayed_state(self) -> AgentState:
        """The session's state, except that an interruption stays up for a moment: the
        session passes through INTERRUPTED within a frame, too fast to be seen."""
        conv, now = self.conversation, time.monotonic()
        if conv.interruptions > self._interruptions_seen:
            self._interruptions_seen = conv.interruptions
            self._interrupted_until = now + INTERRUPTED_HOLD_S
        if conv.state is AgentState.LISTENING and now < self._interrupted_until:
            return AgentState.INTERRUPTED
        return conv.state

    def figures_text(self) -> str:
        c = self.conversation
        return (
            f"response latency {c.response.summary()}  |  "
            f"barge-in stop {c.barge_in.summary()}  |  interruptions {c.interruptions}"
        )

    # ------------------------------------------------------------------ keys

    def action_toggle_mute(self) -> None:
        self.endpoint.muted = not self.endpoint.muted
        self.notice = "microphone muted" if self.endpoint.muted else "microphone on"

    def action_toggle_ptt(self) -> None:
        ep = self.endpoint
        ep.push_to_talk, ep.talking = not ep.push_to_talk, False
        self.notice = (
            "push-to-talk on: space starts and stops talking" if ep.push_to_talk else "open mic"
        )

    def action_talk(self) -> None:
        ep = self.endpoint
        if not ep.push_to_talk:
            self.notice = "space talks in push-to-talk mode only (p turns it on)"
            return
        ep.talking = not ep.talking
        self.notice = "talking" if ep.talking else "push-to-talk idle"

    async def action_interrupt(self) -> None:
        await self.session.interrupt()

    def action_save(self) -> None:
        meta = {
            "settings": self.settings.__dict__,
            "audio": self.backend.description,
            "random_weights": self.random_weights,
            "audio_played_events": self.audio_played,
        }
        try:
            self.last_save = save_session(
                self.save_dir, self.endpoint.mic.samples(), self.endpoint.out.samples(),
                list(self.event_log), meta,
            )  # fmt: skip
        except OSError as exc:
            self.notice = f"save failed: {exc}"
            return
        self.notice = f"saved {self.last_save}"

    def action_settings(self) -> None:
        self.push_screen(SettingsScreen(self.settings), self._apply_settings)

    def _apply_settings(self, settings: ChatSettings | None) -> None:
        if settings is None:
            return
        apply_live(self.session, settings)
        self.settings = settings
        self.notice = (
            f"settings applied: VAD {settings.vad_sensitivity}, min_interruption "
            f"{settings.min_interruption_ms} ms, endpoint_silence {settings.endpoint_silence_ms} "
            f"ms, echo handling {'on' if settings.echo_cancellation else 'off'}, turns by "
            f"{self.session.turn_detection} (eagerness {settings.eagerness})"
        )

    async def action_devices(self) -> None:
        try:
            devices = self.backend.devices()
        except Exception as exc:
            self.notice = f"cannot list devices: {exc}"
            return
        self.push_screen(DevicePicker(devices), self._switch_devices)

    async def _switch_devices(self, choice: tuple[int, int] | None) -> None:
        if choice is None or self.backend_factory is None:
            return
        await self.backend.aclose()
        await self._start_audio(self.backend_factory(*choice))

    async def action_quit(self) -> None:
        await self.backend.aclose()
        self.exit()
