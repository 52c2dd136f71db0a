"""Write a harness run to disk: metrics.json, summary.md, and per scenario audio and a plot.

Layout of ``out_dir``::

    metrics.json            {"scenarios": {name: score}, "aggregate": pooled score}
    summary.md              one table per scenario and one for the aggregate, with targets
    <name>/input.wav        what the user said
    <name>/mic.wav          what the microphone heard (user + echo + noise)
    <name>/output.wav       what the agent played, same length as input.wav
    <name>/timeline.png     waveforms, user segments, agent states, barge-in markers
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.figure import Figure

from parley.agent.harness.metrics import aggregate, check_targets, targets_for
from parley.agent.harness.record import RunRecord
from parley.speech_io.audio import write_wav

__all__ = ["plot_timeline", "summary_markdown", "write_report"]

ROLE_COLORS = {
    "turn": "tab:blue",
    "interrupt": "tab:red",
    "backchannel": "tab:green",
    "noise": "tab:gray",
    "continuation": "tab:purple",
}
STATE_COLORS = {
    "listening": "#d9d9d9",
    "thinking": "#fdd49e",
    "speaking": "#9ecae1",
    "paused": "#fc9272",
    "interrupted": "#cb181d",
}
MARKERS = {
    "interrupted": ("tab:red", "-"),
    "playback_paused": ("tab:orange", "--"),
    "playback_resumed": ("tab:green", ":"),
}
_PLOT_COLUMNS = 4000  # waveform drawn as a min/max envelope this many columns wide


def write_report(
    out_dir: str | Path, records: Sequence[RunRecord], scored: Sequence[dict[str, Any]]
) -> Path:
    """Write the report for ``records`` and their ``scored`` metrics; return ``out_dir``."""
    if len(records) != len(scored):
        raise ValueError(f"{len(records)} records but {len(scored)} scores")
    names = [r.scenario.name for r in records]
    if len(set(names)) != len(names):
        raise ValueError(f"scenario names must be unique in a report: {names}")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    pooled = aggregate(scored)
    metrics = {"scenarios": dict(zip(names, scored, strict=True)), "aggregate": pooled}
    (out / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n")
    (out / "summary.md").write_text(summary_markdown(names, scored, pooled))
    for record in records:
        folder = out / record.scenario.name
        write_wav(folder / "input.wav", record.input, record.sample_rate)
        write_wav(folder / "mic.wav", record.mic, record.sample_rate)
        write_wav(folder / "output.wav", record.output, record.sample_rate)
        plot_timeline(record, folder / "timeline.png")
    return out


def summary_markdown(
    names: Sequence[str], scored: Sequence[dict[str, Any]], pooled: dict[str, Any]
) -> str:
    """The summary: a table per scenario, then the aggregate."""
    parts = ["# Harness summary", ""]
    verdicts = check_targets(pooled)
    missed = [k for k, v in verdicts.items() if v is False]
    parts.append(f"{len(names)} scenarios; targets missed overall: {', '.join(missed) or 'none'}.")
    parts.append("")
    parts += ["## Aggregate", "", _table(pooled), ""]
    for name, s in zip(names, scored, strict=True):
        parts += [f"## {name}", "", _table(s), ""]
    return "\n".join(parts)


def _fmt(value: Any, digits: int = 1) -> str:
    if value is None:
        return "n/a"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def _dist_cell(d: dict[str, Any]) -> str:
    if not d["values"]:
        return "n/a (n=0)"
    return (
        f"p50 {_fmt(d['p50'])} / p95 {_fmt(d['p95'])} / max {_fmt(d['max'])} (n={len(d['values'])})"
    )


def _target_text(key: str, realtime: bool) -> str:
    targets = targets_for(realtime)
    if key not in targets:
        return ""
    op, bound = targets[key]
    return f"p95 <= {bound:g}" if op == "p95<=" else f"{bound:g}"


def _table(s: dict[str, Any]) -> str:
    verdicts = check_targets(s)
    rows: list[tuple[str, str, str]] = [
        ("barge-in: onset to silent (ms)", _dist_cell(s["barge_in_stop_ms"]), "barge_in_stop_ms"),
        ("barge-ins never silenced", _fmt(s["barge_in_unstopped"]), "barge_in_unstopped"),
        ("response latency (ms)", _dist_cell(s["response_latency_ms"]), ""),
        ("of it the turn detection's wait (ms)", _dist_cell(s["turn_wait_ms"]), ""),
        ("model compute to first audio (ms)", _dist_cell(s["response_compute_ms"]), ""),
        (
            "of it after the user's turn ended (ms)",
            _dist_cell(s["response_compute_after_turn_ms"]),
            "",
        ),
        (
            "response overhead beyond that wait and compute (ms)"
            if s.get("realtime")
            else "response overhead beyond that wait (ms)",
            _dist_cell(s["response_overhead_ms"]),
            "response_overhead_ms",
        ),
        (
            "pause takeover rate",
            f"{_fmt(s['pause_takeover_rate'], 3)} ({s['pause_takeovers']}/{s['pause_segments']})",
            "pause_takeover_rate",
        ),
        (
            "backchannel takeover rate",
            f"{_fmt(s['backchannel_takeover_rate'], 3)} "
            f"({s['backchannel_takeovers']}/{s['backchannel_segments']})",
            "backchannel_takeover_rate",
        ),
        ("false interruptions", _fmt(s["false_interruptions"]), "false_interruptions"),
        ("lost samples on resume", _fmt(s["lost_samples_on_resume"]), "lost_samples_on_resume"),
        (
            "repeated samples on resume",
            _fmt(s["repeated_samples_on_resume"]),
            "repeated_samples_on_resume",
        ),
        (
            "stale events after interrupt",
            _fmt(s["stale_events_after_interrupt"]),
            "stale_events_after_interrupt",
        ),
        ("interruptions / replies", f"{s['interruptions']} / {s['replies']}", ""),
        ("model compute (s)", _fmt(s["model_compute_s"], 3), ""),
    ]
    if s.get("realtime"):
        rows.append(("test rig round trip, taken out (ms)", _fmt(s["rig_latency_ms"]), ""))
    lines = ["| metric | value | target | status |", "| --- | --- | --- | --- |"]
    for label, value, key in rows:
        verdict = verdicts.get(key) if key else None
        status = "" if not key else {True: "pass", False: "**FAIL**", None: "n/a"}[verdict]
        target = _target_text(key, bool(s.get("realtime")))
        lines.append(f"| {label} | {value} | {target} | {status} |")
    return "\n".join(lines)


def _envelope(x: np.ndarray, sr: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per-column min and max, so a long waveform plots fast and loses no peaks."""
    n = len(x)
    per = max(1, -(-n // _PLOT_COLUMNS))
    cols = -(-n // per) if n else 0
    padded = np.zeros(cols * per, dtype=np.float32)
    padded[:n] = x
    blocks = padded.reshape(cols, per) if cols else padded.reshape(0, 1)
    t = (np.arange(cols) * per) / sr
    # Clamped to include zero, so a column of constant (DC) signal still draws a bar.
    return t, np.minimum(blocks.min(axis=1), 0.0), np.maximum(blocks.max(axis=1), 0.0)


def _state_spans(events: list[dict[str, Any]], end: float) -> list[tuple[float, float, str]]:
    spans: list[tuple[float, float, str]] = []
    start, state = 0.0, "listening"
    for e in events:
        if e["type"] != "state_changed":
            continue
        t = float(e["t"])
        if t > start:
            spans.append((start, t, state))
        start, state = t, str(e["new"])
    if end > start:
        spans.append((start, end, state))
    return spans


def plot_timeline(record: RunRecord, path: str | Path) -> Path:
    """Draw the run: user and agent waveforms, user segments, agent states, markers."""
    sr = record.sample_rate
    end = record.duration_s
    # A bare Figure renders with Agg and leaves pyplot's global state alone.
    fig = Figure(figsize=(14, 6), dpi=100, layout="constrained")
    ax_user, ax_agent, ax_state = fig.subplots(
        3, 1, sharex=True, gridspec_kw={"height_ratios": [3, 3, 1]}
    )
    t, lo, hi = _envelope(np.asarray(record.mic), sr)
    ax_user.fill_between(t, lo, hi, color="0.8", linewidth=0, label="mic")
    t, lo, hi = _envelope(np.asarray(record.input), sr)
    ax_user.fill_between(t, lo, hi, color="black", linewidth=0, label="user")
    for seg in record.segments:
        ax_user.axvspan(
            seg.onset_sample / sr,
            seg.offset_sample / sr,
            color=ROLE_COLORS.get(seg.role, "tab:olive"),
            alpha=0.25,
            label=seg.role,
        )
    ax_user.set_ylabel("user")
    t, lo, hi = _envelope(np.asarray(record.output), sr)
    ax_agent.fill_between(t, lo, hi, color="tab:blue", linewidth=0)
    ax_agent.set_ylabel("agent")
    for s0, s1, state in _state_spans(record.events, end):
        ax_state.broken_barh(
            [(s0, s1 - s0)], (0, 1), facecolors=STATE_COLORS.get(state, "white"), label=state
        )
    ax_state.set_yticks([])
    ax_state.set_ylabel("state")
    ax_state.set_xlabel("seconds")
    for e in record.events:
        if e["type"] in MARKERS:
            color, style = MARKERS[e["type"]]
            for ax in (ax_user, ax_agent, ax_state):
                label = e["type"] if ax is ax_agent else None  # one legend entry is enough
                ax.axvline(float(e["t"]), color=color, linestyle=style, linewidth=1.2, label=label)
    for ax in (ax_user, ax_agent, ax_state):
        ax.set_xlim(0, max(end, 1e-3))
        handles, labels = ax.get_legend_handles_labels()
        unique = dict(zip(labels, handles, strict=True))
        if unique:
            ax.legend(unique.values(), unique.keys(), loc="upper right", fontsize=7, ncol=6)
    fig.suptitle(record.scenario.name)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    return path
