"""The judge and the code verifier with a real model: the default Gemma 3 270M on llama.cpp, CPU.

This measures what the model-based checks do with the only model this project can run offline, on
BIG-Bench Mistake multistep arithmetic traces (half with a human-marked first mistake, half without):

- judge: how many critiques end in a parsable ``\\boxed{}`` verdict, and acc_err / acc_cor / F1 of the
  parsed first errors (an unparsable critique is recorded as such, never guessed);
- code verifier: how often the model writes a Python block, what the sandbox makes of it (verified /
  refuted / unknown with the reason), and agreement with the sympy verifier on steps both decide.

A 270M base model is not a capable judge; these numbers show the plumbing on a real engine and the floor
a real deployment starts from, not the quality of the method.

    python benchmarks/real_model_checks.py [--traces 8] [--max-tokens 256]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.verifiers import DEFAULT_DATA  # noqa: E402
from steplabel.checks.code_verifier import verify_steps_with_code  # noqa: E402
from steplabel.checks.code_verifier_config import CodeVerifierConfig  # noqa: E402
from steplabel.checks.judge import JudgeItem, JudgeVerdict, judge_solutions  # noqa: E402
from steplabel.checks.judge_config import JudgeConfig  # noqa: E402
from steplabel.checks.sympy_verifier import verify_solution  # noqa: E402
from steplabel.labelling.evaluate import processbench_metrics  # noqa: E402


def balanced_traces(rows: list[dict], n: int) -> list[dict]:
    """The first n/2 traces with a marked mistake and the first n/2 without, in file order."""
    with_mistake = [r for r in rows if r["mistake_index"] is not None][: n - n // 2]
    without = [r for r in rows if r["mistake_index"] is None][: n // 2]
    return with_mistake + without


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--traces", type=int, default=8)
    parser.add_argument("--max-tokens", type=int, default=256)
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "real_model_checks.json")
    args = parser.parse_args()
    if not args.data.exists():
        print(f"skipped: {args.data} not found (BIG-Bench Mistake data lives in ../shared/data)")
        return 0
    from steplabel.rollouts.engines.llama_cpp_engine import LlamaCppEngine

    rows = balanced_traces([json.loads(line) for line in args.data.read_text().splitlines() if line.strip()],
                           args.traces)
    labels = [-1 if r["mistake_index"] is None else r["mistake_index"] for r in rows]
    engine = LlamaCppEngine(n_ctx=2048)
    try:
        started = time.perf_counter()
        items = [JudgeItem(f"t{i}", r["input"], tuple(r["steps"])) for i, r in enumerate(rows)]
        verdicts = judge_solutions(engine, items, JudgeConfig(max_tokens=args.max_tokens))
        judge_s = time.perf_counter() - started
        predictions, parse_kinds = [], Counter()
        for item in items:
            verdict = verdicts[item.solution_id]
            assert isinstance(verdict, JudgeVerdict), verdict  # an engine failure would be a bug here
            predictions.append(verdict.first_error)
            parse_kinds.update(p.status for p in verdict.parses)

        started = time.perf_counter()
        code_cfg = CodeVerifierConfig(max_tokens=args.max_tokens)
        code_verdicts, reasons, agree, both = Counter(), Counter(), 0, 0
        for row in rows:
            sympy = verify_solution(row["steps"]).verdicts
            for step, checked in enumerate(verify_steps_with_code(engine, row["input"], row["steps"], code_cfg)):
                code_verdicts[checked.verdict] += 1
                if checked.verdict == "unknown":
                    reasons[(checked.evidence or "").split(":")[0]] += 1
                if checked.verdict != "unknown" and sympy[step] != "unknown":
                    both += 1
                    agree += checked.verdict == sympy[step]
        code_s = time.perf_counter() - started
    finally:
        engine.close()

    judge = processbench_metrics(labels, predictions)
    result = {
        "model": "gemma-3-270m-q4_k_m.gguf (llama.cpp, CPU)",
        "traces": len(rows),
        "max_tokens": args.max_tokens,
        "judge": {"metrics": judge, "parse_kinds": dict(parse_kinds), "seconds": judge_s,
                  "parsed": sum(p is not None for p in predictions)},
        "code_verifier": {"verdicts": dict(code_verdicts), "unknown_reasons": dict(reasons),
                          "decided_by_both_with_sympy": both, "agree_with_sympy": agree, "seconds": code_s},
    }
    print(f"{result['model']}, {len(rows)} BIG-Bench Mistake traces, max_tokens {args.max_tokens}")
    print(f"judge: {result['judge']['parsed']}/{len(rows)} critiques parsed {dict(parse_kinds)}; "
          f"acc_err {judge['acc_err']:.3f} acc_cor {judge['acc_cor']:.3f} F1 {judge['f1']:.3f} ({judge_s:.0f} s)")
    print(f"code verifier: {dict(code_verdicts)}; unknown because {dict(reasons)}; "
          f"agrees with sympy on {agree}/{both} steps both decide ({code_s:.0f} s)")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
