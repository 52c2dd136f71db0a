"""The chat app's widgets: turns, the status lines, the settings panel, the device picker."""

from __future__ import annotations

from typing import Literal

from rich.text import Text
from textual.app import ComposeResult
from textual.containers import Horizontal, Vertical
from textual.screen import ModalScreen
from textual.widgets import Button, Input, Label, OptionList, Select, Static, Switch
from textual.widgets.option_list import Option

from parley.agent.chat.conversation import AgentTurn, Turn, UserTurn
from parley.agent.chat.settings import ChatSettings
from parley.speech_io.soundcard import DeviceInfo

CUT_MARK = "✂ cut"  # where the user stopped hearing an interrupted reply
METER_WIDTH = 12


def meter(db: float, floor: float = -60.0) -> str:
    """A fixed-width level bar for ``db`` dBFS (``floor`` and below: empty)."""
    filled = round(METER_WIDTH * min(1.0, max(0.0, (db - floor) / -floor)))
    return "█" * filled + "░" * (METER_WIDTH - filled)


def _oneline(text: str) -> str:
    # A reply's newlines would break the turn layout; show them, do not act on them.
    return text.replace("\n", "↵")


def render_turn(turn: Turn) -> Text:
    """One conversation line: a user speech segment or an agent reply."""
    if isinstance(turn, UserTurn):
        return Text.assemble(
            ("you   ", "bold cyan"),
            f"🎤 speech {turn.duration_s:.2f} s at {turn.level_db:.0f} dBFS",
        )
    assert isinstance(turn, AgentTurn)
    out = Text.assemble(("agent ", "bold green"))
    if turn.status == "interrupted":
        out.append(_oneline(turn.heard_text or ""))
        out.append(f" {CUT_MARK} ", "bold white on red")
        out.append(_oneline(turn.unheard_text), "strike dim")
    else:
        out.append(_oneline(turn.text) or "…")
        if turn.status == "streaming":
            out.append(" ▌", "blink")
        elif turn.status == "failed":
            out.append("  [reply failed]", "bold red")
    figures = []
    if turn.latency_ms is not None:
        figures.append(f"latency {turn.latency_ms:.0f} ms")
    if turn.stop_ms is not None:
        figures.append(f"barge-in stop {turn.stop_ms:.0f} ms")
    if turn.status == "interrupted":
        figures.append("interrupted")
    if figures:
        out.append(f"\n      ({', '.join(figures)})", "dim")
    return out


class TurnView(Static):
    """One turn; redrawn only when what it shows changed."""

    def __init__(self, turn: Turn) -> None:
        super().__init__(classes="turn")
        self.turn = turn
        self._shown: tuple | None = None

    def refresh_turn(self) -> None:
        t = self.turn
        key = (
            (t.text, t.status, t.heard_text, t.latency_ms, t.stop_ms)
            if isinstance(t, AgentTurn)
            else (t.duration_s,)
        )
        if key != self._shown:
            self._shown = key
            self.update(render_turn(t))


class SettingsScreen(ModalScreen[ChatSettings | None]):
    """Turn-taking settings, applied to the running session on Apply."""

    BINDINGS = [("escape", "cancel", "Cancel")]

    def __init__(self, current: ChatSettings) -> None:
        super().__init__()
        self.current = current

    def compose(self) -> ComposeResult:
        c = self.current
        with Vertical(id="settings"):
            yield Label("Settings (applied live)", classes="title")
            yield Label("VAD sensitivity")
            yield Select(
                [(s, s) for s in ("low", "normal", "high")],
                value=c.vad_sensitivity,
                allow_blank=False,
                id="vad",
            )
            yield Label("min_interruption (ms): speech this long over a reply cuts it")
            yield Input(str(c.min_interruption_ms), id="min_interruption", type="integer")
            yield Label("turn detection: semantic_vad judges your words, server_vad a timer")
            yield Select(
                [(s, s) for s in ("semantic_vad", "server_vad")],
                value=c.turn_detection,
                allow_blank=False,
                id="turn_detection",
            )
            yield Label("eagerness (semantic_vad): how soon a silence ends your turn")
            yield Select(
                [(s, s) for s in ("auto", "low", "medium", "high")],
                value=c.eagerness,
                allow_blank=False,
                id="eagerness",
            )
            yield Label("endpoint_silence (ms, server_vad): silence that ends your turn")
            yield Input(str(c.endpoint_silence_ms), id="endpoint_silence", type="integer")
            with Horizontal(classes="row"):
                yield Label("echo handling ")
                yield Switch(value=c.echo_cancellation, id="echo")
            yield Label("", id="settings-error")
            with Horizontal(classes="row"):
                yield Button("Apply", variant="primary", id="apply")
                yield Button("Cancel", id="cancel")

    def read(self) -> ChatSettings:
        """The settings as entered; ``ValueError`` when one is out of range."""
        try:
            mi = int(self.query_one("#min_interruption", Input).value)
            es = int(self.query_one("#endpoint_silence", Input).value)
        except ValueError:
            raise ValueError("min_interruption and endpoint_silence must be whole ms") from None
        settings = ChatSettings(
            vad_sensitivity=self.query_one("#vad", Select).value,  # type: ignore[arg-type]
            min_interruption_ms=mi,
            endpoint_silence_ms=es,
            echo_cancellation=self.query_one("#echo", Switch).value,
            turn_detection=self.query_one("#turn_detection", Select).value,  # type: ignore[arg-type]
            eagerness=self.query_one("#eagerness", Select).value,  # type: ignore[arg-type]
        )
        settings.validate()
        return settings

    def on_button_pressed(self, event: Button.Pressed) -> None:
        if event.button.id == "cancel":
            self.dismiss(None)
            return
        try:
            settings = self.read()
        except ValueError as exc:
            # pydantic's message is long; its first line names the field and bound.
            self.query_one("#settings-error", Label).update(str(exc).splitlines()[0])
            return
        self.dismiss(settings)

    def action_cancel(self) -> None:
        self.dismiss(None)


class DevicePicker(ModalScreen[tuple[int, int] | None]):
    """Choose the microphone, then the speaker, from the devices PortAudio lists."""

    BINDINGS = [("escape", "cancel", "Cancel")]

    def __init__(self, devices: list[DeviceInfo]) -> None:
        super().__init__()
        self.devices = devices
        self.chosen_input: int | None = None

    def _options(self, kind: Literal["input", "output"]) -> list[Option]:
        return [Option(d.describe(), id=str(d.index)) for d in self.devices if d.channels(kind)]

    def compose(self) -> ComposeResult:
        with Vertical(id="picker"):
            if not self.devices:
                yield Label(
                    "No sound devices here (virtual audio, or none found). "
                    "For files use `run_agent.py demo` or `duplex`. Esc closes."
                )
                return
            yield Label("Microphone (Enter to choose):", id="picker-title")
            yield OptionList(*self._options("input"), id="devices")

    def on_mount(self) -> None:
        if self.devices:
            self.query_one("#devices", OptionList).highlighted = 0

    def on_option_list_option_selected(self, event: OptionList.OptionSelected) -> None:
        index = int(event.option.id or 0)
        if self.chosen_input is None:
            self.chosen_input = index
            self.query_one("#picker-title", Label).update("Speaker (Enter to choose):")
            options = self.query_one("#devices", OptionList)
            options.clear_options()
            options.add_options(self._options("output"))
            options.highlighted = 0
            return
        self.dismiss((self.chosen_input, index))

    def action_cancel(self) -> None:
        self.dismiss(None)
