"""Full-Duplex-Bench v1 figures from word times: the rules, the windows, the snapping."""

import numpy as np

from parley.agent.harness.fdb import (
    Word,
    pool_fdb,
    score_fdb,
    snap_to_sound,
    takes_turn,
    task_windows,
)
from parley.agent.harness.record import UserSegment

SR = 16000


def seg(step: int, role: str, onset_s: float, offset_s: float) -> UserSegment:
    return UserSegment(step, role, int(onset_s * SR), int(offset_s * SR))


def words(*spans: tuple[float, float]) -> list[Word]:
    return [Word(f"w{i}", a, b) for i, (a, b) in enumerate(spans)]


def test_a_turn_is_a_second_of_speech_or_more_than_three_words():
    assert not takes_turn([])
    assert not takes_turn(words((0.0, 0.3)))  # "mm-hm"
    assert not takes_turn(words((0.0, 0.2), (0.2, 0.4), (0.4, 0.9)))  # three words, 0.9 s
    assert takes_turn(words((0.0, 0.2), (0.2, 0.4), (0.4, 0.6), (0.6, 0.8)))  # four words
    assert takes_turn(words((0.0, 0.3), (0.7, 1.0)))  # two words over a second


def test_windows_follow_the_timeline():
    segments = [
        seg(0, "turn", 0.5, 1.5),
        seg(1, "continuation", 2.3, 3.0),  # the same turn after a 0.8 s pause
        seg(2, "interrupt", 6.0, 6.8),
        seg(3, "turn", 9.0, 10.0),
    ]
    # The turn before the interruption is the interruption's (its reply is cut on purpose).
    assert task_windows(segments, SR, run_end_s=14.0) == [
        ("pause_handling", 3.0, 0.5, 3.0),
        ("user_interruption", 6.8, 6.8, 9.0),
        ("smooth_turn_taking", 10.0, 10.0, 14.0),
    ]
    plain = [seg(0, "turn", 0.5, 1.5), seg(1, "turn", 5.0, 6.0)]
    assert [w[0] for w in task_windows(plain, SR, 9.0)] == ["smooth_turn_taking"] * 2
    # An "uh-huh" over the answer neither ends it nor is a place of its own.
    nodding = [seg(0, "turn", 0.5, 1.5), seg(1, "backchannel", 2.3, 2.7)]
    assert task_windows(nodding, SR, 9.0) == [("smooth_turn_taking", 1.5, 1.5, 9.0)]


def test_speaking_into_the_pause_is_a_takeover_and_latency_counts_from_the_turn_end():
    segments = [seg(0, "turn", 0.5, 1.5), seg(1, "continuation", 2.3, 3.0)]
    patient = words((3.2, 3.5), (3.5, 3.9), (3.9, 4.4))  # answers after the whole turn
    scored = score_fdb(segments, patient, SR, run_end_s=8.0)
    assert scored["pause_handling"] == {"n": 1, "taken": 0, "latency_s": []}
    assert scored["smooth_turn_taking"]["taken"] == 1
    assert np.isclose(scored["smooth_turn_taking"]["latency_s"][0], 0.2)
    eager = words((2.0, 2.4), (2.4, 2.8), (2.8, 3.3))  # starts in the pause
    assert score_fdb(segments, eager, SR, run_end_s=8.0)["pause_handling"]["taken"] == 1


def test_silence_takes_nothing_and_pooling_gives_rates():
    segments = [seg(0, "turn", 0.5, 1.5)]
    quiet = score_fdb(segments, [], SR, run_end_s=5.0)
    spoke = score_fdb(segments, words((1.9, 2.5), (2.5, 3.0)), SR, run_end_s=5.0)
    pooled = pool_fdb([quiet, spoke])
    assert pooled["smooth_turn_taking"]["n"] == 2 and pooled["smooth_turn_taking"]["tor"] == 0.5
    assert np.isclose(pooled["smooth_turn_taking"]["latency_mean_s"], 0.4)
    assert pooled["pause_handling"]["tor"] is None  # no pause anywhere: nothing to judge


def test_word_starts_snap_to_where_the_channel_turns_audible():
    out = np.zeros(4 * SR, np.float32)
    out[int(2.0 * SR) : int(2.6 * SR)] = 0.1  # the agent's first word really starts at 2.0 s
    out[int(2.7 * SR) : int(3.2 * SR)] = 0.1
    loose = [Word("eight", 1.7, 2.6), Word("minus", 2.65, 3.2)]
    snapped = snap_to_sound(loose, out, SR)
    assert snapped[0].start == 2.0
    assert snapped[1].start == 2.7  # not pulled back into the word before
    # No sound anywhere in its span: a word said elsewhere ("times" of a cut reply, put
    # by the recognizer into the silence after the cut), left out rather than timed there.
    cut = np.zeros(4 * SR, np.float32)
    cut[int(1.0 * SR) : int(1.5 * SR)] = 0.1  # the reply, cut at 1.5 s
    cut[int(3.0 * SR) : int(3.5 * SR)] = 0.1  # the next one
    stretched = [Word("seven", 1.0, 1.5), Word("times", 1.5, 2.4), Word("hello", 3.0, 3.4)]
    kept = snap_to_sound(stretched, cut, SR)
    assert [(w.text, w.start) for w in kept] == [("seven", 1.0), ("hello", 3.0)]
    assert snap_to_sound([Word("x", 0.5, 0.8)], out, SR) == []


def test_the_shipped_scenario_set_loads():
    from parley.agent.harness.scenario import load_scenarios, shipped_scenarios_dir

    names = [s.name for s in load_scenarios(shipped_scenarios_dir() / "fdb")]
    assert len(names) == 30 and all(n.startswith("fdb-") for n in names)


def test_bench_reports_the_figures_of_the_shipped_model(tmp_path, capsys):
    """Three complete questions through the duplex session in virtual time, the agent's
    channel heard by faster-whisper: the trained model answers each, after the endpoint."""
    import json

    from parley.agent.cli import main
    from parley.agent.harness.scenario import shipped_scenarios_dir

    scenario = shipped_scenarios_dir() / "fdb" / "smooth-turns.yaml"
    argv = ["bench", "--scenario", str(scenario), "--fdb", "--report-only", "--threads", "1"]
    timer, medium = tmp_path / "timer.yaml", tmp_path / "medium.yaml"
    timer.write_text("agent:\n  turn_detection: server_vad\n")
    medium.write_text("agent:\n  turn_detection: semantic_vad\n  eagerness: medium\n")
    latency = {}
    runs = (("timer", [timer]), ("default", []), ("medium", [medium]))
    for name, config in runs:
        out = tmp_path / name
        extra = [a for c in config for a in ("--config", str(c))]
        assert main([*argv, *extra, "--out", str(out)]) == 0
        smooth = json.loads((out / "fdb.json").read_text())["aggregate"]["smooth_turn_taking"]
        assert (smooth["n"], smooth["taken"]) == (3, 3), name
        latency[name] = smooth["latency_s"]
    # The timer answers each 500 ms after the speech and a little more. The default
    # (semantic_vad, eagerness auto) asks the detector from 200 ms into the silence, and a
    # sure yes ends the turn there (at the VAD's stop, 320 ms in, a likely one): never
    # later than the timer, and sooner for at least one of these questions. Medium asks from 200 ms in (one may wait for a
    # second look).
    assert all(0.45 <= v <= 0.7 for v in latency["timer"]), latency
    pairs = zip(latency["default"], latency["timer"], strict=True)
    assert all(d <= t + 0.02 for d, t in pairs), latency
    assert min(latency["default"]) < 0.45, latency
    assert sorted(latency["medium"])[1] < 0.3 and max(latency["medium"]) <= 2.1, latency
    assert "| pause TOR" in (tmp_path / "timer" / "fdb.md").read_text()
    assert "Full-Duplex-Bench v1 figures" in capsys.readouterr().out


def test_bench_fdb_without_the_recognizer_says_what_to_install(monkeypatch, tmp_path, capsys):
    from parley.agent import preflight
    from parley.agent.cli import main

    monkeypatch.setattr(preflight, "_importable", lambda module: module != "faster_whisper")
    assert main(["bench", "--fdb", "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert "--fdb" in err and "faster_whisper" in err and ".[train]" in err
    assert not (tmp_path / "out").exists()  # refused before anything ran
