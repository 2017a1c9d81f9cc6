"""Run configuration: YAML validated by pydantic, with one-line errors that name the field.

Every model forbids unknown keys, so a typo is an error rather than a silently ignored setting. The
resolved config of each run is recorded with its hash; fields that change speed but not results
(threads, concurrency, timeouts) are left out of the hash so tuning them does not invalidate a resume.
"""

from __future__ import annotations

import hashlib
import json
from functools import cache
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from steplabel.checks.code_verifier_config import CodeVerifierConfig
from steplabel.checks.consensus_config import ConsensusConfig
from steplabel.checks.hybrid_config import HybridConfig
from steplabel.checks.judge_config import JudgeConfig
from steplabel.labelers.math_shepherd_config import MathShepherdConfig
from steplabel.labelers.omegaprm_config import OmegaPRMConfig
from steplabel.labelers.rpe_config import RPEConfig
from steplabel.labelers.scan_config import ScanConfig
from steplabel.checks.sympy_verifier_config import SympyVerifierConfig


@cache
def code_version() -> str:
    """The installed steplabel version, recorded on every row and manifest of a run."""
    try:
        return version("steplabel")
    except PackageNotFoundError:  # running from a source tree without an install
        return "0.0.0+local"


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


# ---------------------------------------------------------------- problem sources


class BuiltinSource(Strict):
    """Generated multi-step arithmetic word problems with exact answers (the offline default)."""

    kind: Literal["builtin"] = "builtin"
    num_problems: int = Field(8, ge=1, le=100_000)
    seed: int = 0


class FileSource(Strict):
    """A local JSONL or Parquet file. GSM8K (`####`) and MATH (`answer` / `\\boxed{}`) work as they are."""

    kind: Literal["file"] = "file"
    path: str
    question_field: str = "question"
    answer_field: str = "answer"
    answer_style: Literal["auto", "gsm8k", "boxed", "plain"] = "auto"
    limit: int | None = Field(None, ge=1)


class HubSource(Strict):
    """A Hugging Face dataset by name (needs network and the `datasets` package)."""

    kind: Literal["hf"] = "hf"
    dataset: str
    subset: str | None = None
    split: str = "train"
    question_field: str = "question"
    answer_field: str = "answer"
    answer_style: Literal["auto", "gsm8k", "boxed", "plain"] = "auto"
    limit: int | None = Field(None, ge=1)


SourceConfig = Annotated[BuiltinSource | FileSource | HubSource, Field(discriminator="kind")]

# ---------------------------------------------------------------- engines


class LlamaCppEngineConfig(Strict):
    """llama.cpp on the CPU. ``model_path: null`` uses the embedded Gemma 3 270M base model."""

    kind: Literal["llama_cpp"] = "llama_cpp"
    model_path: str | None = None
    n_ctx: int = Field(2048, ge=256)
    n_threads: int | None = Field(None, ge=1, description="None: every core this process may use but one (at least 1), so a busy neighbour does not collapse llama.cpp's spinning threads")


class OpenAIEngineConfig(Strict):
    """Any OpenAI-compatible /v1/completions server (vLLM serve, llama.cpp server, SGLang)."""

    kind: Literal["openai"] = "openai"
    base_urls: list[str] = Field(min_length=1)
    model: str
    max_concurrency: int = Field(8, ge=1)
    timeout_s: float = Field(120.0, gt=0)
    max_retries: int = Field(3, ge=0)
    api_key_env: str | None = "OPENAI_API_KEY"
    split_n: bool = True


class VLLMEngineConfig(Strict):
    """vLLM offline ``LLM.generate`` in a worker process of its own (see docs/configuration.md).

    vLLM pins fastapi < 0.137 while Prefect 3.8.8 needs >= 0.139, so vLLM lives in its own environment:
    ``python`` is that environment's interpreter (null: this one). One model per process also means GPU
    memory is really released when the run ends.
    """

    kind: Literal["vllm"] = "vllm"
    model: str
    python: str | None = None
    dtype: str = "auto"
    gpu_memory_utilization: float = Field(0.9, gt=0, le=1)
    max_model_len: int | None = None
    tensor_parallel_size: int = Field(1, ge=1)
    enable_prefix_caching: bool = True
    engine_kwargs: dict[str, Any] = Field(default_factory=dict, description="passed on to vllm.LLM(...)")


EngineConfig = Annotated[
    LlamaCppEngineConfig | OpenAIEngineConfig | VLLMEngineConfig, Field(discriminator="kind")
]

# ---------------------------------------------------------------- prompting and sampling

FEWSHOT_STEPS_TEMPLATE = """Question: Sara has 4 apples. She buys 3 more apples and then gives away 2. How many apples does Sara have now?
Step 1: Sara has 4 + 3 = 7 apples.
Step 2: After giving away 2 she has 7 - 2 = 5 apples.
The answer is 5.

Question: Ben buys 3 bags with 5 cards in each bag. He gives away 4 cards. How many cards does Ben have left?
Step 1: Ben has 3 * 5 = 15 cards.
Step 2: After giving away 4 he has 15 - 4 = 11 cards.
The answer is 11.

Question: A shop has 20 pens. It sells 6 pens in the morning and 3 pens in the afternoon. How many pens are left?
Step 1: After the morning the shop has 20 - 6 = 14 pens.
Step 2: After the afternoon it has 14 - 3 = 11 pens.
The answer is 11.

Question: {question}
"""


class PromptConfig(Strict):
    """How solutions are prompted and cut into steps.

    ``template`` must contain ``{question}``; rollouts continue the byte-identical prompt followed by
    the solution's first t steps, so engines with prefix caching reuse the shared part.
    """

    template: str = FEWSHOT_STEPS_TEMPLATE
    step_format: Literal["step_pattern", "blank_line", "token_chunks"] = "step_pattern"
    chunk_words: int = Field(48, ge=4)
    stop: list[str] = Field(default_factory=lambda: ["\n\n", "\nQuestion:"])

    @field_validator("template")
    @classmethod
    def _has_question_slot(cls, template: str) -> str:
        if "{question}" not in template:
            raise ValueError("must contain {question}")
        return template


class SamplingConfig(Strict):
    """Sampling of the policy's solutions, N per problem."""

    num_solutions: int = Field(4, ge=1)
    temperature: float = Field(0.8, ge=0)
    top_p: float = Field(1.0, gt=0, le=1)
    max_tokens: int = Field(160, ge=1)


class RolloutConfig(Strict):
    """Sampling of the completer's continuations from step prefixes."""

    temperature: float = Field(0.8, ge=0)
    top_p: float = Field(1.0, gt=0, le=1)
    max_tokens: int = Field(128, ge=1)


class VerificationConfig(Strict):
    """Tool verification: sympy checks of each step's arithmetic claims (on by default, no LLM needed), and
    optionally a Python check per step written by the completer model and run in the sandbox.

    ``hybrid`` (on by default) makes the exported ``labels`` agree with the tools: a refuted step, and every
    step after it, is bad; the labeler's own labels stay in ``labeler_labels``. ``hybrid: null`` exports the
    labeler's labels as they are (then a refuted step can be exported as good). See docs/labels-and-verification.md.
    """

    sympy: SympyVerifierConfig | None = Field(default_factory=SympyVerifierConfig, description="null: off")
    code: CodeVerifierConfig | None = Field(
        None, description="model-written Python checks (GenPRM style) run in the sandbox, for steps sympy left unknown"
    )
    hybrid: HybridConfig | None = Field(
        default_factory=HybridConfig, description="null: export the labeler's own labels, even where a tool refutes"
    )


class JudgeStageConfig(Strict):
    """LLM-as-judge critique plus the consensus filter (Qwen "Lessons"; GenPRM with ``mode: genprm``).

    Off unless the run config has a ``judge:`` section. ``engine`` null: the completer judges.
    """

    engine: EngineConfig | None = None
    critic: JudgeConfig = Field(default_factory=JudgeConfig)
    consensus: ConsensusConfig = Field(default_factory=ConsensusConfig)


class OrchestrationConfig(Strict):
    """Where the CPU-only finishing stage (sympy verification, hybrid labels) runs.

    ``thread``: Prefect's thread pool, overlapping with the next shard's generation. ``dask``: a local
    Dask cluster of ``dask_workers`` processes (prefect-dask). Either way it changes speed, not results,
    so it is left out of the config hash.
    """

    task_runner: Literal["thread", "dask"] = "thread"
    dask_workers: int = Field(2, ge=1)
    engine_concurrency_limit: str | None = Field(
        None, description="a Prefect global concurrency limit each shard's engine work takes a slot of "
        "(create it on the server: `prefect gcl create NAME --limit 1`), so runs sharing a GPU host take turns",
    )
    scheduling: Literal["auto", "wave", "continuous"] = Field(
        "auto", description="how the labelling driver feeds the engine: continuous (each solution's next query as "
        "soon as its own results are back), wave (global waves), auto (continuous on the openai engine, waves on "
        "engines that batch synchronously); labels are the same either way (docs/scheduling.md)",
    )


class GradingConfig(Strict):
    timeout_s: float = Field(5.0, gt=0)


LabelerConfig = Annotated[
    MathShepherdConfig | OmegaPRMConfig | ScanConfig | RPEConfig, Field(discriminator="name")
]

# ---------------------------------------------------------------- the run


class RunConfig(Strict):
    name: str = "quickstart"
    seed: int = 0
    source: SourceConfig = Field(default_factory=BuiltinSource)
    policy: EngineConfig = Field(default_factory=LlamaCppEngineConfig)
    completer: EngineConfig | None = Field(None, description="None: the policy also completes rollouts")
    prompt: PromptConfig = Field(default_factory=PromptConfig)
    sampling: SamplingConfig = Field(default_factory=SamplingConfig)
    rollout: RolloutConfig = Field(default_factory=RolloutConfig)
    labeler: LabelerConfig = Field(default_factory=lambda: OmegaPRMConfig(k=4))
    grading: GradingConfig = Field(default_factory=GradingConfig)
    verification: VerificationConfig = Field(default_factory=VerificationConfig)
    judge: JudgeStageConfig | None = Field(None, description="null: no judge stage")
    orchestration: OrchestrationConfig = Field(default_factory=OrchestrationConfig)
    shard_size: int = Field(4, ge=1, description="problems per shard (the unit of work and of resume)")

    @property
    def defers_verification(self) -> bool:
        """Verification can leave the engine's task when it needs no engine and no judge waits for it."""
        return self.judge is None and self.verification.code is None and self.verification.sympy is not None

    @property
    def judge_engine(self) -> LlamaCppEngineConfig | OpenAIEngineConfig | VLLMEngineConfig | None:
        if self.judge is None:
            return None
        return self.judge.engine or self.completer_engine

    @property
    def completer_engine(self) -> LlamaCppEngineConfig | OpenAIEngineConfig | VLLMEngineConfig:
        return self.completer or self.policy

    def hash(self) -> str:
        return config_hash(self)


# Fields of engine configs that change speed, not results: excluded from the config hash.
NON_SEMANTIC_FIELDS = frozenset({"n_threads", "max_concurrency", "timeout_s", "max_retries", "gpu_memory_utilization"})


ENGINE_KINDS = frozenset({"llama_cpp", "openai", "vllm"})


def _semantic(value: Any) -> Any:
    """The config without the speed knobs of engine configs (``grading.timeout_s`` changes verdicts: kept)."""
    if isinstance(value, dict):
        is_engine = value.get("kind") in ENGINE_KINDS
        return {k: _semantic(v) for k, v in value.items() if not (is_engine and k in NON_SEMANTIC_FIELDS)}
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
        where = ".".join(str(part) for part in item["loc"]) or "<root>"
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
