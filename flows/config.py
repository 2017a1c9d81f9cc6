"""Run configuration: YAML validated by pydantic, with one-line errors that name the field.

Every model forbids unknown keys, so a typo is an error rather than a silently ignored setting. The
resolved config of each run is recorded with its hash; fields that change speed but not results
(threads, concurrency, timeouts) are left out of the hash so tuning them does not invalidate a resume.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import Field, ValidationError

from steplabel.labelling.config import LabellingConfig
from steplabel.rollouts.engines.registry import ENGINES
from steplabel.storage.strict import StrictConfig


class OrchestrationConfig(StrictConfig):
    """Where the shard tasks (labelling and the CPU-only verification) run, and how many at once.

    ``thread``: Prefect's thread pool in the flow's process, sharing one engine. ``dask``: Dask worker
    processes (prefect-dask), each loading its own engine once: a local cluster of ``dask_workers``
    processes, or the existing cluster at ``dask_address``. ``ray``: the same on Ray (prefect-ray). All of
    it changes speed, not results, so it is left out of the config hash (docs/scale-out.md).
    """

    task_runner: Literal["thread", "dask", "ray"] = "thread"
    dask_workers: int = Field(2, ge=1, description="worker processes of the local Dask cluster (one engine each)")
    dask_address: str | None = Field(
        None, description="scheduler of an existing Dask cluster (tcp://host:8786); null: start a local cluster",
    )
    ray_address: str | None = Field(None, description="an existing Ray cluster (ray://host:10001); null: a local one")
    max_shards_in_flight: int | None = Field(
        None, ge=1, description="shards labelled at once, so the engines never wait between shards; null: 2 per "
        "engine process (2 with threads, 2 x dask_workers on Dask or Ray)",
    )
    engine_concurrency_limit: str | None = Field(
        None, description="a Prefect global concurrency limit each shard's engine work takes a slot of "
        "(create it on the server: `prefect gcl create NAME --limit 1`), so runs sharing a GPU host take turns",
    )
    scheduling: Literal["auto", "wave", "continuous"] = Field(
        "auto", description="how the labelling driver feeds the engine: continuous (each solution's next query as "
        "soon as its own results are back), wave (global waves), auto (continuous on the openai engine, waves on "
        "engines that batch synchronously); labels are the same either way (docs/scheduling.md)",
    )

    @property
    def shards_in_flight(self) -> int:
        """Two shards per engine process: one labelling, one queued behind it, so no engine waits."""
        return self.max_shards_in_flight or 2 * (1 if self.task_runner == "thread" else self.dask_workers)


# ---------------------------------------------------------------- the run


class RunConfig(LabellingConfig):
    """The whole run: what decides its rows (:class:`LabellingConfig`), where it runs and how it is sharded."""

    orchestration: OrchestrationConfig = Field(default_factory=OrchestrationConfig)
    shard_size: int = Field(4, ge=1, description="problems per shard (the unit of work and of resume)")

    def hash(self) -> str:
        return config_hash(self)


def _semantic(value: Any) -> Any:
    """The config without the speed fields of engine configs (each engine config lists its ``speed_fields``;
    ``grading.timeout_s`` changes verdicts: kept)."""
    if isinstance(value, dict):
        engine = ENGINES.get(value.get("kind"))  # type: ignore[arg-type]
        speed = engine[0].speed_fields if engine else frozenset()
        return {k: _semantic(v) for k, v in value.items() if k not in speed}
    if isinstance(value, list):
        return [_semantic(v) for v in value]
    return value


def config_hash(config: RunConfig) -> str:
    data = config.model_dump(mode="json")
    data.pop("orchestration")  # where work runs, not what it computes
    canonical = json.dumps(_semantic(data), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()


class ConfigError(ValueError):
    """A config file that cannot be used; the message names the file and every bad field."""


def _format_validation_error(error: ValidationError, origin: str) -> str:
    lines = []
    for item in error.errors():
        # a key may hold any character; escaped, a "\r" or "\n" in it cannot break the one-line-per-error shape
        where = ".".join(str(part) if str(part).isprintable() else repr(part) for part in item["loc"]) or "<root>"
        lines.append(f"{origin}: {where}: {item['msg']}")
    return "\n".join(lines)


def parse_config(data: Any, origin: str = "<config>") -> RunConfig:
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"{origin}: the top level must be a mapping of settings, got {type(data).__name__}")
    try:
        return RunConfig.model_validate(data)
    except ValidationError as error:
        raise ConfigError(_format_validation_error(error, origin)) from None


class _UniqueKeyLoader(yaml.SafeLoader):
    """SafeLoader that rejects a key given twice in one mapping (PyYAML keeps the last one silently)."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict:
        seen: set = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            if key in seen:
                raise yaml.constructor.ConstructorError(
                    "while constructing a mapping", node.start_mark, f"found duplicate key {key!r}", key_node.start_mark
                )
            seen.add(key)
        return super().construct_mapping(node, deep=deep)


def load_config(path: str | Path | None) -> RunConfig:
    """Load and validate a YAML config; ``None`` gives the embedded quick-start default.

    The embedded default is ``RunConfig()`` itself; ``configs/quickstart.yaml`` spells it out and a test
    keeps the two equal.
    """
    if path is None:
        return RunConfig()
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as error:
        raise ConfigError(f"{path}: cannot read config: {error.strerror}") from None
    except UnicodeDecodeError as error:
        raise ConfigError(f"{path}: not UTF-8 text (byte {error.object[error.start]:#04x} at offset {error.start})") from None
    try:
        data = yaml.load(text, Loader=_UniqueKeyLoader)  # noqa: S506 - a SafeLoader subclass
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark else ""
        raise ConfigError(f"{path}: not valid YAML: {where}{getattr(error, 'problem', None) or ' '.join(str(error).split())}") from None
    return parse_config(data, origin=str(path))
