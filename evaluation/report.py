"""Figures and the markdown report of an ``eval`` run, from its per-turn records."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from pathlib import Path

import numpy as np

__all__ = ["group_metrics", "summarize", "write_report"]

SAYS_TEXT_MIN = 0.9

# (column, heading, what it is): the report's legend.
COLUMNS = (
    ("n", "n", "turns"),
    ("text", "text", "key in the model's own text tokens"),
    ("whisper", "whisper", "key heard in the reply audio by faster-whisper tiny.en"),
    ("sphinx", "sphinx", "key heard by pocketsphinx, grammar and LM agreeing"),
    ("says_text", "audio=text", f"Whisper's transcript matches the model's text (word acc. >= {SAYS_TEXT_MIN})"),
    ("voice_says_text", "voice=text", "the agent voice's own recording of the same reply text matches it in Whisper's ears (word acc. >= 0.9): the ceiling of audio=text with this voice and judge, of the replies the corpus recorded"),
    ("speech_is_units", "speech=units", "replies whose speech tokens are exactly the agent voice's own units for their text (so any miss in the audio is the codec's), of those the corpus recorded"),
    ("refusal", "refusal", "out-of-domain questions refused (Whisper), of n_ood"),
    ("followup", "follow-up", "follow-up turns answered (Whisper), of n_fu"),
    ("speech", "speech", "replies silero-vad hears as speech"),
    ("latency_p50_ms", "lat p50", "first reply audio after the question's end, ms"),
    ("latency_p95_ms", "lat p95", "same, 95th percentile"),
)  # fmt: skip


def _rate(records: list[dict], test: Callable[[dict], bool]) -> float | None:
    return round(float(np.mean([bool(test(r)) for r in records])), 4) if records else None


def group_metrics(records: list[dict]) -> dict[str, float | int | None]:
    """Every figure of the report for one group of turns."""
    ood = [r for r in records if r.get("intent") == "refuse"]
    follow = [r for r in records if r.get("intent") == "followup"]
    lat = [r["first_audio_ms"] for r in records if r.get("first_audio_ms") is not None]
    return {
        "n": len(records),
        "text": _rate(records, lambda r: r["ok_text"]),
        "whisper": _rate(records, lambda r: r["ok_whisper"]),
        "sphinx": _rate(records, lambda r: r["ok_sphinx"]),
        "says_text": _rate(records, lambda r: r["says_text_wacc"] >= SAYS_TEXT_MIN),
        "voice_says_text": _rate(
            [r for r in records if r.get("voice_says_text_wacc") is not None],
            lambda r: r["voice_says_text_wacc"] >= SAYS_TEXT_MIN,
        ),
        "speech_is_units": _rate(
            [r for r in records if r.get("speech_is_units") is not None],
            lambda r: r["speech_is_units"],
        ),
        "refusal": _rate(ood, lambda r: r["ok_whisper"]),
        "n_ood": len(ood),
        "followup": _rate(follow, lambda r: r["ok_whisper"]),
        "n_fu": len(follow),
        "speech": _rate(records, lambda r: r["speech"]),
        "latency_p50_ms": round(float(np.percentile(lat, 50)), 1) if lat else None,
        "latency_p95_ms": round(float(np.percentile(lat, 95)), 1) if lat else None,
    }


def _grouped(records: list[dict], field: str) -> dict[str, dict]:
    groups: dict[str, list[dict]] = {}
    for r in records:
        groups.setdefault(str(r.get(field)), []).append(r)
    return {name: group_metrics(rs) for name, rs in sorted(groups.items())}


def summarize(records: list[dict]) -> dict:
    """Overall figures and the same per condition, per voice and per intent."""
    return {
        "overall": group_metrics(records),
        "by_condition": _grouped(records, "condition"),
        "by_voice": _grouped(records, "voice"),
        "by_intent": _grouped(records, "intent"),
    }


def _cell(key: str, m: dict) -> str:
    v = m.get(key)
    if v is None:
        return "-"
    if key in ("refusal", "followup"):
        return f"{v:.0%} ({m['n_ood' if key == 'refusal' else 'n_fu']})"
    if isinstance(v, float) and not key.endswith("_ms"):
        return f"{v:.0%}"
    return f"{v:.0f}" if key.endswith("_ms") else str(v)


def _table(title: str, rows: Iterable[tuple[str, dict]]) -> list[str]:
    head = [title, *(h for _, h, _ in COLUMNS)]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for name, m in rows:
        lines.append("| " + " | ".join([name, *(_cell(k, m) for k, _, _ in COLUMNS)]) + " |")
    return lines


def write_report(path: Path, meta: dict, summary: dict, records: list[dict]) -> str:
    """Write the markdown report to ``path`` and return it."""
    lines = ["# Parley eval", ""]
    if meta.get("random_weights"):
        lines += [
            "**This checkpoint has random weights**: its replies are noise, so every accuracy "
            "below is expected to be about zero. The run checks the pipeline, not the model.",
            "",
        ]
    lines += [
        f"- checkpoint: `{meta['checkpoint']}` (engine {meta['engine']})",
        f"- corpus: `{meta['corpus']}`, held-out split: {meta['dialogues']} dialogues, "
        f"{meta['turns']} turns",
        f"- wall time: {meta['seconds']} s ({meta['seconds_per_turn']} s per turn, judging included)",
        "",
        "## Overall",
        "",
        *_table("", [("all", summary["overall"])]),
    ]
    for title, key in (
        ("condition", "by_condition"),
        ("voice", "by_voice"),
        ("intent", "by_intent"),
    ):
        lines += ["", f"## By {title}", "", *_table(title, summary[key].items())]
    lines += ["", "Columns:", ""]
    lines += [f"- **{h}**: {what}" for _, h, what in COLUMNS]
    lines += [
        "",
        "## Turns",
        "",
        "Each reply's audio is in `audio/` (listen to it); all fields are in `results.json`.",
        "",
        "| turn | condition | question | expected key | model text | whisper heard | ok (text/whisper/sphinx) |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in records[:200]:
        oks = "/".join("y" if r[k] else "n" for k in ("ok_text", "ok_whisper", "ok_sphinx"))
        cells = [
            f"[{r['id']}_{r['turn']}]({r['audio']})",
            str(r.get("condition")),
            str(r.get("question", "")),
            r["key"],
            r["reply_text"][:80].replace("|", "/").replace("\n", " "),
            r["whisper"][:80],
            oks,
        ]
        lines.append("| " + " | ".join(cells) + " |")
    if len(records) > 200:
        lines.append(f"\n({len(records) - 200} more turns in results.json)")
    text = "\n".join(lines) + "\n"
    Path(path).write_text(text)
    return text
