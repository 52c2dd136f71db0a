"""Native libraries' stderr (ALSA, PortAudio) goes to our log, never over the screen."""

from __future__ import annotations

import logging
import os
import sys

from parley.speech_io.native_stderr import NativeStderr


def test_native_writes_to_fd2_reach_the_sink_not_the_terminal(capfd) -> None:
    lines: list[str] = []
    with NativeStderr(lines.append):
        # What libasound does: write(2, ...) from C, under Python's feet.
        os.write(2, b"ALSA lib pcm.c:8568:(snd_pcm_recover) underrun occurred\n")
        os.write(2, b"Expression 'ret' failed in 'src/hostapi/alsa/pa_linux_alsa.c'\n")
    assert lines == [
        "ALSA lib pcm.c:8568:(snd_pcm_recover) underrun occurred",
        "Expression 'ret' failed in 'src/hostapi/alsa/pa_linux_alsa.c'",
    ]
    assert "underrun" not in capfd.readouterr().err
    os.write(2, b"after\n")  # fd 2 is itself again
    assert capfd.readouterr().err == "after\n"


def test_a_log_handler_on_fd2_does_not_feed_back(capfd) -> None:
    # A handler writing to fd 2 itself: without care its line would come back through the
    # pipe, be logged again, and so on for ever. It must go out once, to the real stderr.
    stream = os.fdopen(2, "w", closefd=False)
    handler = logging.StreamHandler(stream)
    logger = logging.getLogger("test.native")
    logger.addHandler(handler)
    logger.propagate = False
    lines: list[str] = []

    def sink(line: str) -> None:
        lines.append(line)
        logger.warning("native: %s", line)

    try:
        with NativeStderr(sink):
            os.write(2, b"hello from C\n")
    finally:
        logger.removeHandler(handler)
        logger.propagate = True
    assert lines == ["hello from C"]
    assert capfd.readouterr().err == "native: hello from C\n"


def test_python_stderr_keeps_the_terminal(capfd, monkeypatch) -> None:
    # Only when sys.stderr is fd 2 itself (a real terminal run) is it moved aside.
    monkeypatch.setattr(sys, "stderr", os.fdopen(os.dup(2), "w"))
    lines: list[str] = []
    with NativeStderr(lines.append):
        print("our message", file=sys.stderr, flush=True)
    assert lines == []


def test_an_app_drawing_on_dunder_stderr_keeps_the_terminal(capfd, monkeypatch) -> None:
    # Textual's driver draws on sys.__stderr__, fd 2 on a terminal: started after the
    # capture (as chat starts it), it must still reach the screen, not the log.
    original = os.fdopen(2, "w", closefd=False)
    monkeypatch.setattr(sys, "__stderr__", original)
    lines: list[str] = []
    with NativeStderr(lines.append):
        screen = sys.__stderr__
        assert screen is not original and screen.fileno() != 2
        screen.write("\x1b[2Jdrawn\n")
        screen.flush()
        os.write(2, b"ALSA lib chatter\n")
    assert sys.__stderr__ is original
    assert lines == ["ALSA lib chatter"]
    assert capfd.readouterr().err == "\x1b[2Jdrawn\n"
