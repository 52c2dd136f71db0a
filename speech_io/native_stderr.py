"""Native audio libraries' chatter, caught and logged instead of written over the screen.

ALSA ("ALSA lib pcm.c:...: underrun occurred") and PortAudio's ALSA host ("Expression
... failed in src/hostapi/alsa/pa_linux_alsa.c") print with ``fprintf(stderr)``, below
Python: neither ``logging`` nor ``sys.stderr`` sees them, and they land in the middle of
a chat screen or a bench report. While a :class:`NativeStderr` runs, file descriptor 2
is a pipe whose lines go to a logger; Python's own ``sys.stderr`` and ``sys.__stderr__``
keep writing to the real terminal, so our messages and tracebacks still show, and so does
a full-screen app that draws on ``sys.__stderr__`` (Textual does) when it starts after us.
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
import sys
import threading
from collections.abc import Callable
from typing import TextIO

__all__ = ["NativeStderr"]

log = logging.getLogger("parley.audio.native")


class NativeStderr:
    """Route what native code writes to fd 2 to ``sink`` (default: a DEBUG log line).

    ``start()``/``stop()`` or a ``with`` block; process-wide while active, since fd 2 is.
    """

    def __init__(self, sink: Callable[[str], None] | None = None) -> None:
        self._sink = sink or (lambda line: log.debug("%s", line))
        self._lock = threading.Lock()
        self._saved: int | None = None
        self._pipe_w: int | None = None
        self._python_stderr: TextIO | None = None
        self._python_dunder: object | None = None
        self._reader: threading.Thread | None = None

    def __enter__(self) -> NativeStderr:
        return self.start()

    def __exit__(self, *_exc: object) -> None:
        self.stop()

    def start(self) -> NativeStderr:
        if self._saved is not None:
            return self
        with contextlib.suppress(AttributeError, ValueError, OSError):
            sys.stderr.flush()
        read, self._pipe_w = os.pipe()
        self._saved = os.dup(2)
        os.dup2(self._pipe_w, 2)
        if _writes_to_fd2(sys.stderr):
            # Python's messages are ours, not chatter: they keep the terminal.
            self._python_stderr = sys.stderr
            sys.stderr = self._terminal()
        if _writes_to_fd2(sys.__stderr__):
            self._python_dunder = sys.__stderr__
            # sys.__stderr__ is Final to type checkers; swapping it is the point here.
            sys.__stderr__ = sys.stderr if self._python_stderr is not None else self._terminal()  # type: ignore[misc,assignment]
        self._reader = threading.Thread(
            target=self._pump, args=(read,), name="parley-native-stderr", daemon=True
        )
        self._reader.start()
        return self

    def stop(self) -> None:
        if self._saved is None:
            return
        if self._python_dunder is not None:
            terminal = sys.__stderr__
            sys.__stderr__, self._python_dunder = self._python_dunder, None  # type: ignore[misc,assignment]
            if terminal is not sys.stderr and terminal is not None:
                terminal.flush()
                terminal.close()
        if self._python_stderr is not None:
            sys.stderr.flush()
            sys.stderr.close()
            sys.stderr, self._python_stderr = self._python_stderr, None
        with self._lock:
            os.dup2(self._saved, 2)
            os.close(self._saved)
            self._saved = None
        if self._pipe_w is not None:
            os.close(self._pipe_w)  # the last write end: the reader sees end of file
            self._pipe_w = None
        if self._reader is not None:
            # A child started meanwhile may hold the pipe open; it cannot hold us up.
            self._reader.join(timeout=1.0)
            self._reader = None

    def _terminal(self) -> io.TextIOWrapper:
        """A line-buffered text stream on the real terminal (a dup of the saved fd 2)."""
        assert self._saved is not None
        return open(  # noqa: SIM115 - closed in stop()
            os.dup(self._saved), "w", buffering=1, encoding="utf-8", errors="replace"
        )

    def _pump(self, read: int) -> None:
        with os.fdopen(read, "rb") as pipe:
            for raw in pipe:
                line = raw.decode("utf-8", "replace").rstrip()
                if line:
                    self._forward(line)

    def _forward(self, line: str) -> None:
        # A log handler made before start() may hold the old sys.stderr, i.e. fd 2: give it
        # the terminal for this call, or its line would come back through the pipe forever.
        with self._lock:
            if self._saved is None:
                self._sink(line)
                return
            os.dup2(self._saved, 2)
            try:
                self._sink(line)
            finally:
                if self._pipe_w is not None:
                    os.dup2(self._pipe_w, 2)


def _writes_to_fd2(stream: object) -> bool:
    try:
        return stream.fileno() == 2  # type: ignore[attr-defined]
    except (AttributeError, ValueError, OSError):
        return False
