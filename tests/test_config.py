import pytest

from parley.config import load_config, preset_names
from parley.errors import ConfigError


def test_presets_validate():
    assert {"tiny", "base"} <= set(preset_names())
    tiny = load_config("tiny")
    base = load_config("base")
    assert tiny.model.encoder.d_model < base.model.encoder.d_model
    assert base.model.encoder.d_model == 512 and base.model.encoder.layers == 6


def test_bad_value_names_key_and_range():
    with pytest.raises(ConfigError) as err:
        load_config("tiny", {"model": {"encoder": {"layers": 0}}})
    msg = str(err.value)
    assert "model.encoder.layers" in msg and ">= 1" in msg and "<= 64" in msg


def test_bad_choice_lists_allowed():
    with pytest.raises(ConfigError, match=r"model\.features\.n_mels = 81.*one of 80, 128"):
        load_config("tiny", {"model": {"features": {"n_mels": 81}}})


def test_unknown_key_rejected():
    with pytest.raises(ConfigError, match=r"model\.encoder\.depth"):
        load_config("tiny", {"model": {"encoder": {"depth": 3}}})


def test_cross_field_rule():
    with pytest.raises(ConfigError, match="divisible"):
        load_config("tiny", {"model": {"encoder": {"heads": 5}}})


def test_env_overrides_preset():
    cfg = load_config(
        "tiny", environ={"PARLEY_ENGINE__THREADS": "3", "PARLEY_AGENT__FRAME_MS": "30"}
    )
    assert cfg.engine.threads == 3 and cfg.agent.frame_ms == 30


def test_env_bad_value():
    with pytest.raises(ConfigError, match=r"engine\.temperature"):
        load_config("tiny", environ={"PARLEY_ENGINE__TEMPERATURE": "-1"})


def test_unknown_preset_and_missing_file(tmp_path):
    with pytest.raises(ConfigError, match="unknown preset 'huge'"):
        load_config("huge")
    with pytest.raises(ConfigError, match="not found"):
        load_config(tmp_path / "nope.yaml")


def test_yaml_file(tmp_path):
    f = tmp_path / "c.yaml"
    f.write_text("agent: {endpoint_silence_ms: 700}\n")
    assert load_config(f).agent.endpoint_silence_ms == 700
    f.write_text("agent: [unclosed\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(f)
