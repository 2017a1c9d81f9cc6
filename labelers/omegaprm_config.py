"""Settings of the OmegaPRM labeler (Luo et al., arXiv 2406.06592; docs/labelers.md).

MC estimate of a state s = (q, x_1..t) from k rollouts (Eq. 1):  MC(s) = #correct / k.
Binary search (§3.2): MC(x_1..m) > 0 means the prefix can still succeed (the first error lies after m);
MC(x_1..m) = 0 means the first error is at or before step m.  O(k log M) rollouts instead of O(k M).

Tree search (§3.3), ``mode: tree``:

    Q(s, r) = alpha ** (1 - MC(s)) * beta ** (len(r) / L)           (Eq. 2; len in words, see below)
    U(s)    = c_puct * sqrt(sum_i N(s_i)) / (1 + N(s))               (Eq. 3)
    select  (s, r) = argmax over the pool of Q(s, r) + U(s); pool = wrong-answer rollouts (not cut off by
            max_tokens) of states with mc_threshold < MC(s) < 1 (the paper: 0 < MC < 1); a selected pair
            leaves the pool for good; N(s) += 1 for the selected state and for every state that gets an
            MC estimate.

Paper defaults (§4, App. A): alpha .5, beta .9, L 500, c_puct .125, k 8, 100 searches per question,
question filter with 32 rollouts (drop questions whose rollouts are all right or all wrong).

Label modes (§3.4, Table 2): ``soft`` (default; soft label = MC of the state reached after the step),
``hard`` (MC > 0), ``pairwise`` (soft labels plus Bradley-Terry pairs of sibling actions,
P(a > b) = (1 + MC_a - MC_b) / 2, in ``StepLabels.extra["pairs"]``). The bool ``labels`` are MC > ``mc_threshold``
(0 by default, the paper's rule) in every mode; ``hard`` soft labels follow the same threshold.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from steplabel.storage.strict import StrictConfig


class OmegaPRMConfig(StrictConfig):
    name: Literal["omegaprm"] = "omegaprm"
    mode: Literal["binary_search", "tree"] = Field(
        "binary_search",
        description="binary_search: only the solution's own first error (cheap); tree: the full OmegaPRM search, "
        "one tree per question shared by its solutions, each solution a searched rollout of the root",
    )
    k: int = Field(8, ge=1, description="rollouts per MC estimate (paper: 8)")
    mc_threshold: float = Field(
        0.0, ge=0, lt=1,
        description="a prefix counts as able to succeed when MC > this (paper: 0). Raising it makes the search "
        "robust to wrong prefixes that reach the answer by luck, at the price of weak-policy false negatives",
    )
    label_mode: Literal["soft", "hard", "pairwise"] = Field("soft", description="paper default: soft (MC)")
    alpha: float = Field(0.5, gt=0, le=1, description="Q = alpha^(1-MC) * beta^(len/L)")
    beta: float = Field(0.9, gt=0, le=1)
    length_scale: float = Field(500.0, gt=0, description="L of Eq. 2, in words of the rollout text")
    c_puct: float = Field(0.125, ge=0, description="U = c_puct * sqrt(sum N) / (1 + N)")
    search_limit: int = Field(
        100, ge=1, description="tree mode: searches per question, its wrong solutions' own searches included "
        "(paper: 100); a wrong solution that finds it spent is dropped (question_search_limit)",
    )
    rollout_budget: int | None = Field(
        None, ge=1, description="tree mode: no search of the question starts once its tree has spent this many "
        "rollouts, root estimate included (None: no cap); a wrong solution left out is dropped (question_rollout_budget)"
    )
    filter_k: int = Field(32, ge=0, description="tree mode: root rollouts for the question filter (0: no filter)")
    step_format: Literal["step_pattern", "blank_line", "token_chunks"] | None = Field(
        None,
        description="how rollout texts are cut into steps in tree mode; None: the run's prompt.step_format "
        "(passed by make_labeler), else step_pattern",
    )
    chunk_words: int = Field(48, ge=1, description="words per step when step_format is token_chunks")
