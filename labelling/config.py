"""What a run's rows depend on: the problems, the models, prompting, sampling, labelling, verification and
the judge. :class:`steplabel.flows.config.RunConfig` adds where and how the run executes (orchestration,
shard size), hashing and YAML loading; labelling code takes this base so it never imports ``flows``.
"""

from __future__ import annotations

from pydantic import Field

from steplabel.checks.code_verifier_config import CodeVerifierConfig
from steplabel.checks.consensus_config import ConsensusConfig
from steplabel.checks.hybrid_config import HybridConfig
from steplabel.checks.judge_config import JudgeConfig
from steplabel.checks.sympy_verifier_config import SympyVerifierConfig
from steplabel.labelers.omegaprm_config import OmegaPRMConfig
from steplabel.labelers.registry import LabelerConfig
from steplabel.rollouts.engines.config_base import EngineConfigBase
from steplabel.rollouts.engines.llama_cpp_config import LlamaCppEngineConfig
from steplabel.rollouts.engines.registry import EngineConfig
from steplabel.rollouts.grading import GradingConfig
from steplabel.rollouts.prompts import PromptConfig
from steplabel.rollouts.sampling_params import SamplingConfig, SamplingParams
from steplabel.rollouts.sources_config import BuiltinSource, SourceConfig
from steplabel.storage.strict import StrictConfig


class VerificationConfig(StrictConfig):
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


class JudgeStageConfig(StrictConfig):
    """LLM-as-judge critique plus the consensus filter (Qwen "Lessons"; GenPRM with ``mode: genprm``).

    Off unless the run config has a ``judge:`` section. ``engine`` null: the completer judges.
    """

    engine: EngineConfig | None = None
    critic: JudgeConfig = Field(default_factory=JudgeConfig)
    consensus: ConsensusConfig = Field(default_factory=ConsensusConfig)


class LabellingConfig(StrictConfig):
    """The run's settings that decide its rows; the field order is the order of the recorded config."""

    name: str = "quickstart"
    seed: int = 0
    source: SourceConfig = Field(default_factory=BuiltinSource)
    policy: EngineConfig = Field(default_factory=LlamaCppEngineConfig)
    completer: EngineConfig | None = Field(None, description="None: the policy also completes rollouts")
    prompt: PromptConfig = Field(default_factory=PromptConfig)
    sampling: SamplingConfig = Field(default_factory=SamplingConfig)
    rollout: SamplingParams = Field(default_factory=SamplingParams)
    labeler: LabelerConfig = Field(default_factory=lambda: OmegaPRMConfig(k=4))
    grading: GradingConfig = Field(default_factory=GradingConfig)
    verification: VerificationConfig = Field(default_factory=VerificationConfig)
    judge: JudgeStageConfig | None = Field(None, description="null: no judge stage")

    @property
    def defers_verification(self) -> bool:
        """Verification can leave the engine's task when it needs no engine and no judge waits for it."""
        return self.judge is None and self.verification.code is None and self.verification.sympy is not None

    @property
    def judge_engine(self) -> EngineConfigBase | None:
        if self.judge is None:
            return None
        return self.judge.engine or self.completer_engine

    @property
    def completer_engine(self) -> EngineConfigBase:
        return self.completer or self.policy
