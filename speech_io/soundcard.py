"""The sound cards PortAudio sees: listing, choosing, the formats streams open with, and
the counters a running transport keeps.

The one place in Parley that imports sounddevice (:func:`load_sounddevice`), lazily, so importing this
module works on a machine without PortAudio; everything else that needs it calls ``load_sounddevice()``.
"""

from __future__ import annotations

import atexit
import contextlib
import ctypes
import logging
import threading
import weakref
from dataclasses import dataclass, field
from typing import Any, Literal

from parley.errors import ParleyError

Kind = Literal["input", "output"]
log = logging.getLogger(__name__)


class AudioDeviceError(ParleyError):
    """A sound device is missing, cannot open, or failed while in use."""


@dataclass(frozen=True)
class DeviceInfo:
    """One PortAudio device, as :func:`list_devices` reports it."""

    index: int
    name: str
    hostapi: str
    max_input_channels: int
    max_output_channels: int
    default_samplerate: float
    default_input: bool = False
    default_output: bool = False

    def channels(self, kind: Kind) -> int:
        """Most channels this device offers for ``kind``."""
        return self.max_input_channels if kind == "input" else self.max_output_channels

    def describe(self) -> str:
        """One line for error messages and ``--list-devices``."""
        mark = "".join(
            f", default {k}"
            for k, on in (("input", self.default_input), ("output", self.default_output))
            if on
        )
        return (
            f"[{self.index}] {self.name!r} ({self.hostapi}, in {self.max_input_channels}, "
            f"out {self.max_output_channels}, {self.default_samplerate:g} Hz{mark})"
        )


@dataclass(frozen=True)
class StreamFormat:
    """How one device stream is (to be) opened; ``latency`` is PortAudio's figure once open."""

    device: DeviceInfo
    sample_rate: int
    channels: int
    blocksize: int
    latency: float = 0.0


def load_sounddevice() -> Any:
    try:
        import sounddevice
    except (ImportError, OSError) as exc:  # OSError: the wheel is there, libportaudio2 is not
        raise AudioDeviceError(
            f"sound devices unavailable: {exc} (install libportaudio2 and sounddevice)"
        ) from None
    return sounddevice


# PortAudio instances (the sounddevice module, or a test's stand-in) holding a stream that
# would not close, and why. PortAudio's ALSA thread can spin for good on a stream whose sound
# server died as it started; Pa_Terminate then joins that thread forever.
_stuck: weakref.WeakKeyDictionary[Any, str] = weakref.WeakKeyDictionary()
_pinned: dict[str, ctypes.CDLL] = {}


def abandon_streams(sd: Any, why: str) -> None:
    """Record that PortAudio ``sd`` holds streams that would not close: it is never
    terminated again in this process. sounddevice terminates PortAudio at exit, which would
    then hang the program's exit, so its exit handler is dropped (the OS frees the device)."""
    _stuck[sd] = why
    handler = getattr(sd, "_exit_handler", None)
    if handler is not None:
        atexit.unregister(handler)
    libname = getattr(sd, "_libname", None)
    if isinstance(libname, str) and libname not in _pinned:
        # The stuck thread runs PortAudio's code until the process ends; when the interpreter
        # shuts down, cffi closes the library, and the thread would crash the exit unless
        # someone still holds it open (ctypes never closes what it opened).
        try:
            _pinned[libname] = ctypes.CDLL(libname)
        except OSError as exc:
            log.warning("cannot hold %s open; the program may crash as it exits: %s", libname, exc)


def refresh_devices(timeout: float = 10.0) -> None:
    """Re-initialise PortAudio so it sees devices or ALSA/PulseAudio settings changed since
    the first scan (hot-plug, ``ALSA_CONFIG_PATH``, ``PULSE_SERVER``). No stream may be open.

    Raises :class:`AudioDeviceError` instead of waiting for good when PortAudio holds a
    stream that would not close, or does not come back within ``timeout`` seconds."""
    sd = load_sounddevice()
    why = _stuck.get(sd)
    if why is not None:
        raise AudioDeviceError(
            f"cannot re-scan sound devices: {why}; restart the program to use them again"
        )
    failed: list[Exception] = []

    def rescan() -> None:
        try:
            sd._terminate()
            sd._initialize()
        except Exception as exc:  # handed to the caller below
            failed.append(exc)

    # A daemon thread: if PortAudio never returns, neither the caller nor the exit waits.
    worker = threading.Thread(target=rescan, name="parley-portaudio-rescan", daemon=True)
    worker.start()
    worker.join(timeout)
    if worker.is_alive():
        why = f"PortAudio did not re-initialise within {timeout:g} s"
        abandon_streams(sd, why)
        raise AudioDeviceError(f"cannot re-scan sound devices: {why}")
    if failed:
        raise AudioDeviceError(f"cannot re-scan sound devices: {failed[0]}") from failed[0]


def list_devices() -> list[DeviceInfo]:
    """Every device PortAudio reports, with the defaults marked."""
    sd = load_sounddevice()
    try:
        raw = sd.query_devices()
        apis = sd.query_hostapis()
    except sd.PortAudioError as exc:
        raise AudioDeviceError(f"cannot list sound devices: {exc}") from None
    defaults = {}
    for kind in ("input", "output"):
        # No default device is normal on a headless machine; PortAudio then raises.
        with contextlib.suppress(sd.PortAudioError, ValueError):
            defaults[kind] = sd.query_devices(kind=kind)["index"]
    return [
        DeviceInfo(
            index=i,
            name=d["name"],
            hostapi=apis[d["hostapi"]]["name"],
            max_input_channels=d["max_input_channels"],
            max_output_channels=d["max_output_channels"],
            default_samplerate=d["default_samplerate"],
            default_input=defaults.get("input") == i,
            default_output=defaults.get("output") == i,
        )
        for i, d in enumerate(raw)
    ]


def find_device(spec: int | str | None, kind: Kind) -> DeviceInfo:
    """The ``kind`` device named by ``spec``: ``None`` (the default), an index, or a name
    (exact, else a unique case-insensitive part). Raises :class:`AudioDeviceError` listing
    every device found when there is no such device."""
    return _pick(list_devices(), spec, kind)


def _pick(devices: list[DeviceInfo], spec: int | str | None, kind: Kind) -> DeviceInfo:
    able = [d for d in devices if d.channels(kind) > 0]
    chosen: DeviceInfo | None = None
    problem = f"no audio {kind} device"
    if spec is None:
        chosen = next((d for d in able if getattr(d, f"default_{kind}")), able[0] if able else None)
    elif isinstance(spec, int):
        chosen = next((d for d in able if d.index == spec), None)
        problem += f" with index {spec}"
    else:
        exact = [d for d in able if d.name == spec]
        part = [d for d in able if spec.lower() in d.name.lower()]
        chosen = exact[0] if exact else part[0] if len(part) == 1 else None
        problem += f" named {spec!r}" + (
            f" ({len(part)} names contain it)" if len(part) > 1 else ""
        )
    if chosen is None:
        found = "; ".join(d.describe() for d in devices) or "none"
        raise AudioDeviceError(f"{problem}; devices found: {found}")
    return chosen


def _negotiate(
    sd: Any,
    device: DeviceInfo,
    kind: Kind,
    rate: int,
    block_ms: int,
    force_rate: int | None,
    force_channels: int | None,
) -> StreamFormat:
    """The first (rate, channels) the device accepts: our rate and mono preferred, since
    resampling and channel conversion are then skipped."""
    rates = (
        [force_rate]
        if force_rate
        else list(dict.fromkeys([rate, int(device.default_samplerate), 48000, 44100]))
    )
    most = device.channels(kind)
    chans = (
        [force_channels]
        if force_channels
        else [c for c in dict.fromkeys([1, 2, most]) if c <= most]
    )
    check = sd.check_input_settings if kind == "input" else sd.check_output_settings
    last: Exception | None = None
    for r in rates:
        for c in chans:
            try:
                check(device=device.index, channels=c, dtype="float32", samplerate=r)
            except (sd.PortAudioError, ValueError) as exc:
                last = exc
                continue
            return StreamFormat(device, r, c, max(1, round(r * block_ms / 1000)))
    raise AudioDeviceError(
        f"{kind} device {device.describe()} accepts none of rates {rates} x channels {chans}: {last}"
    )


@dataclass
class TransportStats:
    """Counters since :meth:`DeviceTransport.start`."""

    input_blocks: int = 0
    output_blocks: int = 0
    #: input blocks that did not fit the input ring (the loop fell behind); samples dropped
    input_overruns: int = 0
    input_dropped: int = 0
    #: output blocks the ring could not fill; silence was played for ``output_missing`` samples
    output_underruns: int = 0
    output_missing: int = 0
    #: PortAudio callback status flags seen, by name (``output_underflow``, ...)
    status_flags: dict[str, int] = field(default_factory=dict)
    #: endpoint samples dropped by :meth:`DeviceTransport.clear_output`
    cleared: int = 0
