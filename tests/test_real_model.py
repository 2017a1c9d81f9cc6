"""The real default engine: Gemma 3 270M on llama.cpp, on the CPU, through the whole pipeline."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from steplabel.cli.main import app
from steplabel.storage.store import ShardStore

pytestmark = [pytest.mark.slow, pytest.mark.flow]


def test_llama_cpp_engine_generates_reproducibly(llama_engine):
    from steplabel.rollouts.prompts import FEWSHOT_STEPS_TEMPLATE
    from steplabel.rollouts.engines.base import GenerationRequest

    prompt = FEWSHOT_STEPS_TEMPLATE.replace("{question}", "Mia has 4 apples and buys 3 more. How many apples does she have?")
    request = GenerationRequest(prompt, n=2, max_tokens=48, temperature=0.8, top_p=1.0, stop=("\n\n", "\nQuestion:"), seed=11)
    first, again = llama_engine.generate([request]), llama_engine.generate([request])
    texts = [c.text for c in first[0].completions]
    assert texts == [c.text for c in again[0].completions]  # per-sample seeds make it reproducible
    assert len(texts) == 2 and all(t.strip() for t in texts)
    assert first[0].completions[0].tokens > 0 and first[0].prompt_tokens > 200
    assert "Step 1:" in texts[0] or "Step 1:" in texts[1]  # the few-shot format is followed


def run_on_the_model(llama_engine, tmp_path, monkeypatch, config: dict) -> tuple:
    """`steplabel run` on 2 built-in problems x 2 solutions with the loaded model; (step_labels, rejects)."""
    from steplabel.flows import resources

    monkeypatch.setattr(resources, "build_engine", lambda engine_config: llama_engine)  # reuse the loaded model
    monkeypatch.setattr(llama_engine, "close", lambda: None)
    config_file = tmp_path / "run.yaml"
    config_file.write_text(json.dumps({
        "source": {"kind": "builtin", "num_problems": 2},
        "sampling": {"num_solutions": 2, "max_tokens": 96},
        **config,
    }))
    result = CliRunner().invoke(app, ["run", "--config", str(config_file), "--out", str(tmp_path / "d")])
    assert result.exit_code == 0, result.output
    store = ShardStore(tmp_path / "d")
    return store.read("step_labels"), store.read("rejects")


def test_cli_run_on_the_real_model(prefect_harness, llama_engine, tmp_path, monkeypatch):
    labels, rejects = run_on_the_model(llama_engine, tmp_path, monkeypatch, {
        "rollout": {"max_tokens": 64},
        "labeler": {"name": "math_shepherd", "k": 2},
        "policy": {"kind": "llama_cpp", "n_ctx": 1024},
    })
    assert labels.height + rejects.height == 4  # every sample is labelled or rejected with a reason
    assert (labels["policy_model"] == "gemma-3-270m-q4_k_m.gguf").all()
    for row in labels.iter_rows(named=True):
        assert len(row["completions"]) == len(row["labels"]) == len(row["mc_scores"])
        assert row["rollouts_used"] == 2 * (len(row["completions"]) - 1)
        assert row["tokens_generated"] > 0


def test_judge_and_code_checks_on_the_real_model(prefect_harness, llama_engine, tmp_path, monkeypatch):
    """With a model too weak to follow the judge and code-check instructions, every solution still ends
    labelled or rejected with the model's raw output kept; no verdict is guessed."""
    labels, rejects = run_on_the_model(llama_engine, tmp_path, monkeypatch, {
        "rollout": {"max_tokens": 48},
        "labeler": {"name": "omegaprm", "k": 2},
        "policy": {"kind": "llama_cpp", "n_ctx": 2048},
        "verification": {"sympy": {}, "code": {"max_tokens": 48}},
        "judge": {"critic": {"max_tokens": 48}},
    })
    judged_out = rejects.filter(stage="judge")
    assert labels.height + rejects.height == 4
    for row in labels.iter_rows(named=True):  # kept: the judge gave an index and it agreed with MC
        assert row["consensus"] is True and row["judge_first_error"] == row["first_error"]
    for row in judged_out.iter_rows(named=True):
        assert row["reason"] in {"consensus_disagree", "judge_unparsable"}, row["reason"]
        assert json.loads(row["payload"])["judge_rationale"].strip()  # what the judge wrote is kept
    checked_rows = [json.loads(r) for r in labels["tool_checks"].to_list() if r]
    checked_rows += [json.loads(p)["tool_checks"] or [] for p in judged_out["payload"]]  # kept with the reject
    checks = [c for row in checked_rows for c in row]
    assert checks, "sympy leaves the model's prose steps unknown, so code checks must have run"
    for check in checks:
        assert check["verdict"] in {"verified", "refuted", "unknown"}
        assert (check["code"] is None) == (check["status"] is None)  # no code: nothing ran, and it says why
        if check["code"] is None:
            assert check["evidence"] == "no python block in the model output"
