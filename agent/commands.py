"""What each CLI command does, given its parsed arguments."""

from __future__ import annotations

import argparse
import asyncio
import json
from collections.abc import Callable

import numpy as np

from parley.agent.runtime import default_checkpoint, load_runtime_config, with_model
from parley.config import load_config
from parley.tokenizers.vocab import TokenClass

Log = Callable[[str], None]


def make_checkpoint(args: argparse.Namespace, log: Log) -> int:
    from parley.llm.builder import build_checkpoint

    cfg = load_config(args.preset).model
    build_checkpoint(
        args.out,
        cfg,
        seed=args.seed,
        encoder_from=args.encoder_from,
        lm_from=args.lm_from,
        log=log,
        overwrite=args.force,
    )
    return 0


def demo(args: argparse.Namespace, log: Log) -> int:
    from parley.agent.core.speak import SpeakPipeline
    from parley.agent.preflight import sample_path
    from parley.speech_io.audio import load_audio, write_wav

    cfg = load_runtime_config(args)
    # The preflight has read and described it already; this is the copy the model hears.
    source = args.input or sample_path()
    audio = load_audio(source, cfg.model.features.sample_rate)

    async def turn(model, cfg):
        return model, await SpeakPipeline(model.checkpoint, model.engine, cfg.agent).run_turn(audio)

    model, result = with_model(args, log, turn)
    checkpoint, path = model.checkpoint, model.checkpoint.path

    write_wav(args.output, result.audio, result.sample_rate)
    speech = sum(
        1 for t in result.token_ids if checkpoint.manifest.vocab.classify(t) is TokenClass.SPEECH
    )
    print(f"reply text ({len(result.token_ids)} tokens, {speech} speech): {result.text!r}")
    print(f"reply audio: {args.output} ({len(result.audio) / result.sample_rate:.2f} s)")
    print("stage times after the user's audio ended:")
    for name, ms in result.latencies_ms().items():
        print(f"  {name:<20} {ms:9.1f} ms")
    if checkpoint.random_weights:
        print("note: this checkpoint has random weights, so the reply is noise, not speech.")
    if args.events:
        log_data = {
            "checkpoint": str(path),
            "input": str(source),
            "events": [{"event": e.name, "t_s": round(e.t, 6)} for e in result.events],
            "after_audio_in_end_ms": result.latencies_ms(),
            "reply": {
                "text": result.text,
                "token_ids": result.token_ids,
                "audio_s": round(len(result.audio) / result.sample_rate, 4),
            },
            "random_weights": checkpoint.random_weights,
        }
        args.events.parent.mkdir(parents=True, exist_ok=True)
        args.events.write_text(json.dumps(log_data, indent=2) + "\n")
    if not np.isfinite(result.audio).all():
        raise AssertionError("vocoder produced non-finite audio")
    return 0


def bench(args: argparse.Namespace, log: Log) -> int:
    from parley.agent.harness.metrics import aggregate, check_targets, score
    from parley.agent.harness.report import write_report
    from parley.agent.harness.runner import run_scenario
    from parley.agent.harness.scenario import load_scenarios, shipped_scenarios_dir

    scenarios = load_scenarios(args.scenario or shipped_scenarios_dir())
    if args.realtime:
        from parley.agent.harness.realtime import check_realtime_available

        check_realtime_available()

    async def run_all(model, cfg):
        records = []
        for scenario in scenarios:
            log(f"scenario {scenario.name} ({'real time' if args.realtime else 'virtual time'})")
            if args.realtime:
                from parley.agent.harness.realtime import run_scenario_realtime

                records.append(await run_scenario_realtime(model, scenario, cfg.agent))
            else:
                records.append(await run_scenario(model, scenario, cfg.agent))
        return records

    records = _bench_wire(args, scenarios, log) if args.url else with_model(args, log, run_all)
    scored = [score(r) for r in records]
    write_report(args.out, records, scored)
    pooled = aggregate(scored)
    print((args.out / "summary.md").read_text())
    if args.fdb:
        print(_fdb_report(args, records, pooled, log))
    misses = [k for k, ok in check_targets(pooled).items() if ok is False]
    print(
        f"report: {args.out} ({len(records)} scenario(s)); targets missed: {', '.join(misses) or 'none'}"
    )
    # A bench in CI or a script must fail when the agent does; --report-only is for looking.
    return 1 if misses and not args.report_only else 0


def _fdb_report(args: argparse.Namespace, records: list, pooled: dict, log: Log) -> str:
    """Full-Duplex-Bench v1's figures for ``records``, written beside the report."""
    from parley.agent.harness.fdb import Word, fdb_markdown, pool_fdb, score_fdb, snap_to_sound
    from parley.evaluation.judge import WhisperJudge

    log("Full-Duplex-Bench figures: transcribing the agent's channel (faster-whisper tiny.en)")
    judge = WhisperJudge(threads=args.threads or 1)
    per_run = {}
    for r in records:
        heard = [Word(w, a, b) for w, a, b in judge.words(r.output)]
        words = snap_to_sound(heard, r.output, r.sample_rate)
        per_run[r.scenario.name] = {
            **score_fdb(r.segments, words, r.sample_rate, r.duration_s),
            "words": [[w.text, round(w.start, 3), round(w.end, 3)] for w in words],
        }
    fdb = pool_fdb(list(per_run.values()))
    text = fdb_markdown(fdb, pooled["backchannel_takeover_rate"])
    (args.out / "fdb.json").write_text(
        json.dumps({"scenarios": per_run, "aggregate": fdb}, indent=2) + "\n"
    )
    (args.out / "fdb.md").write_text(text)
    return text


def _bench_wire(args: argparse.Namespace, scenarios, log: Log) -> list:
    """Each scenario against the server at ``args.url``; no model is loaded here."""
    from parley.agent.harness.wire import realtime_url, run_scenario_wire

    # Every scenario meets the same server: what it says about its settings is said once.
    note = once(log)

    async def run_all() -> list:
        records = []
        for scenario in scenarios:
            log(f"scenario {scenario.name} (real time, over {realtime_url(args.url)})")
            records.append(await run_scenario_wire(args.url, scenario, args.token, log=note))
        return records

    return asyncio.run(run_all())


def duplex(args: argparse.Namespace, log: Log) -> int:
    from parley.agent.core.clock import VirtualClock
    from parley.agent.core.session import DuplexSession
    from parley.agent.harness.drive import drive
    from parley.agent.preflight import SAMPLE_CONVERSATION, sample_path
    from parley.speech_io.audio import load_audio
    from parley.speech_io.sources import ArraySource, FileSink

    cfg = load_runtime_config(args)
    rate = cfg.model.features.sample_rate
    user = load_audio(args.input or sample_path(SAMPLE_CONVERSATION), rate)
    events: list[dict] = []
    sink = FileSink(args.output)
    detection: list[str] = []

    async def run(model, cfg) -> None:
        clock = VirtualClock()
        session = DuplexSession(model, cfg.agent, clock=clock)
        detection.append(session.turn_detection)
        session.subscribe(lambda e: events.append(e.to_dict()))
        try:
            await drive(session, clock, ArraySource(user), sink, len(user))
        finally:
            await session.aclose()

    with_model(args, log, run)
    out = sink.samples
    sink.close()
    if args.events:
        args.events.parent.mkdir(parents=True, exist_ok=True)
        args.events.write_text(json.dumps(events, indent=1) + "\n")
    replies = sum(e["type"] == "reply_started" for e in events)
    cuts = sum(e["type"] == "interrupted" for e in events)
    if not replies:
        log(_why_no_reply(events, user, rate, _turn_rule(detection[0], cfg.agent)))
    print(
        f"wrote {args.output} ({len(out) / rate:.2f} s, same length as the input): {replies} replies, {cuts} interrupted"
    )
    return 0


def once(log: Log) -> Log:
    """``log`` that says each distinct line once."""
    said: set[str] = set()

    def say(msg: str) -> None:
        if msg not in said:
            said.add(msg)
            log(msg)

    return say


def _turn_rule(detection: str, agent) -> str:
    """How the session ends a turn, for advice."""
    if detection == "semantic_vad":
        from parley.agent.core.endpoint import semantic_policy
        from parley.speech_io.audio import SAMPLE_RATE

        policy = semantic_policy(agent.eagerness, SAMPLE_RATE, agent.endpoint_silence_ms)
        ms = SAMPLE_RATE // 1000
        first = f"{policy.first_ask // ms} ms"
        return (
            f"a turn ends {first} into the silence after a question the end-of-turn "
            f"detector is sure is finished, else after up to {policy.longest // ms} ms of "
            "silence"
        )
    return f"a turn ends after {agent.endpoint_silence_ms} ms of silence"


def _why_no_reply(events: list[dict], user: np.ndarray, rate: int, turn_rule: str) -> str:
    """The likeliest reason a duplex run gave no reply, as advice."""
    if any(e["type"] == "user_turn_ended" for e in events):
        return "no reply: the user's turn ended but was too short to answer"
    if not any(e["type"] == "user_speech_started" for e in events):
        return "no reply: no speech was detected in the input (too quiet, or too short?)"
    last = events[max(i for i, e in enumerate(events) if e["type"].startswith("user_speech_"))]
    quiet_ms = 0.0
    if last["type"] == "user_speech_ended":
        quiet_ms = 1000 * (len(user) - last["input_sample"]) / rate
    return (
        f"no reply: the input ends {quiet_ms:.0f} ms after the user's last speech, and "
        f"{turn_rule}; add trailing silence to the input "
        "(e.g. sox in.wav out.wav pad 0 1)"
    )


def lm_server(args: argparse.Namespace, log: Log) -> int:
    import os
    import shlex

    from parley.llm.vllm_engine import import_vllm

    # Even --print needs vLLM: the command line holds its logits-processor class path.
    import_vllm()
    from parley.llm.checkpoint import read_manifest
    from parley.llm.vllm_server import serve_command

    cfg = load_runtime_config(args)
    path = args.checkpoint or default_checkpoint(log)
    read_manifest(path)
    extra = [a for a in args.vllm_args if a != "--"]
    cmd = serve_command(path / "lm", cfg.engine, args.host, args.port, extra)
    if args.print:
        print(shlex.join(cmd))
        return 0
    log(
        f"serving {path / 'lm'} on http://{args.host}:{args.port} (vLLM start-up: about 30 s on CPU)"
    )
    log(f"agents connect with: --engine vllm-server --engine-url http://{args.host}:{args.port}")
    os.execv(cmd[0], cmd)
    return 0  # not reached: the process is now vllm serve


def serve(args: argparse.Namespace, log: Log) -> int:
    import logging
    import signal

    from parley.agent.service.api import Agent
    from parley.agent.service.auth import resolve_token
    from parley.agent.service.limits import ServiceLimits, check_bind
    from parley.agent.service.server import REALTIME_PATHS, RealtimeServer
    from parley.errors import ConfigError

    # Refuse a bad token or bind before spending time on the model.
    token, token_source = resolve_token(args.token, args.token_file)
    check_bind(args.host, token)
    # Session logs (parley.service): one line per event worth keeping, with session=ID.
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    logging.getLogger("websockets").setLevel(logging.WARNING)
    from parley.agent.service.limits import default_max_sessions

    max_sessions = default_max_sessions() if args.max_sessions is None else args.max_sessions
    if max_sessions < 1 or args.max_buffered_audio <= 0:
        raise ConfigError("--max-sessions must be >= 1 and --max-buffered-audio > 0")
    if args.idle_timeout < 0 or args.slow_consumer_timeout < 0:
        raise ConfigError("--idle-timeout and --slow-consumer-timeout must be >= 0 (0: none)")
    limits = ServiceLimits(
        max_sessions=max_sessions,
        max_buffered_audio_s=args.max_buffered_audio,
        idle_timeout_s=args.idle_timeout or None,
        slow_consumer_timeout_s=args.slow_consumer_timeout or None,
    )

    async def run(model, cfg) -> None:
        server = RealtimeServer(Agent(model), limits, token=token)
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        async with server.serve(args.host, args.port) as srv:
            port = srv.sockets[0].getsockname()[1]
            log(
                f"serving ws://{args.host}:{port}{REALTIME_PATHS[0]} (clients: base URL "
                f"ws://{args.host}:{port}/v1); /healthz, /metrics; Ctrl-C stops"
            )
            log(f"talk to it in a browser: http://{_url_host(args.host)}:{port}/")
            if token_source is not None:
                log(f"clients need the bearer token from {token_source} (also for /metrics)")
            how = "--max-sessions" if args.max_sessions is not None else "2 per CPU core"
            log(f"admitting at most {max_sessions} sessions at once ({how})")
            await stop.wait()
        log("stopped")

    with_model(args, log, run)
    return 0


def _url_host(host: str) -> str:
    """``host`` as a browser takes it: a wildcard bind is reached on loopback (a secure
    context, where the page may use the microphone), an IPv6 address in brackets."""
    if host in ("0.0.0.0", "", "::"):
        return "127.0.0.1"
    return f"[{host}]" if ":" in host else host


def chat(args: argparse.Namespace, log: Log) -> int:
    from parley.agent.chat.command import chat as run_chat

    return run_chat(args, log)


def evaluate(args: argparse.Namespace, log: Log) -> int:
    from parley.evaluation.run_eval import run

    return run(args, log)


def make_corpus(args: argparse.Namespace, log: Log) -> int:
    from parley.train.corpus import CorpusOptions
    from parley.train.corpus import make_corpus as build

    voices = tuple(v.strip() for v in args.voices.split(",") if v.strip()) if args.voices else None
    opts = CorpusOptions(
        out=args.out,
        dialogues=args.dialogues,
        heldout=args.heldout,
        seed=args.seed,
        workers=args.workers,
        voices=voices,
        progress=not args.quiet,
    )
    build(opts, log)
    return 0


def train(args: argparse.Namespace, log: Log) -> int:
    from parley.train.lm_train import LMTrainConfig
    from parley.train.pipeline import TrainOptions, run_training

    run_training(
        TrainOptions(
            out=args.out,
            work=args.work,
            corpus=args.corpus,
            preset=args.preset,
            encoder_from=args.encoder_from,
            init_from=args.init_from,
            codec_from=args.codec_from,
            chained=args.chained,
            followups=args.followups,
            followup_drills=args.followup_drills,
            question_drills=args.question_drills,
            noisy_copies=args.noisy_copies,
            tune_encoder=args.tune_encoder,
            tuned_rank=args.tuned_rank,
            refusals=args.refusals,
            spoken_refusals=args.spoken_refusals,
            dialogues=args.dialogues,
            codec_minutes=args.codec_minutes,
            codec_steps=args.codec_steps or None,
            codec_texts=args.codec_texts,
            lm=LMTrainConfig(
                steps=args.steps, batch_size=args.batch_size, lr=args.lr, threads=args.threads
            ),
            seed=args.seed,
            workers=args.workers,
            progress=not args.quiet,
            force=args.force,
            parallel=not args.sequential,
            stages=tuple(args.stages.split(",")) if args.stages else (),
        ),
        log=log,
    )
    return 0


def train_turns(args: argparse.Namespace, log: Log) -> int:
    from parley.train.cut_in_train import train_cut_in_detector
    from parley.train.turn_train import TurnTrainOptions, train_turn_detector

    train = train_cut_in_detector if args.cut_in else train_turn_detector
    train(
        TurnTrainOptions(
            checkpoint=args.checkpoint,
            corpus=args.corpus,
            work=args.work,
            questions=args.questions,
            beyond_share=args.beyond_share,
            epochs=args.epochs,
            frames=args.frames,
            seed=args.seed,
            threads=args.threads,
            progress=not args.no_progress,
            phrases=args.phrases,
            voices=tuple(v for v in args.voices.split(",") if v),
        ),
        log,
    )
    return 0
