"""The user docs stay in step with the code: README size and links, every CLI option and config field
documented, and one vLLM story (its own environment, named by `python:`) across configs and deploy/."""

from __future__ import annotations

import re
import tomllib
import types
import typing
from pathlib import Path

import pytest
import yaml
from pydantic import BaseModel

from steplabel.flows.config import RunConfig, parse_config

REPO = Path(__file__).resolve().parent.parent
DOCS = REPO / "docs"
LINK = re.compile(r"\]\(([^)#\s]+)(?:#[^)]*)?\)")


def links(page: Path) -> set[Path]:
    """Repository files a Markdown page links to (web links left out)."""
    return {(page.parent / target).resolve() for target in LINK.findall(page.read_text()) if "://" not in target}


def test_readme_is_a_short_guide_that_links_every_docs_page():
    readme = REPO / "README.md"
    text = readme.read_text()
    assert len(text.splitlines()) < 200
    assert "make run" in text and "make test" in text and "`.ci/run` runs exactly `make test`" in text
    pages = {page.resolve() for page in DOCS.glob("*.md")}
    assert pages and pages <= links(readme), sorted(p.name for p in pages - links(readme))


@pytest.mark.parametrize("page", [REPO / "README.md", REPO / "deploy" / "README.md", *sorted(DOCS.glob("*.md"))],
                         ids=lambda p: str(p.relative_to(REPO)))
def test_relative_links_resolve(page):
    missing = sorted(str(target.relative_to(REPO)) for target in links(page) if not target.exists())
    assert not missing, f"{page.relative_to(REPO)} links to missing files: {missing}"


def test_cli_page_documents_every_command_and_option():
    import typer.main

    from steplabel.cli.main import app

    text = (DOCS / "cli.md").read_text()
    group = typer.main.get_command(app)
    for name, command in group.commands.items():
        assert f"## `steplabel {name}`" in text, name
        for param in command.params:
            for opt in param.opts:
                if opt.startswith("--") and opt != "--help":
                    assert f"`{opt}" in text or f"{opt} " in text or f"[{opt}" in text, f"{name} {opt}"


def _models(annotation: object) -> list[type[BaseModel]]:
    """The pydantic models inside a field annotation (through Optional, unions and Annotated)."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return [annotation]
    origin = typing.get_origin(annotation)
    if origin is typing.Annotated:
        return _models(typing.get_args(annotation)[0])
    if origin in (typing.Union, types.UnionType, list, tuple, dict):
        return [m for arg in typing.get_args(annotation) for m in _models(arg)]
    return []


def test_configuration_page_documents_every_field():
    text = (DOCS / "configuration.md").read_text()
    seen: set[type[BaseModel]] = set()
    todo = [RunConfig]
    missing = []
    while todo:
        model = todo.pop()
        if model in seen:
            continue
        seen.add(model)
        for name, field in model.model_fields.items():
            if f"`{name}`" not in text and f"{name}:" not in text and f"`{name} " not in text:
                missing.append(f"{model.__name__}.{name}")
            todo += _models(field.annotation)
    assert not missing, missing


def _vllm_policies() -> list[tuple[str, dict]]:
    """Every engine config with kind: vllm in configs/ and deploy/prefect.yaml."""
    found = []
    configs = {str(p.relative_to(REPO)): yaml.safe_load(p.read_text()) for p in (REPO / "configs").glob("*.yaml")}
    for deployment in yaml.safe_load((REPO / "deploy" / "prefect.yaml").read_text())["deployments"]:
        configs[f"deploy/prefect.yaml:{deployment['name']}"] = deployment["parameters"]["config"]
    for origin, data in configs.items():
        config = parse_config(data, origin=origin)
        engines = [config.policy, config.completer, config.judge.engine if config.judge else None]
        found += [(origin, engine) for engine in engines if engine is not None and engine.kind == "vllm"]
    return found


def test_one_vllm_story():
    """vLLM cannot share Prefect's environment: no `vllm` extra, no install of one, and every vllm engine
    in the shipped configs names the interpreter of vLLM's own environment."""
    pyproject = tomllib.loads((REPO / "pyproject.toml").read_text())
    assert "vllm" not in pyproject["project"].get("optional-dependencies", {})
    texts = [REPO / "README.md", REPO / "Makefile", *DOCS.glob("*.md"), *(REPO / "deploy").iterdir(),
             *(REPO / "configs").glob("*.yaml")]
    for path in texts:
        assert not re.search(r"pip install[^\n]*\[vllm\]", path.read_text()), path
    policies = _vllm_policies()
    assert {origin for origin, _ in policies} >= {"configs/production-gsm8k-vllm.yaml", "deploy/prefect.yaml:gsm8k-gpu-nightly"}
    for origin, engine in policies:
        assert engine.python, f"{origin}: a vllm engine without `python:`"


def test_dockerfile_copies_every_subpackage():
    pyproject = tomllib.loads((REPO / "pyproject.toml").read_text())
    folders = set(pyproject["tool"]["setuptools"]["package-dir"].values())
    dockerfile = (REPO / "deploy" / "Dockerfile").read_text()
    missing = sorted(folder for folder in folders if f"COPY {folder} ./{folder}" not in dockerfile)
    assert not missing, missing
