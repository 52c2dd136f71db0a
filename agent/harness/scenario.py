"""Scenario files: a scripted user timeline that the harness plays through a session.

A scenario is a YAML file (see ``configs/scenarios/``)::

    name: interrupt-mid-reply
    echo: {delay_ms: 60, gain_db: -10}        # optional; omitted -> no echo
    reply: {min_s: 4, max_s: 8}               # optional bounds on the agent's reply length
    settings: {endpoint_silence_ms: 500}      # optional AgentConfig overrides
    duration: 12.0                            # optional; default last step end + 3 s
    timeline:
      - {at: 0.0, say: "what is the weather like today"}
      - {after_reply_start: 0.8, wav: clips/stop_please.wav, role: interrupt}

:func:`load_scenarios` validates every file and raises :class:`~parley.errors.ConfigError`
naming the file, the step index and the problem, so a typo never surfaces as a confusing
run failure minutes later.
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PrivateAttr,
    ValidationError,
    field_validator,
    model_validator,
)

from parley.config import AgentConfig
from parley.errors import ConfigError

__all__ = [
    "DEFAULT_VOICE",
    "TAIL_S",
    "Echo",
    "ReplyBounds",
    "Role",
    "Scenario",
    "Step",
    "load_scenario",
    "load_scenarios",
    "shipped_scenarios_dir",
]

Role = Literal["turn", "interrupt", "backchannel", "noise", "continuation"]
StepKind = Literal["say", "wav", "noise", "silence"]

DEFAULT_VOICE = "en-us"
TAIL_S = 3.0  # default time after the last step, so the agent's answer to it is captured

_Finite = Annotated[float, Field(allow_inf_nan=False)]
_KINDS: tuple[StepKind, ...] = ("say", "wav", "noise", "silence")
_DEFAULT_ROLE: dict[str, Role | None] = {
    "say": "turn",
    "wav": "turn",
    "noise": "noise",
    "silence": None,
}


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Echo(_Model):
    """How the agent's own output leaks back into the microphone."""

    delay_ms: _Finite = Field(60.0, ge=0, le=2000, description="Speaker-to-mic delay.")
    gain_db: _Finite = Field(-10.0, le=20, description="Level of the direct echo path.")
    room_ms: _Finite = Field(60.0, ge=0, le=2000, description="Reverberation decay (RT60-ish).")
    noise_db: _Finite = Field(-60.0, le=0, description="Mic noise floor, RMS dBFS.")


class ReplyBounds(_Model):
    """Bounds on the agent's reply length, in seconds of speech."""

    min_s: _Finite = Field(0.0, ge=0, le=600)
    max_s: _Finite = Field(8.0, gt=0, le=600)

    @model_validator(mode="after")
    def _check(self) -> ReplyBounds:
        if self.min_s > self.max_s:
            raise ValueError(f"min_s ({self.min_s:g}) must not exceed max_s ({self.max_s:g})")
        return self


class Step(_Model):
    """One thing the user does: say, play a clip, make noise or stay silent.

    Exactly one of ``say``/``wav``/``noise``/``silence``, placed by exactly one of ``at``
    (seconds from run start) or ``after_reply_start`` (seconds after the first audio of
    a reply). With ``after_reply_start``, ``reply`` picks the n-th reply of the run
    (1-based); left out, it means the next reply to start after the previous step.
    """

    at: _Finite | None = Field(None, ge=0, description="Start, seconds from run start.")
    after_reply_start: _Finite | None = Field(
        None, ge=0, description="Start, seconds after a reply's first audio."
    )
    reply: int | None = Field(None, ge=1, description="Which reply (1-based) to follow.")
    say: str | None = Field(None, min_length=1, description="Text spoken with espeak-ng.")
    wav: str | None = Field(None, min_length=1, description="Audio file, relative to the file.")
    noise: Literal["white", "brown", "pink"] | None = None
    silence: _Finite | None = Field(None, gt=0, le=600, description="Seconds of silence.")
    duration: _Finite | None = Field(None, gt=0, le=600, description="Noise length, seconds.")
    level_db: _Finite | None = Field(None, le=0, description="Noise RMS level, dBFS.")
    role: Role | None = None
    voice: str | None = Field(
        None,
        pattern=r"^[A-Za-z0-9_+\-]+$",
        description="espeak voice (en-us) or a corpus voice (flite-rms, mbrola-us3, piper-joe).",
    )
    gain_db: _Finite | None = Field(None, ge=-60, le=20, description="Gain for say/wav.")

    @field_validator("say")
    @classmethod
    def _text(cls, value: str | None) -> str | None:
        if value is not None and not value.strip():
            raise ValueError("say text is blank")
        return value

    @model_validator(mode="after")
    def _check(self) -> Step:
        kinds = [k for k in _KINDS if getattr(self, k) is not None]
        if len(kinds) != 1:
            found = ", ".join(kinds) if kinds else "none"
            raise ValueError(f"exactly one of say, wav, noise, silence is required (found {found})")
        kind = kinds[0]
        if (self.at is None) == (self.after_reply_start is None):
            raise ValueError("exactly one of at, after_reply_start is required")
        if self.reply is not None and self.after_reply_start is None:
            raise ValueError("reply is only meaningful with after_reply_start")
        if kind == "noise":
            if self.duration is None:
                raise ValueError("a noise step needs duration (seconds)")
        elif self.duration is not None or self.level_db is not None:
            raise ValueError("duration and level_db belong to noise steps only")
        if kind != "say" and self.voice is not None:
            raise ValueError("voice belongs to say steps only")
        if kind not in ("say", "wav") and self.gain_db is not None:
            raise ValueError("gain_db belongs to say and wav steps only (noise: level_db)")
        if kind == "silence" and self.role is not None:
            raise ValueError("a silence step has no role")
        return self

    @property
    def kind(self) -> StepKind:
        """Which of say/wav/noise/silence this step is."""
        return next(k for k in _KINDS if getattr(self, k) is not None)

    @property
    def effective_role(self) -> Role | None:
        """The role, or the kind's default: say/wav -> turn, noise -> noise, silence -> None."""
        return self.role if self.role is not None else _DEFAULT_ROLE[self.kind]

    @property
    def effective_voice(self) -> str:
        """The espeak voice for a say step."""
        return self.voice or DEFAULT_VOICE

    @property
    def noise_level_db(self) -> float:
        """The noise RMS level in dBFS (default -30)."""
        return -30.0 if self.level_db is None else self.level_db


class Scenario(_Model):
    """A validated scenario file."""

    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.\-]*$", max_length=100)
    description: str = ""
    echo: Echo | None = None
    reply: ReplyBounds | None = None
    settings: dict[str, Any] = Field(
        default_factory=dict, description="Overrides of AgentConfig fields for this run."
    )
    duration: _Finite | None = Field(None, gt=0, le=3600, description="Total run length, s.")
    timeline: list[Step] = Field(min_length=1)

    _source: Path | None = PrivateAttr(None)

    @field_validator("settings")
    @classmethod
    def _settings(cls, value: dict[str, Any]) -> dict[str, Any]:
        unknown = sorted(set(value) - set(AgentConfig.model_fields))
        if unknown:
            raise ValueError(
                f"unknown setting(s) {', '.join(unknown)}; "
                f"known: {', '.join(sorted(AgentConfig.model_fields))}"
            )
        AgentConfig.model_validate(value)  # ranges are AgentConfig's own
        return value

    @property
    def source(self) -> Path | None:
        """The file this scenario was loaded from, if any."""
        return self._source

    @property
    def directory(self) -> Path:
        """Where relative ``wav`` paths are resolved: the file's folder, else the cwd."""
        return self._source.parent if self._source is not None else Path.cwd()

    def agent_overrides(self) -> dict[str, Any]:
        """AgentConfig overrides for this run: ``settings`` plus the reply bounds."""
        out = dict(self.settings)
        if self.reply is not None:
            out.setdefault("reply_min_s", self.reply.min_s)
            out.setdefault("reply_max_s", self.reply.max_s)
        return out

    def end_time(self, last_step_end_s: float) -> float:
        """Total run length: ``duration`` if given, else the last step's end plus 3 s."""
        return self.duration if self.duration is not None else last_step_end_s + TAIL_S


def shipped_scenarios_dir() -> Path:
    """The scenario set shipped in ``configs/scenarios``."""
    return Path(str(resources.files("parley.configs").joinpath("scenarios")))


def load_scenario(path: str | Path) -> Scenario:
    """Load and validate one scenario file; errors name the file and the step."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: scenario file not found")
    try:
        data = yaml.safe_load(path.read_text())
    except (yaml.YAMLError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: not valid YAML: {exc}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping at the top level")
    try:
        scenario = Scenario.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(f"{path}: invalid scenario\n  " + _describe(exc)) from None
    scenario._source = path.resolve()
    for index, step in enumerate(scenario.timeline):
        if step.wav is not None:
            clip = scenario.directory / step.wav
            if not clip.is_file():
                raise ConfigError(f"{path}: step {index}: wav file not found: {clip}")
    return scenario


def load_scenarios(path: str | Path) -> list[Scenario]:
    """Load a scenario file, or every ``*.yaml`` in a folder (sorted by file name)."""
    path = Path(path)
    if path.is_dir():
        files = sorted(path.glob("*.yaml"))
        if not files:
            raise ConfigError(f"{path}: no *.yaml scenario files in this folder")
    elif path.is_file():
        files = [path]
    else:
        raise ConfigError(f"{path}: no such scenario file or folder")
    scenarios = [load_scenario(f) for f in files]
    seen: dict[str, Path | None] = {}
    for s in scenarios:
        if s.name in seen:
            # Reports are written per scenario name; a duplicate would overwrite one.
            raise ConfigError(f"{s.source}: scenario name {s.name!r} also used by {seen[s.name]}")
        seen[s.name] = s.source
    return scenarios


def _describe(exc: ValidationError) -> str:
    lines = []
    for err in exc.errors():
        loc = list(err["loc"])
        msg = err["msg"].removeprefix("Value error, ")
        if len(loc) >= 2 and loc[0] == "timeline" and isinstance(loc[1], int):
            field = ".".join(str(p) for p in loc[2:])
            where = f"step {loc[1]}" + (f" ({field})" if field else "")
        else:
            where = ".".join(str(p) for p in loc) or "(top level)"
        value = err.get("input")
        shown = f" = {value!r}" if loc and not isinstance(value, dict | list) else ""
        lines.append(f"{where}{shown}: {msg}")
    return "\n  ".join(lines)
