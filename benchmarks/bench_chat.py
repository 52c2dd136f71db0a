"""The chat app under a scripted conversation on PulseAudio null sinks, in real time.

Runs the app headless (Textual's test harness) with real sounddevice streams through
DeviceTransport, a scripted user (espeak questions, and a barge-in on every other reply)
played into the agent's microphone sink, for ``--duration`` seconds (default 120). Then
the same again without the UI (session and transport only), and reports per minute the
output underruns and input overruns of each run, and the UI's CPU share: the extra
process CPU time the UI run took over the plain run, per wall second (plus the redraw
callback's own time, a lower bound). Needs pulseaudio, pulseaudio-utils,
libasound2-plugins, libportaudio2 and espeak-ng.

    .venv/bin/python benchmarks/bench_chat.py [--duration 120] [--no-baseline]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from parley.speech_io.audio import SAMPLE_RATE as SR

os.environ.setdefault("HF_HUB_OFFLINE", "1")


def script(duration: float, cache: Path) -> np.ndarray:
    """The user's channel: a question every 14 s; every other reply cut 2 s in."""
    from parley.agent.harness.render import say
    from parley.agent.harness.scenario import DEFAULT_VOICE

    ask = say("tell me a long story about the sea", DEFAULT_VOICE, cache)
    stop = say("no wait, stop please", DEFAULT_VOICE, cache)
    user = np.zeros(int(duration * SR), np.float32)
    for k, at in enumerate(np.arange(1.0, duration - 12, 14.0)):
        a = int(at * SR)
        user[a : a + len(ask)] = ask[: len(user) - a]
        if k % 2:  # about 0.5 s endpoint plus first audio, then 2 s of reply
            b = a + len(ask) + int(3.0 * SR)
            user[b : b + len(stop)] = stop[: max(0, len(user) - b)]
    return user


async def run(model, user: np.ndarray, dev, with_ui: bool) -> dict[str, Any]:
    import sounddevice as sd

    from parley.agent.chat import ChatApp, ChatEndpoint, DeviceBackend
    from parley.agent.core.session import DuplexSession

    session = DuplexSession(model, model.config.agent)
    backend = DeviceBackend(dev.monitors["user_in"], dev.sinks["agent_out"])
    pos = 0

    def play(outdata: np.ndarray, frames: int, _t: Any, _s: Any) -> None:
        nonlocal pos
        chunk = user[pos : pos + frames]
        outdata.fill(0)
        outdata[: len(chunk), 0] = chunk
        pos += frames

    room = sd.OutputStream(device=dev.sinks["user_in"], samplerate=SR, channels=1,
                           blocksize=160, latency="low", callback=play)  # fmt: skip
    duration = len(user) / SR
    cpu0, wall0 = time.process_time(), time.perf_counter()
    ui_cpu, figures = 0.0, ""
    if with_ui:
        app = ChatApp(session, backend, random_weights=model.random_weights)
        async with app.run_test(size=(140, 40)) as pilot:
            room.start()
            await pilot.pause(duration)
            events = app.event_log
            ui_cpu = app.ui_cpu_s
            figures = app.figures_text()
            await backend.aclose()
    else:
        endpoint = ChatEndpoint(session)
        events: list[dict] = []
        session.subscribe(
            lambda e: events.append(e.to_dict()) if e.type != "audio_played" else None
        )
        await backend.start(endpoint)
        room.start()
        await asyncio.sleep(duration)
        await backend.aclose()
    cpu, wall = time.process_time() - cpu0, time.perf_counter() - wall0
    room.abort()
    room.close()
    await session.aclose()
    st = backend.stats
    minutes = wall / 60
    return {
        "ui": with_ui,
        "wall_s": wall,
        "cpu_s": cpu,
        "ui_redraw_cpu_s": ui_cpu,
        "underruns_per_min": st.output_underruns / minutes,
        "overruns_per_min": st.input_overruns / minutes,
        "portaudio_flags": sum(st.status_flags.values()),
        "replies": sum(e["type"] == "reply_started" for e in events),
        "interruptions": sum(e["type"] == "interrupted" for e in events),
        "figures": figures,
    }


async def main_async(args: argparse.Namespace) -> None:
    import torch

    from parley.agent.core.model import AgentModel
    from parley.config import load_config
    from parley.llm.builder import build_checkpoint
    from parley.speech_io.pulse import pulse_null_sinks

    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory(prefix="bench-chat-") as tmp:
        ckpt = build_checkpoint(Path(tmp) / "ckpt", load_config("tiny").model, seed=0)
        model = AgentModel.load(ckpt, load_config("tiny"))
        user = script(args.duration, Path(tmp) / "tts")
        results = []
        with pulse_null_sinks(["agent_out", "user_in"]) as dev:
            for with_ui in (True, False) if args.baseline else (True,):
                results.append(await run(model, user, dev, with_ui))
        await model.aclose()
    print(f"{'run':<10} {'wall s':>7} {'cpu s':>7} {'underruns/min':>14} {'overruns/min':>13} "
          f"{'PA flags':>8} {'replies':>7} {'cuts':>5}")  # fmt: skip
    for r in results:
        print(f"{'with UI' if r['ui'] else 'no UI':<10} {r['wall_s']:7.1f} {r['cpu_s']:7.1f} "
              f"{r['underruns_per_min']:14.2f} {r['overruns_per_min']:13.2f} "
              f"{r['portaudio_flags']:8d} {r['replies']:7d} {r['interruptions']:5d}")  # fmt: skip
    ui = results[0]
    print(f"as the app showed them: {ui['figures']}")
    print(f"UI redraw callbacks: {100 * ui['ui_redraw_cpu_s'] / ui['wall_s']:.1f}% of one core")
    if len(results) == 2:
        extra = (ui["cpu_s"] - results[1]["cpu_s"]) / ui["wall_s"]
        print(
            f"UI CPU share (with UI minus without, per wall second): {100 * extra:.1f}% of one core"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--duration", type=float, default=120.0, help="seconds per run")
    parser.add_argument("--no-baseline", dest="baseline", action="store_false",
                        help="skip the run without UI")  # fmt: skip
    asyncio.run(main_async(parser.parse_args()))


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    main()
