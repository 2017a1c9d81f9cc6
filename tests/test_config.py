from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from steplabel.flows.config import ConfigError, RunConfig, load_config, parse_config

ROOT = Path(__file__).resolve().parents[1]


def test_quickstart_file_is_the_embedded_default():
    assert load_config(ROOT / "configs" / "quickstart.yaml") == load_config(None) == RunConfig()


def test_production_example_validates():
    config = load_config(ROOT / "configs" / "production-gsm8k-vllm.yaml")
    assert config.policy.kind == "vllm" and config.source.kind == "hf" and config.labeler.k == 8


def test_unknown_key_is_one_line_naming_the_field(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump({"labeler": {"name": "math_shepherd", "kk": 3}}))
    with pytest.raises(ConfigError) as error:
        load_config(path)
    message = str(error.value)
    assert message.count("\n") == 0
    assert "labeler.math_shepherd.kk" in message and str(path) in message


def test_bad_value_names_the_field():
    with pytest.raises(ConfigError, match=r"sampling\.temperature: Input should be greater than or equal to 0"):
        parse_config({"sampling": {"temperature": -1}})


def test_template_needs_question_slot():
    with pytest.raises(ConfigError, match=r"prompt\.template: Value error, must contain \{question\}"):
        parse_config({"prompt": {"template": "no slot"}})


def test_unknown_source_kind():
    with pytest.raises(ConfigError, match=r"source"):
        parse_config({"source": {"kind": "ftp"}})


def test_bad_yaml_and_missing_file(tmp_path):
    path = tmp_path / "broken.yaml"
    path.write_text("labeler: [unclosed")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(path)
    with pytest.raises(ConfigError, match="cannot read config"):
        load_config(tmp_path / "missing.yaml")


def test_hash_ignores_speed_knobs_but_not_semantics():
    base = RunConfig()
    assert parse_config({"policy": {"kind": "llama_cpp", "n_threads": 7}}).hash() == base.hash()
    assert parse_config({"seed": 1}).hash() != base.hash()
    assert parse_config({"labeler": {"name": "math_shepherd", "k": 5}}).hash() != base.hash()


def test_hybrid_labels_are_on_by_default_and_null_turns_them_off():
    from steplabel.checks.hybrid_config import HybridConfig

    assert RunConfig().verification.hybrid == HybridConfig(bad_after_refuted=True, verified_rescues=False)
    assert load_config(ROOT / "configs" / "quickstart.yaml").verification.hybrid == HybridConfig()
    assert parse_config({"verification": {"hybrid": None}}).verification.hybrid is None
    assert parse_config({"verification": {"hybrid": None}}).hash() != RunConfig().hash()
    # the MC-threshold knobs of the old rule are gone: the labeler's own rule decides; a clear one-line error
    with pytest.raises(ConfigError, match=r"verification\.hybrid\.mc_threshold: Extra inputs are not permitted"):
        parse_config({"verification": {"hybrid": {"mc_threshold": 0.5}}})


def test_a_key_with_a_line_break_stays_one_line_per_error():
    """Found by the fuzz test: a key holding "\\r" split its error line in two."""
    with pytest.raises(ConfigError) as error:
        parse_config({"name": {}, "prompt": {"\r": None}}, origin="x.yaml")
    lines = str(error.value).splitlines()
    assert len(lines) == 2 and all(line.startswith("x.yaml: ") for line in lines)
    assert "prompt.'\\r': Extra inputs are not permitted" in lines[1]
