"""The commands on ``--engine vllm``: one engine per command, several scenarios on it."""

from __future__ import annotations

import json
import shutil

import pytest

from tests.test_cli import run_cli
from tests.vllm_support import require_vllm

pytestmark = pytest.mark.vllm

SHIPPED = "configs/scenarios"


@pytest.fixture(autouse=True)
def _vllm():
    require_vllm()


def test_demo_on_vllm(tiny_checkpoint, tmp_path):
    events = tmp_path / "events.json"
    res = run_cli(
        "demo", "--engine", "vllm", "--checkpoint", str(tiny_checkpoint),
        "--output", str(tmp_path / "reply.wav"), "--events", str(events),
    )  # fmt: skip
    assert res.returncode == 0, res.stderr[-3000:]
    assert "starting the vLLM engine" in res.stderr
    log = json.loads(events.read_text())
    assert log["reply"]["audio_s"] > 1.0 and log["reply"]["token_ids"][-1] > 0


def test_bench_runs_several_scenarios_on_one_vllm_engine(tiny_checkpoint, tmp_path):
    scenarios = tmp_path / "scenarios"
    (scenarios / "clips").mkdir(parents=True)
    for name in ("plain-turn.yaml", "interrupt-mid-reply.yaml"):
        shutil.copy(f"{SHIPPED}/{name}", scenarios / name)
    shutil.copytree(f"{SHIPPED}/clips", scenarios / "clips", dirs_exist_ok=True)
    out = tmp_path / "out"
    res = run_cli(
        "bench", "--engine", "vllm", "--checkpoint", str(tiny_checkpoint),
        "--scenario", str(scenarios), "--out", str(out),
    )  # fmt: skip
    assert res.returncode == 0, res.stderr[-3000:]
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["aggregate"]["replies"] >= 2 and metrics["aggregate"]["interruptions"] == 1


def test_served_length_is_capped_at_the_lms_positions(tmp_path):
    import json

    from parley.llm.vllm_engine import served_length

    (tmp_path / "config.json").write_text(json.dumps({"max_position_embeddings": 4096}))
    # vLLM refuses a max_model_len past the model's own: the shipped LM has 4096.
    assert served_length(tmp_path, 8192) == 4096
    assert served_length(tmp_path, 2048) == 2048
    assert served_length(tmp_path / "missing", 8192) == 8192


def test_a_server_client_builds_its_schedule_without_importing_vllm():
    # Importing vLLM in a `vllm serve` client cost its first reply ~1.8 s.
    import subprocess
    import sys

    code = (
        "import sys, types\n"
        "from parley.config import ScheduleConfig\n"
        "from parley.llm.prompt_context import PromptEngine\n"
        "from parley.tokenizers.vocab import VocabLayout\n"
        "layout = VocabLayout(speech_offset=512, codebook_size=512, user=1024, assistant=1025,"
        " text_end=1026, eot=1027, pad=1028, vocab_size=1029)\n"
        "args = PromptEngine.schedule_args(types.SimpleNamespace(layout=layout), ScheduleConfig())\n"
        "print(sorted(args), 'vllm' in sys.modules)\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=300
    )
    assert out.stdout.strip() == "['parley_schedule'] False"
