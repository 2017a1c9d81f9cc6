"""deploy/: prefect.yaml against Prefect's own model, entrypoints, configs and schedules; the Dockerfile."""

from __future__ import annotations

import importlib
import inspect
import os
from pathlib import Path

import pytest
import yaml

from steplabel.flows.config import parse_config
from steplabel.cli.serve import check_cron

REPO = Path(__file__).resolve().parent.parent
PREFECT_YAML = REPO / "deploy" / "prefect.yaml"


@pytest.fixture(scope="module")
def prefect_yaml() -> dict:
    return yaml.safe_load(PREFECT_YAML.read_text())


def test_prefect_yaml_matches_prefects_model(prefect_yaml):
    from prefect.cli.deploy._models import PrefectYamlModel  # what `prefect deploy` validates with (3.8.8, pinned)

    model = PrefectYamlModel.model_validate(prefect_yaml)
    assert {d.name for d in model.deployments} == {"gsm8k-gpu-nightly", "gsm8k-k8s-vllm-servers", "quickstart-cpu"}
    for deployment in model.deployments:
        for schedule in deployment.schedules or []:
            assert getattr(schedule, "cron", None), schedule


def test_deployments_resolve_and_validate(prefect_yaml, monkeypatch):
    from prefect.flows import load_flow_from_entrypoint
    from prefect.utilities.templating import apply_values

    from steplabel.storage.staging import _check_id

    pools = set()
    for deployment in prefect_yaml["deployments"]:
        entrypoint = deployment["entrypoint"]
        path, func = entrypoint.split(":")
        assert (REPO / path).is_file(), entrypoint
        module = importlib.import_module(path[: -len(".py")].replace("/", "."))
        flow = getattr(module, func)
        assert load_flow_from_entrypoint(str(REPO / path) + ":" + func).name == flow.name == "steplabel-pipeline"
        params = deployment["parameters"]
        signature = inspect.signature(flow.fn)
        required = {n for n, p in signature.parameters.items() if p.default is inspect.Parameter.empty}
        assert required <= set(params) <= set(signature.parameters), (deployment["name"], set(params))
        parse_config(params["config"], origin=f"deploy/prefect.yaml:{deployment['name']}")
        _check_id("run_id", params["run_id"])
        if deployment["work_pool"]["name"] == "local-cpu":  # this machine: the checkout, as `prefect deploy` fills it in
            monkeypatch.setenv("PWD", str(REPO))
            resolved = apply_values(deployment, dict(os.environ), remove_notset=False)
            assert resolved["parameters"]["out"] == f"{REPO}/steplabel-data"  # absolute: a worker's run starts elsewhere
            assert resolved["pull"] == [{"prefect.deployments.steps.set_working_directory": {"directory": str(REPO)}}]
            assert params["config"]["policy"] == {"kind": "llama_cpp", "model_path": None, "n_ctx": 2048}
        else:
            assert "://" in params["out"]  # object-store roots in the examples
        for schedule in deployment.get("schedules", []):
            check_cron(schedule["cron"])
        pools.add(deployment["work_pool"]["name"])
        for step in deployment.get("pull") or prefect_yaml["pull"]:
            (name,) = step
            module_name, _, attr = name.rpartition(".")
            assert callable(getattr(importlib.import_module(module_name), attr)), name
    assert pools == {"gpu-host", "k8s", "local-cpu"}
    k8s = next(d for d in prefect_yaml["deployments"] if d["work_pool"]["name"] == "k8s")
    assert k8s["parameters"]["config"]["policy"]["kind"] == "openai" and len(k8s["parameters"]["config"]["policy"]["base_urls"]) > 1


def test_dockerfile():
    text = (REPO / "deploy" / "Dockerfile").read_text()
    assert "FROM python:3.11-slim" in text
    assert 'CMAKE_ARGS="-DGGML_NATIVE=OFF"' in text and "build-essential" in text and "cmake" in text
    assert "pip install ." in text
    user = [line.split()[1] for line in text.splitlines() if line.startswith("USER ")]
    assert user and not user[-1].startswith(("root", "0"))
    entry = [line for line in text.splitlines() if line.startswith("ENTRYPOINT")]
    assert entry and "steplabel" in entry[-1]
    for package in ("steplabel", "flows", "labelers", "storage", "rollouts"):
        assert f"COPY {package} " in text, package
