"""The package's shape: modules stay small, imports run one way and never in a cycle, and every package
folder is installed. Layers, top to bottom: cli -> flows -> labelling -> labelers, checks -> rollouts ->
storage (everything may import storage; nothing imports cli; only cli imports flows)."""

from __future__ import annotations

import ast
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
MAX_LINES = 600
# Rank of each top-level folder: a module may import its own rank or lower, never higher.
LAYERS = {"cli": 5, "flows": 4, "labelling": 3, "labelers": 2, "checks": 2, "rollouts": 1, "storage": 0}


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(["steplabel", *parts])


MODULES = {module_name(p): p for folder in LAYERS for p in sorted((ROOT / folder).rglob("*.py"))}


def _type_checking_only(tree: ast.Module) -> set[ast.AST]:
    """Import nodes under ``if TYPE_CHECKING:``: they never run, so they cannot make a cycle."""
    blocks = [n for n in ast.walk(tree) if isinstance(n, ast.If) and ast.unparse(n.test) == "TYPE_CHECKING"]
    return {inner for block in blocks for stmt in block.body for inner in ast.walk(stmt)}


def imports_of(path: Path, *, runtime: bool = False) -> list[tuple[str, list[str]]]:
    """(imported steplabel module, names taken from it) for every import statement, lazy ones included;
    ``runtime``: leave out the imports only a type checker runs."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    skip = _type_checking_only(tree) if runtime else set()
    out = []
    for node in ast.walk(tree):
        if node in skip:
            continue
        if isinstance(node, ast.Import):
            out += [(alias.name, []) for alias in node.names if alias.name.startswith("steplabel.")]
        elif isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("steplabel."):
            names = [alias.name for alias in node.names]
            submodules = [f"{node.module}.{n}" for n in names if f"{node.module}.{n}" in MODULES]
            out += [(m, []) for m in submodules] or [(node.module, names)]
    return out


def layer(module: str) -> str:
    return module.split(".")[1]


def test_no_module_is_over_the_line_limit():
    long = {name: n for name, path in MODULES.items() if (n := len(path.read_text(encoding="utf-8").splitlines())) > MAX_LINES}
    assert not long, long


def test_imports_run_one_way():
    wrong = [
        f"{name} imports {target}"
        for name, path in MODULES.items()
        for target, _ in imports_of(path)
        if LAYERS[layer(target)] > LAYERS[layer(name)]
    ]
    assert not wrong, wrong


def test_every_import_names_a_real_module():
    """Keeps the other checks honest: an import the walk cannot resolve would be silently skipped."""
    unknown = [f"{name}: {target}" for name, path in MODULES.items() for target, _ in imports_of(path)
               if target not in MODULES]
    assert not unknown, unknown


def test_no_import_cycles():
    graph = {name: {t for t, _ in imports_of(path, runtime=True) if t != name} for name, path in MODULES.items()}
    state: dict[str, int] = {}  # 1: on the current path, 2: done

    def visit(node: str, path: list[str]) -> list[str] | None:
        state[node] = 1
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return [*path, node, nxt]
            if nxt not in state and (cycle := visit(nxt, [*path, node])):
                return cycle
        state[node] = 2
        return None

    for start in sorted(graph):
        if start not in state:
            cycle = visit(start, [])
            assert cycle is None, " -> ".join(cycle[cycle.index(cycle[-1]):])


def test_cli_imports_no_private_names():
    private = [f"{name}: {target}.{n}" for name, path in MODULES.items() if layer(name) == "cli"
               for target, names in imports_of(path) for n in names if n.startswith("_")]
    assert not private, private


def test_every_package_folder_is_installed():
    config = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["tool"]["setuptools"]
    folders = {module_name(p) for folder in LAYERS for p in (ROOT / folder).rglob("__init__.py")}
    assert folders <= set(config["packages"]), sorted(folders - set(config["packages"]))
    assert {f"steplabel.{folder}" for folder in LAYERS} <= set(config["package-dir"])


@pytest.mark.parametrize("registry, union", [
    ("steplabel.rollouts.engines.registry:ENGINES", "steplabel.flows.config:RunConfig.policy"),
    ("steplabel.labelers.registry:LABELERS", "steplabel.flows.config:RunConfig.labeler"),
])
def test_run_config_unions_come_from_the_registries(registry, union):
    """Registering an engine or a labeler is enough for the run config to accept it."""
    import importlib
    import typing

    module, name = registry.split(":")
    entries = getattr(importlib.import_module(module), name)
    module, attr = union.split(":")
    model, field = attr.split(".")
    annotation = getattr(importlib.import_module(module), model).model_fields[field].annotation
    members = {a for a in typing.get_args(annotation) if a is not type(None)}
    flat = set()
    for member in members:
        flat |= set(typing.get_args(member)) or {member}
    assert {config for config, _ in entries.values()} == flat


def test_public_api_resolves():
    """Every name ``steplabel`` and ``steplabel.storage`` advertise imports (they are resolved lazily)."""
    import steplabel
    import steplabel.storage

    for module in (steplabel, steplabel.storage):
        for name in module.__all__:
            assert getattr(module, name) is not None, f"{module.__name__}.{name}"
    assert steplabel.ShardStore is steplabel.storage.ShardStore


def test_the_wheel_installs_one_top_level_package(tmp_path):
    """Built as a user would install it: only ``steplabel`` lands in site-packages, and the public API
    imports from the wheel, outside the checkout."""
    import os
    import subprocess
    import sys
    import zipfile

    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w",
                    str(tmp_path), str(ROOT)], check=True, capture_output=True)
    (wheel,) = tmp_path.glob("steplabel-*.whl")
    with zipfile.ZipFile(wheel) as archive:
        tops = {name.split("/")[0] for name in archive.namelist() if not name.split("/")[0].endswith(".dist-info")}
        archive.extractall(tmp_path / "site")
    assert tops == {"steplabel"}
    code = ("import steplabel, steplabel.flows.pipeline; from steplabel.storage import ShardStore; "
            "from steplabel import RunConfig; print(steplabel.flows.pipeline.__file__)")
    out = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True,
                         env={**os.environ, "PYTHONPATH": str(tmp_path / "site")})
    assert out.stdout.strip() == str(tmp_path / "site" / "steplabel" / "flows" / "pipeline.py"), out.stderr
