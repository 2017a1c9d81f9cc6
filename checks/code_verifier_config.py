"""Settings of the GenPRM-style code verifier: a model writes a Python check for one step, the check runs in :mod:`steplabel.checks.sandbox`, and its outcome becomes the step's verdict."""

from __future__ import annotations

from pydantic import Field

from steplabel.storage.strict import StrictConfig


class CodeVerifierConfig(StrictConfig):
    max_tokens: int = Field(768, ge=16, description="generation budget of the model's analysis + check")
    temperature: float = Field(0.0, ge=0, description="0 = greedy: one deterministic check per step")
    top_p: float = Field(1.0, gt=0, le=1)
    seed: int = Field(0, description="base seed; each step's request seed is derived from it")
    stop: tuple[str, ...] = Field(("</verify>",), description="generation stops after the verify block")
    cpu_s: float = Field(2.0, gt=0, description="sandbox CPU seconds per check")
    wall_s: float = Field(5.0, gt=0, description="sandbox wall seconds per check")
    memory_mb: int = Field(512, ge=64, description="sandbox address-space limit (sympy needs ~150 MB)")
    max_output_bytes: int = Field(16_000, ge=256)
    max_processes: int = Field(16, ge=2, description="sandbox process limit (the prelude's supervisor counts)")
    tmpfs_mb: int = Field(16, ge=1, description="size of the sandbox's only writable directory, /tmp")
    allow_weak_sandbox: bool = Field(
        False, description="run checks even where bubblewrap + seccomp are missing (rlimits only: not safe "
                           "for hostile code); by default such a machine refuses code checks with an error")
