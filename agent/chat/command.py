"""``run_agent.py chat``: check the sound devices, load the model, run the app."""

from __future__ import annotations

import argparse
import logging
from collections.abc import Callable
from pathlib import Path

from parley.speech_io.soundcard import AudioDeviceError

FILE_ADVICE = (
    "to talk to the agent through files instead, run `run_agent.py demo --input WAV` "
    "(one turn) or `run_agent.py duplex --input WAV --output WAV` (a whole conversation)"
)


def device_spec(text: str | None) -> int | str | None:
    """``--input-device``/``--output-device``: an index when it is a number, else a name."""
    if text is None:
        return None
    return int(text) if text.strip().isdigit() else text


def check_devices(input_device: int | str | None, output_device: int | str | None) -> None:
    """Raise :class:`AudioDeviceError` saying what was found, and what to do instead,
    when there is no usable microphone or speaker; before the model loads, so it is quick."""
    from parley.speech_io.soundcard import _pick, list_devices

    try:
        devices = list_devices()
        _pick(devices, input_device, "input")
        _pick(devices, output_device, "output")
    except AudioDeviceError as exc:
        raise AudioDeviceError(
            f"chat needs a microphone and a speaker: {exc}; {FILE_ADVICE}"
        ) from None


def chat(args: argparse.Namespace, log: Callable[[str], None]) -> int:
    from parley.agent.chat.app import ChatApp
    from parley.agent.chat.audio import DeviceBackend
    from parley.agent.core.session import DuplexSession
    from parley.agent.runtime import with_model
    from parley.speech_io.native_stderr import NativeStderr

    inp, out = device_spec(args.input_device), device_spec(args.output_device)
    check_devices(inp, out)
    # Log records would be written over the full-screen UI; the app shows errors itself.
    logging.getLogger().addHandler(logging.NullHandler())
    logging.getLogger("parley").propagate = False

    async def run(model, cfg) -> None:
        session = DuplexSession(model, cfg.agent)
        # ALSA and PortAudio print underruns over the screen from C; started before the
        # app, the capture leaves Textual the terminal and sends their lines to the log.
        native = NativeStderr().start()
        try:
            app = ChatApp(
                session,
                DeviceBackend(inp, out),
                backend_factory=DeviceBackend,
                random_weights=model.random_weights,
                save_dir=Path(args.save_dir),
                info=f"checkpoint {model.checkpoint.path.name}, engine {cfg.engine.name}",
            )
            await app.run_async()
        finally:
            native.stop()
            await session.aclose()

    with_model(args, log, run)
    return 0
