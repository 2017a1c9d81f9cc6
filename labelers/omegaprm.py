"""OmegaPRM: binary search for the first error, optionally inside the OmegaPRM tree search.

Formulas and defaults: :mod:`steplabel.labelers.omegaprm_config`. One ``label(task)`` call per solution:

* ``binary_search``: search the solution itself. A correct final answer means MC(full solution) > 0, so
  every step is good and no rollouts are spent. Otherwise the full solution is a known MC = 0 state and
  the search keeps ``lo`` (longest prefix known to succeed, the question at first) and ``hi`` (shortest
  prefix known to fail), rolling out k times from the middle prefix until ``hi = lo + 1``: the first
  error is step ``hi - 1`` (0-based). At most ``ceil(log2 M)`` MC estimates for an M-step solution.
* ``tree``: one tree per question, shared by all of its solutions (as in the paper, where the solutions
  are rollouts from the question). The root is estimated once, with ``filter_k`` rollouts (the question
  filter: all right or all wrong drops the question: every solution comes back :class:`Dropped`); each
  wrong solution is then searched as a rollout of the root; wrong-answer rollouts of states with
  ``mc_threshold`` < MC < 1 form the question's candidate pool (a rollout cut off by ``max_tokens`` has
  no answer and never enters it) and the search pops ``argmax Q + U`` until the question's search limit,
  its rollout budget or an empty pool. The limit and the budget bound the whole question: a wrong
  solution whose own search would start after they are spent is :class:`Dropped` too. A state estimated
  for one solution is reused by its siblings. Rollout texts are cut into steps with ``step_format`` (see
  :class:`OmegaPRMConfig`). Every state created by a search is kept, as the child of its longest
  estimated-or-pending prefix in the tree (a new state between a parent and its children adopts the
  children it prefixes), so siblings are always different actions from the same state; states before the
  first error are good, the error state has MC <= ``mc_threshold``.

Differences from public code, on purpose (docs/labelers.md): a selected (state, rollout) leaves the pool
for good (openr PR #98); N(s) of the selected state is incremented; answers are graded by the driver's
grader (no substring test); a prefix already estimated in this tree is reused, not rolled out again.
Rollout length in Q is counted in words of the text, since engines report tokens per request, not per
sample.

Labels per step (for the solution and for every searched path): a step belongs to the edge ending at the
first estimated state that contains it; its MC is that state's MC (the paper's edge label, §3.4). Steps
after the first error are labelled bad with MC 0 and no rollouts (``mc_total`` 0), as the error state's
MC = 0 makes every longer prefix fail. ``mc_correct`` / ``mc_total`` hold the real counts only where a
prefix was estimated (the last step: its own graded final answer, 1 sample), 0 elsewhere.

Cost: ``rollouts_used`` / ``tokens_generated`` of a solution count the rollouts its own queries spent
(the root estimate goes to the solution that issued it), so a question's rows sum to what it cost.

``StepLabels.extra``: ``paths`` (the paths this solution searched: {steps, labels, mc, soft}), ``searches``
(its own), ``states`` (of the tree when it finished), ``root_mc`` (tree mode), ``pairs`` (pairwise mode:
the pairs of the question's tree that appeared since the previous labelled sibling finished; over a
question's rows they cover its tree once). ``Dropped.extra``: ``root_mc``.
"""

from __future__ import annotations

import math
from collections.abc import Generator
from dataclasses import dataclass, field

from steplabel.labelers.base import (
    Dropped,
    LabelerRun,
    RolloutOutcome,
    RolloutQuery,
    SolutionTask,
    StepLabels,
)
from steplabel.labelers.omegaprm_config import OmegaPRMConfig
from steplabel.rollouts.steps import split_steps

Search = Generator[list[RolloutQuery], list[RolloutOutcome], "list[State]"]


@dataclass(eq=False)
class State:
    """A node (q, x_1..t): its statistics N, MC and the rollouts that estimated it."""

    steps: tuple[str, ...]
    parent: State | None = None
    visits: int = 0  # N(s)
    correct: int = 0
    total: int = 0
    estimated: bool = False  # MC known (rolled out, or a graded complete rollout)
    in_flight: bool = False  # a solution's query for it is out: siblings wait instead of asking again
    rollouts: tuple[str, ...] = ()
    flags: tuple[bool, ...] = ()
    children: list[State] = field(default_factory=list)

    @property
    def mc(self) -> float:
        return self.correct / self.total if self.total else 0.0

    def chain(self) -> list[State]:
        """Root -> self."""
        out, node = [], self
        while node is not None:
            out.append(node)
            node = node.parent
        return out[::-1]


@dataclass
class Spent:
    """Rollouts and tokens one solution's own queries cost (a shared tree's counters are the question's)."""

    rollouts: int = 0
    tokens: int = 0


@dataclass(eq=False)
class Candidate:
    state: State
    text: str
    words: int
    order: int  # insertion order: ties go to the earliest candidate


class OmegaTree:
    """The state tree and candidate pool of one search (pure bookkeeping, no I/O)."""

    def __init__(self, config: OmegaPRMConfig) -> None:
        self.config = config
        self.root = State(steps=())
        self.by_steps: dict[tuple[str, ...], State] = {(): self.root}
        self.pool: list[Candidate] = []
        self._order = 0
        self.rollouts = 0  # the question's, for its rollout budget
        self.searches = 0
        self.filtered = False  # the question filter dropped this question
        self.pairs_handed_out: set[tuple[tuple[str, ...], ...]] = set()

    # ---------------------------------------------------------------- statistics

    def record(self, state: State, outcome: RolloutOutcome, *, pool: bool, spent: Spent | None = None) -> None:
        """Add an MC estimate to ``state``: N += 1, counts, and its wrong-answer rollouts to the pool if
        ``mc_threshold`` < MC < 1 (a state at or under the threshold is one the search treats as failed).
        Truncated rollouts have no answer: they are not wrong answers to search. ``spent``: the solution
        whose query this was, charged for it."""
        if spent is not None:
            spent.rollouts += outcome.total
            spent.tokens += outcome.tokens
        state.visits += 1
        state.correct += outcome.correct
        state.total += outcome.total
        state.estimated = True
        state.rollouts += outcome.texts
        state.flags += outcome.correct_flags
        self.rollouts += outcome.total
        if pool and self.config.mc_threshold < state.mc < 1.0:
            cut = outcome.truncated_flags or (False,) * len(outcome.texts)
            for text, ok, truncated in zip(outcome.texts, outcome.correct_flags, cut, strict=True):
                if not ok and not truncated:
                    self.pool.append(Candidate(state, text, len(text.split()), self._order))
                    self._order += 1

    def child(self, steps: tuple[str, ...]) -> State:
        """The state of ``steps``, created under its longest prefix in the tree if new. Children of that
        parent which extend ``steps`` move under the new state, so no state is ever the sibling of its own
        extension (a pair is always two actions from one state)."""
        state = self.by_steps.get(steps)
        if state is not None:
            return state
        parent = self.root
        while True:
            deeper = next((c for c in parent.children if steps[: len(c.steps)] == c.steps), None)
            if deeper is None:
                break
            parent = deeper
        state = State(steps=steps, parent=parent)
        adopted = [c for c in parent.children if c.steps[: len(steps)] == steps]
        parent.children = [c for c in parent.children if c not in adopted] + [state]
        for c in adopted:
            c.parent = state
        state.children = adopted
        self.by_steps[steps] = state
        return state

    def q_value(self, candidate: Candidate) -> float:
        c = self.config
        return c.alpha ** (1.0 - candidate.state.mc) * c.beta ** (candidate.words / c.length_scale)

    def u_value(self, state: State) -> float:
        total_visits = sum(s.visits for s in self.by_steps.values())
        return self.config.c_puct * math.sqrt(total_visits) / (1 + state.visits)

    def score(self, candidate: Candidate) -> float:
        return self.q_value(candidate) + self.u_value(candidate.state)

    def select(self) -> Candidate:
        """Pop argmax Q + U (earliest on ties); the pair never returns to the pool; N(s) += 1."""
        best = max(self.pool, key=lambda cand: (self.score(cand), -cand.order))
        self.pool.remove(best)
        best.state.visits += 1
        return best

    def new_pairs(self) -> list[dict[str, object]]:
        """The tree's pairs not handed to a solution yet: siblings finishing one after another each carry
        the pairs that appeared since, so a sibling that fails later cannot take the others' with it."""
        fresh = []
        for pair in pairs(self):
            key = (tuple(pair["prefix"]), tuple(pair["chosen"]), tuple(pair["rejected"]))  # type: ignore[arg-type]
            if key not in self.pairs_handed_out:
                self.pairs_handed_out.add(key)
                fresh.append(pair)
        return fresh

    # ---------------------------------------------------------------- the binary search

    def binary_search(self, start: State, rollout: tuple[str, ...], *, pool: bool, spent: Spent) -> Search:
        """First error of ``start.steps + rollout``, a complete rollout with a wrong final answer.

        Yields one query per MC estimate; returns the searched path: the states from the root to the last
        good prefix, then the error state (MC <= ``mc_threshold``). At most ``ceil(log2 M)`` estimates for
        an M-step rollout.
        """
        self.searches += 1
        lo, hi = 0, len(rollout)
        good = start
        while hi - lo > 1:
            mid = (lo + hi) // 2
            state = self.child(start.steps + rollout[:mid])
            while not state.estimated:
                if state.in_flight:
                    yield []  # a sibling solution is estimating this prefix
                    continue
                state.in_flight = True
                try:
                    outcomes = yield [RolloutQuery(steps=state.steps, k=self.config.k)]
                finally:  # also when stopped by an engine failure: a sibling may take over
                    state.in_flight = False
                self.record(state, outcomes[0], pool=pool, spent=spent)
            if state.mc > self.config.mc_threshold:
                lo, good = mid, state
            else:
                hi = mid
        error = self.child(start.steps + rollout[:hi])
        if not error.estimated:  # the complete rollout: its own graded (wrong) final answer
            error.correct, error.total, error.estimated = 0, 1, True
        return [*good.chain(), error]


def path_mc(path: list[State], n_steps: int) -> list[State | None]:
    """For steps 0..n_steps-1 of a searched path: the state whose edge contains each step."""
    chain = [s for s in path if s.steps]
    owners: list[State | None] = []
    for t in range(n_steps):
        owners.append(next((s for s in chain if len(s.steps) >= t + 1), None))
    return owners


class OmegaPRMLabeler:
    name = "omegaprm"

    def __init__(self, config: OmegaPRMConfig, *, step_format: str | None = None, chunk_words: int | None = None) -> None:
        self.config = config
        self.shares_problem_state = config.mode == "tree"  # one tree per question
        self.step_format = config.step_format or step_format or "step_pattern"
        self.chunk_words = chunk_words if (config.step_format is None and chunk_words) else config.chunk_words
        # tree mode: problem_id -> its tree, the solutions still working on it, and who estimates the root
        self._trees: dict[str, OmegaTree] = {}
        self._working: dict[str, int] = {}
        self._root_issuer: dict[str, str] = {}

    def split(self, text: str) -> tuple[str, ...]:
        return tuple(split_steps(text, self.step_format, self.chunk_words))

    def label(self, task: SolutionTask) -> LabelerRun:
        if self.config.mode != "tree":
            tree = OmegaTree(self.config)
            labels = yield from self._label(task, tree)
        else:
            pid = task.problem_id
            tree = self._trees.setdefault(pid, OmegaTree(self.config))
            self._working[pid] = self._working.get(pid, 0) + 1
            try:
                labels = yield from self._label(task, tree)
            finally:
                self._working[pid] -= 1
                if self._working[pid] == 0:  # the question is done: free its tree
                    del self._working[pid], self._trees[pid]
        if self.config.label_mode == "pairwise" and isinstance(labels, StepLabels):
            labels.extra["pairs"] = tree.new_pairs()  # a dropped solution leaves them to its siblings
        return labels

    def _estimate_root(self, task: SolutionTask, tree: OmegaTree, spent: Spent) -> LabelerRun:
        """The question filter's root estimate, once per question: siblings wait while one issues it."""
        config = self.config
        pid = task.problem_id
        while not tree.root.estimated:
            if pid in self._root_issuer:
                yield []  # a sibling's root query is in flight
                continue
            self._root_issuer[pid] = task.solution_id
            try:
                outcomes = yield [RolloutQuery(steps=(), k=config.filter_k or config.k)]
            finally:  # also when stopped by an engine failure: a sibling takes over
                del self._root_issuer[pid]
            tree.filtered = config.filter_k > 0 and outcomes[0].correct in (0, outcomes[0].total)
            tree.record(tree.root, outcomes[0], pool=not tree.filtered, spent=spent)

    def _label(self, task: SolutionTask, tree: OmegaTree) -> LabelerRun:
        config = self.config
        tree_mode = config.mode == "tree"
        spent = Spent()
        searches = 0
        if tree_mode:
            yield from self._estimate_root(task, tree, spent)
        tree_extra: dict[str, object] = {"root_mc": tree.root.mc} if tree_mode else {}
        if tree.filtered:
            return Dropped("question_filter_all_right_or_all_wrong", spent.rollouts, spent.tokens, tree_extra)

        paths: list[dict[str, object]] = []
        # The solution: a searched rollout of the root (a correct one is a good leaf, nothing to search).
        if task.final_correct:
            end = tree.child(task.steps)
            if not end.estimated:
                end.correct, end.total, end.estimated = 1, 1, True
            solution_path = [tree.root, end]
        else:
            spent_on = self._budget_spent(tree) if tree_mode else None
            if spent_on is not None:  # the question's limit bounds this solution's own search too
                return Dropped(spent_on, spent.rollouts, spent.tokens, tree_extra)
            solution_path = yield from tree.binary_search(tree.root, task.steps, pool=tree_mode, spent=spent)
            searches += 1
            paths.append(self._path(solution_path))

        if tree_mode:
            while tree.pool and self._budget_spent(tree) is None:
                candidate = tree.select()
                rollout = self.split(candidate.text)
                if not rollout:
                    continue
                path = yield from tree.binary_search(candidate.state, rollout, pool=True, spent=spent)
                searches += 1
                paths.append(self._path(path))

        labels = self._solution_labels(task, tree, solution_path, spent)
        labels.extra = {"paths": paths, "searches": searches, "states": len(tree.by_steps), **tree_extra}
        return labels

    def _budget_spent(self, tree: OmegaTree) -> str | None:
        """Why the question may start no more searches (its search limit, its rollout budget), or None."""
        if tree.searches >= self.config.search_limit:
            return "question_search_limit"
        if self.config.rollout_budget is not None and tree.rollouts >= self.config.rollout_budget:
            return "question_rollout_budget"
        return None

    def _soft(self, mc: float) -> float:
        """Hard mode: the bool label as 0/1 (MC > ``mc_threshold``); soft and pairwise: MC itself."""
        return float(mc > self.config.mc_threshold) if self.config.label_mode == "hard" else mc

    def _path(self, path: list[State]) -> dict[str, object]:
        error = path[-1]
        owners = path_mc(path, len(error.steps))
        mc = [o.mc if o else 0.0 for o in owners]
        return {
            "steps": list(error.steps),
            "labels": [value > self.config.mc_threshold for value in mc],
            "mc": mc,
            "soft": [self._soft(value) for value in mc],
        }

    def _solution_labels(self, task: SolutionTask, tree: OmegaTree, path: list[State], spent: Spent) -> StepLabels:
        n = len(task.steps)
        error_index = -1 if task.final_correct else len(path[-1].steps) - 1
        owners = path_mc(path, n)
        mc_scores, labels, mc_correct, mc_total = [], [], [], []
        for t in range(n):
            measured = tree.by_steps.get(task.steps[: t + 1])
            measured = measured if measured is not None and measured.estimated else None
            if measured is None and t == n - 1:  # the last step: its own graded final answer, one sample
                mc_correct.append(int(task.final_correct))
                mc_total.append(1)
            else:
                mc_correct.append(measured.correct if measured else 0)
                mc_total.append(measured.total if measured else 0)
            if error_index == -1 or t <= error_index:
                value = owners[t].mc if owners[t] else 0.0
            else:
                value = 0.0  # after the first error
            mc_scores.append(value)
            labels.append(error_index == -1 or t < error_index)
        return StepLabels(
            labels=labels,
            mc_scores=mc_scores,
            mc_correct=mc_correct,
            mc_total=mc_total,
            soft_labels=[self._soft(v) for v in mc_scores],
            first_error=error_index,
            rollouts_used=spent.rollouts,
            tokens_generated=spent.tokens,
        )


def pairs(tree: OmegaTree) -> list[dict[str, object]]:
    """Bradley-Terry pairs of sibling actions with different MC: P(chosen > rejected) = (1 + p - q) / 2."""
    out: list[dict[str, object]] = []
    for state in tree.by_steps.values():
        kids = [c for c in state.children if c.estimated]
        for i, a in enumerate(kids):
            for b in kids[i + 1 :]:
                if a.mc == b.mc:
                    continue
                hi, lo = (a, b) if a.mc > b.mc else (b, a)
                out.append({
                    "prefix": list(state.steps),
                    "chosen": list(hi.steps[len(state.steps) :]),
                    "rejected": list(lo.steps[len(state.steps) :]),
                    "mc_chosen": hi.mc,
                    "mc_rejected": lo.mc,
                    "p_chosen": (1 + hi.mc - lo.mc) / 2,
                })
    return out
