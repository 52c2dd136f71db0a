"""What one server and each of its sessions may use, and who may bind where."""

from __future__ import annotations

import ipaddress
import os
from dataclasses import dataclass

from parley.errors import ParleyError


@dataclass(frozen=True)
class ServiceLimits:
    """Bounds that keep one client from taking memory or time from the others."""

    max_sessions: int = 16
    """Concurrent sessions; a connection beyond this is refused with HTTP 503. ``serve``
    sets it from the machine (:func:`default_max_sessions`)."""
    max_message_bytes: int = 1 << 20
    """A bigger client message gets an ``error`` event and is dropped; one over twice
    this is not even read (the connection closes with 1009)."""
    max_buffered_audio_s: float = 10.0
    """Client audio waiting to be heard: audio pushed faster than real time queues, and
    what would go past this gets an ``error`` event instead of memory. The same bound
    holds the uncommitted plus committed audio with turn detection off."""
    max_pending_events: int = 4096
    """Server events queued for a client that does not read them; past this the
    connection is closed (1008), since it would otherwise grow without bound."""
    max_messages_per_s: float = 200.0
    """Client messages handled per second, with ``message_burst`` saved up; a faster
    client waits (its messages stay in its socket). Audio streamed in 20 ms chunks is 50
    a second."""
    message_burst: int = 400
    max_bytes_per_s: float = float(2 << 20)
    """Client bytes parsed per second (bursts of two maximum messages); real-time 24 kHz
    audio in base64 is 64 kB/s."""
    slow_consumer_timeout_s: float | None = 10.0
    """Events waiting and none written to the client for this long: the client does not
    read, and the connection is closed (1008). Its socket fills long before
    ``max_pending_events`` do, so this is the bound that acts. None: no limit."""
    idle_timeout_s: float | None = 300.0
    """No message from the client for this long closes the connection (1001), so a
    forgotten connection does not hold a session place forever. A live audio client sends
    every few tens of ms; a text-only client between questions is the slow case. None: no
    limit."""
    input_hold_ms: int = 200
    """A client that appended audio this recently is still streaming: the audio clock
    waits for its next chunk instead of filling silence (network jitter)."""
    tick_ms: int = 20
    """How often the audio clock runs: input frames go in and output goes out in steps
    of this size, so it is also the size of most audio deltas."""
    max_catch_up_s: float = 0.5
    """After a stall (an overloaded loop), at most this much time is caught up at once;
    the rest is skipped, so output is never sent in a multi-second burst."""


SESSIONS_PER_CORE = 2
"""Measured on a 2-core CPU: with 4 real-time sessions the first reply audio came 0.38 s
(median) after the response began and audio gaps stayed under 0.73 s; with 8, 1.27 s and
gaps of up to 5.9 s. Each session runs its encoder, VAD and vocoder on the loop's cores."""


def default_max_sessions() -> int:
    """Sessions this machine holds in real time: ``SESSIONS_PER_CORE`` per core it may use."""
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        cores = os.cpu_count() or 1
    return max(1, SESSIONS_PER_CORE * cores)


def is_loopback(host: str) -> bool:
    """True for ``localhost`` and loopback addresses (127.0.0.0/8, ::1)."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def check_bind(host: str, token: str | None) -> None:
    """Refuse to listen beyond this machine without a bearer token."""
    if not is_loopback(host) and not token:
        raise ParleyError(
            f"refusing to listen on {host} without a token: anyone who can reach it could "
            "use the model; set a token with --token-file PATH, $PARLEY_TOKEN or --token "
            "TOKEN (clients send 'Authorization: Bearer TOKEN'), or bind 127.0.0.1"
        )
