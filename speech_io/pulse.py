"""Private PulseAudio null sinks as sound devices, for real-time runs without a sound card.

``bench --realtime`` and the real-device tests play into one sink and record its
``.monitor``. Needs Debian ``pulseaudio pulseaudio-utils libasound2-plugins libportaudio2``.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

from parley.speech_io.audio import SAMPLE_RATE
from parley.speech_io.devices import list_devices, refresh_devices

__all__ = [
    "PULSE_PACKAGES",
    "REQUIRED_TOOLS",
    "PulseDevices",
    "PulseUnavailableError",
    "pulse_null_sinks",
]

PULSE_PACKAGES = "pulseaudio pulseaudio-utils libasound2-plugins libportaudio2"
REQUIRED_TOOLS = ("pulseaudio", "pactl", "pacat")
# Where Debian's libasound2 keeps the global config; ALSA_CONFIG_PATH replaces that list,
# so it must come first or the `pulse` pcm type is unknown.
_ALSA_CONF = "/usr/share/alsa/alsa.conf"


class PulseUnavailableError(RuntimeError):
    """PulseAudio tools are missing or the private daemon did not come up."""


@dataclass
class PulseDevices:
    """What :func:`pulse_null_sinks` set up: PortAudio indices of each sink and monitor."""

    server: str
    sinks: dict[str, int]
    monitors: dict[str, int]
    daemon_pid: int
    pids: list[int] = field(default_factory=list)

    def kill_server(self) -> None:
        """SIGKILL the daemon, as if the sound server crashed (streams on it then fail)."""
        with contextlib.suppress(ProcessLookupError):
            os.kill(self.daemon_pid, signal.SIGKILL)


@contextlib.contextmanager
def pulse_null_sinks(names: list[str], rate: int = SAMPLE_RATE) -> Iterator[PulseDevices]:
    """Run a private PulseAudio daemon with one mono null sink per name.

    Each sink ``NAME`` is the ALSA pcm (and PortAudio device) ``NAME``, its monitor
    ``NAME_monitor``. The default sink is ``names[0]``, the default source ``names[-1]``'s
    monitor (the agent plays into the first and hears the last). Environment variables
    are set for this process and restored, and PortAudio re-initialised, on exit.
    """
    missing = [t for t in REQUIRED_TOOLS if shutil.which(t) is None]
    if missing:
        raise PulseUnavailableError(
            f"{', '.join(missing)} not found: apt-get install -y {PULSE_PACKAGES}"
        )
    procs: list[subprocess.Popen[bytes]] = []
    saved = {k: os.environ.get(k) for k in ("PULSE_SERVER", "ALSA_CONFIG_PATH")}
    with tempfile.TemporaryDirectory(prefix="parley-pulse-") as tmp:
        root = Path(tmp)
        sock = root / "native"
        server = f"unix:{sock}"
        # Own HOME and runtime dirs: nothing shared with a user's daemon or another test run.
        env = dict(
            os.environ,
            HOME=tmp,
            XDG_RUNTIME_DIR=tmp,
            PULSE_RUNTIME_PATH=tmp,
            PULSE_STATE_PATH=tmp,
            PULSE_SERVER=server,
            LC_ALL="C",
        )
        log = (root / "pulse.log").open("wb")
        try:
            daemon = subprocess.Popen(
                ["pulseaudio", "--daemonize=no", "--exit-idle-time=-1", "-n",
                 "--use-pid-file=no", "--realtime=no", "--high-priority=no",
                 "--log-target=stderr", "--log-level=warning",
                 f"--load=module-native-protocol-unix socket={sock} auth-anonymous=1"],
                env=env, stdin=subprocess.DEVNULL, stdout=log, stderr=log,
            )  # fmt: skip
            procs.append(daemon)
            _wait(lambda: _pactl(env, "info", check=False) is not None, "daemon", root, daemon)
            _low_latency_sinks(env, names, rate, log, root, procs)
            index = _as_portaudio_devices(root, server, names)
            yield PulseDevices(
                server=server,
                sinks={n: index[n] for n in names},
                monitors={n: index[f"{n}_monitor"] for n in names},
                daemon_pid=daemon.pid,
                pids=[p.pid for p in procs],
            )
        finally:
            # Clients first, so the daemon does not log their sudden loss as errors.
            for proc in reversed(procs):
                _stop(proc)
            log.close()
            for key, value in saved.items():
                if value is None:
                    os.environ.pop(key, None)
                else:
                    os.environ[key] = value
            refresh_devices()


def _low_latency_sinks(
    env: dict[str, str],
    names: list[str],
    rate: int,
    log: IO[bytes],
    root: Path,
    procs: list[subprocess.Popen[bytes]],
) -> None:
    """One null sink per name, each kept ticking by a client (added to ``procs``, after
    the daemon, as each starts: whatever fails, the caller stops them all)."""
    daemon = procs[0]
    for name in names:
        _pactl(env, "load-module", "module-null-sink", f"sink_name={name}",
               f"rate={rate}", "channels=1")  # fmt: skip
    # Defaults before any client attaches, so nothing lands on the wrong sink.
    _pactl(env, "set-default-sink", names[0])
    _pactl(env, "set-default-source", f"{names[-1]}.monitor")
    # An idle null sink renders in 2 s chunks and PortAudio streams on it stall for that
    # long; a low-latency client keeps it ticking every few ms.
    for name in names:
        procs.append(subprocess.Popen(
            ["pacat", "-p", "-d", name, "--latency-msec=10", "--raw", f"--rate={rate}",
             "--channels=1", "--format=s16le", "/dev/zero"],
            env=env, stdin=subprocess.DEVNULL, stdout=log, stderr=log,
        ))  # fmt: skip
    _wait(lambda: _count_lines(_pactl(env, "list", "short", "sink-inputs")) >= len(names),
          "pacat streams", root, daemon)  # fmt: skip
    # The sinks were created at their idle 2 s latency and would only notice the
    # low-latency client at the end of that period; a suspend/resume applies it now.
    for name in names:
        _pactl(env, "suspend-sink", name, "1")
        _pactl(env, "suspend-sink", name, "0")
    _wait(lambda: _max_sink_latency_us(env) < 50_000, "low sink latency", root, daemon)


def _as_portaudio_devices(root: Path, server: str, names: list[str]) -> dict[str, int]:
    """Point this process's ALSA (hence PortAudio) at the sinks; their device indices."""
    asoundrc = root / "asoundrc"
    asoundrc.write_text("".join(
        f'pcm.{n} {{ type pulse device "{n}" }}\n'
        f'pcm.{n}_monitor {{ type pulse device "{n}.monitor" }}\n'
        for n in names
    ))  # fmt: skip
    os.environ["PULSE_SERVER"] = server
    os.environ["ALSA_CONFIG_PATH"] = f"{_ALSA_CONF}:{asoundrc}"
    refresh_devices()
    index = {d.name: d.index for d in list_devices()}
    lost = [n for n in names for p in (n, f"{n}_monitor") if p not in index]
    if lost:
        raise PulseUnavailableError(f"PortAudio does not list {lost}; it lists {index}")
    return index


def _pactl(env: dict[str, str], *args: str, check: bool = True) -> str | None:
    res = subprocess.run(["pactl", *args], env=env, capture_output=True, text=True, timeout=10)
    if res.returncode:
        if check:
            raise PulseUnavailableError(f"pactl {' '.join(args)}: {res.stderr.strip()}")
        return None
    return res.stdout


def _count_lines(text: str | None) -> int:
    return len((text or "").strip().splitlines())


def _max_sink_latency_us(env: dict[str, str]) -> int:
    found = re.findall(r"^\s*Latency: (\d+) usec", _pactl(env, "list", "sinks") or "", re.M)
    return max(map(int, found), default=1 << 30)


def _wait(
    ready: Callable[[], bool], what: str, root: Path, daemon: subprocess.Popen[bytes]
) -> None:
    deadline = time.monotonic() + 5.0
    while not ready():
        if daemon.poll() is not None or time.monotonic() > deadline:
            log = (root / "pulse.log").read_text(errors="replace")[-2000:]
            raise PulseUnavailableError(f"PulseAudio: no {what} within 5 s; log:\n{log}")
        time.sleep(0.02)


def _stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=3)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=3)
