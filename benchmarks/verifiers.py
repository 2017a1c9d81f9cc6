"""Sympy step verifier on BIG-Bench Mistake multistep arithmetic (first-error localisation).

Predicted first error = first ``refuted`` step (-1 if none). Prints acc_err (exact first-error index on
traces with a mistake), acc_cor (traces without a mistake predicted -1), F1 (their harmonic mean,
ProcessBench style), the false-alarm rate on traces without a mistake, and the step-level precision of
``refuted`` against the human labels (steps after the labelled first mistake are not scored).

Human labels are noisy: some traces labelled "no mistake" contain plainly wrong arithmetic. Every
refutation on such a trace is therefore re-checked by an independent evaluator (Python ``ast`` +
``fractions``, no sympy, no shared parser); a refutation whose claim is confirmed false is a label error,
not a verifier false alarm. Both the raw rate (vs labels) and the audited rate are reported, plus the raw
rate on the "no mistake" traces whose final answer matches the target (a label check that needs no
verifier: 18 of the 62 "no mistake" traces end in a wrong answer, so they must contain a mistake).

It also measures precision on prose (GSM8K's reference solutions and right-answer model solutions) and on
competition-math LaTeX (MATH-500's 500 reference solutions, cut into paragraphs as the pipeline's
``blank_line`` splitter does), listing every refuted claim, and recall on a planted-error set made from the
MATH-500 references: one changed computed result or one changed operation per solution, at a seeded site.

    python benchmarks/verifiers.py [--data ../shared/data/big_bench_mistake/multistep_arithmetic.jsonl]
"""

from __future__ import annotations

import argparse
import ast
import json
import random
import re
import sys
import time
from fractions import Fraction
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from steplabel.checks.sympy_verifier import REFUTED, SympyVerifierConfig, verify_solution  # noqa: E402
from steplabel.rollouts.steps import split_steps  # noqa: E402

DEFAULT_DATA = ROOT.parent / "shared" / "data" / "big_bench_mistake" / "multistep_arithmetic.jsonl"


def independent_value(expr: str) -> Fraction | None:
    """Exact value of a + - * / ^ expression with Python's own parser, or None."""
    try:
        tree = ast.parse(expr.replace("^", "**"), mode="eval")
    except SyntaxError:
        return None

    def ev(node: ast.AST) -> Fraction:
        if isinstance(node, ast.Expression):
            return ev(node.body)
        if isinstance(node, ast.Constant) and isinstance(node.value, (int, float)) and not isinstance(node.value, bool):
            return Fraction(str(node.value))
        if isinstance(node, ast.UnaryOp) and isinstance(node.op, (ast.USub, ast.UAdd)):
            v = ev(node.operand)
            return -v if isinstance(node.op, ast.USub) else v
        if isinstance(node, ast.BinOp):
            a, b = ev(node.left), ev(node.right)
            if isinstance(node.op, ast.Add):
                return a + b
            if isinstance(node.op, ast.Sub):
                return a - b
            if isinstance(node.op, ast.Mult):
                return a * b
            if isinstance(node.op, ast.Div):
                return a / b
            if isinstance(node.op, ast.Pow) and b.denominator == 1 and abs(b) <= 64:
                return a ** int(b)
        raise ValueError(ast.dump(node))

    try:
        return ev(tree)
    except (ValueError, ZeroDivisionError, OverflowError):
        return None


def confirmed_false(claim) -> bool:
    """The refuted claim is false by the independent evaluator (so the refutation is right)."""
    if claim.kind not in {"arithmetic"}:
        return False
    a, b = independent_value(claim.lhs), independent_value(claim.rhs)
    return a is not None and b is not None and a != b


def evaluate(rows: list[dict], cfg: SympyVerifierConfig) -> dict:
    n_err = n_cor = hit_err = hit_cor = 0
    raw_fa = audited_fa = 0
    n_consistent = consistent_fa = 0  # "no mistake" traces whose final answer is also right
    tp = fp = 0
    label_errors: list[dict] = []
    for idx, row in enumerate(rows):
        sv = verify_solution(row["steps"], cfg)
        m = row["mistake_index"]
        pred = sv.first_refuted
        if m is None:
            n_cor += 1
            hit_cor += pred == -1
            consistent = row["answer"].strip() == row["target"].strip()
            n_consistent += consistent
            if pred != -1:
                raw_fa += 1
                consistent_fa += consistent
                claim = next(c for c in sv.steps[pred].claims if c.holds is False)
                if confirmed_false(claim):
                    label_errors.append({"index": idx, "step": pred, "evidence": sv.evidence[pred]})
                else:
                    audited_fa += 1
        else:
            n_err += 1
            hit_err += pred == m
        upto = len(row["steps"]) if m is None else m + 1
        for t in range(upto):
            if sv.verdicts[t] == REFUTED:
                if m is not None and t == m:
                    tp += 1
                else:
                    fp += 1
    acc_err = hit_err / n_err if n_err else 0.0
    acc_cor = hit_cor / n_cor if n_cor else 0.0
    f1 = 2 * acc_err * acc_cor / (acc_err + acc_cor) if acc_err + acc_cor else 0.0
    return {
        "traces": len(rows),
        "with_mistake": n_err,
        "without_mistake": n_cor,
        "acc_err": acc_err,
        "acc_cor": acc_cor,
        "f1": f1,
        "false_alarm_rate_raw": raw_fa / n_cor if n_cor else 0.0,
        "false_alarm_rate_audited": audited_fa / n_cor if n_cor else 0.0,
        "without_mistake_right_answer": n_consistent,
        "false_alarm_rate_right_answer": consistent_fa / n_consistent if n_consistent else 0.0,
        "label_errors_found": len(label_errors),
        "label_errors": label_errors,
        "step_precision_refuted_raw": tp / (tp + fp) if tp + fp else 0.0,
        "refuted_steps_tp": tp,
        "refuted_steps_fp": fp,
    }


GSM8K_TEST = ROOT.parent / "shared" / "data" / "gsm8k" / "test.jsonl"


GSM8K_MODEL_SOLUTIONS = ROOT.parent / "shared" / "data" / "gsm8k" / "example_model_solutions.jsonl"


def gsm8k_steps(solution: str) -> list[str]:
    """One line per step, calculator annotations ``<<...>>`` removed."""
    text = re.sub(r"<<[^>]*>>", "", solution)
    return [step for step in text.strip().split("\n") if step.strip()]


def gsm8k_reference_steps(path: Path) -> list[list[str]]:
    """GSM8K's human reference solutions (all correct)."""
    return [gsm8k_steps(json.loads(line)["answer"].split("####")[0]) for line in path.read_text().splitlines()]


def gsm8k_right_answer_model_steps(path: Path) -> list[list[str]]:
    """The GSM8K release's GPT-3 solutions (6B and 175B) whose final answer is right."""
    return [gsm8k_steps(sample["solution"]) for line in path.read_text().splitlines()
            for sample in json.loads(line).values() if isinstance(sample, dict) and sample.get("is_correct")]


def reference_refutations(solutions: list[list[str]], cfg: SympyVerifierConfig) -> dict:
    """Precision on prose: how often a correct human solution gets a step refuted."""
    refuted = [(steps[v.first_refuted], v.evidence[v.first_refuted])
               for steps in solutions if (v := verify_solution(steps, cfg)).first_refuted >= 0]
    return {"solutions": len(solutions), "steps": sum(map(len, solutions)),
            "solutions_with_a_refuted_step": len(refuted), "rate": len(refuted) / max(len(solutions), 1),
            "refuted": refuted}


MATH500_TEST = ROOT.parent / "shared" / "data" / "math500" / "test.jsonl"

# Math spans of a MATH solution: $..$, $$..$$, \[..\], \(..\) and align/equation environments.
_MATH_SPAN = re.compile(
    r"\$\$(.+?)\$\$|\$(.+?)\$|\\\[(.+?)\\\]|\\\((.+?)\\\)|\\begin\{(align|equation|eqnarray|gather)\*?\}(.+?)\\end\{\5\*?\}",
    re.DOTALL,
)
_ASY = re.compile(r"\[asy\].*?\[/asy\]", re.DOTALL)
# A computed result: a whole number right after "=" that is not the start of a longer expression.
_RESULT = re.compile(r"(?<=[=])(\s*)(-?\d+)(?=\s*(?:\$|\\\]|\\\\|\\\)|[,.;:]?\s*$|[,.;](?!\d)|\s+\\text|\s*&|\s*\n))")
# An operation between two numbers: "+", "-", "\cdot", "\times".
_OPERATION = re.compile(r"(?<=\d)(\s*)(\+|-|\\cdot|\\times)(\s*)(?=\d)")
_SWAP = {"+": "-", "-": "+", r"\cdot": "+", r"\times": "+"}


def math500_rows(path: Path = MATH500_TEST) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def math500_steps(solution: str) -> list[str]:
    """A MATH reference cut into steps the way the pipeline cuts paragraphs (``blank_line``)."""
    return split_steps(solution, "blank_line")


def _sites(step: str) -> tuple[list[tuple[int, int, str]], list[tuple[int, int, str]]]:
    """(result sites, operation sites) in the math spans of ``step``: (start, end, replacement)."""
    masked = _ASY.sub(lambda m: " " * len(m.group()), step)
    results, operations = [], []
    for span in _MATH_SPAN.finditer(masked):
        g = next(k for k in (1, 2, 3, 4, 6) if span.group(k) is not None)
        body, off = span.group(g), span.start(g)
        if "=" not in body:
            continue
        for m in _RESULT.finditer(body):
            n = int(m.group(2))
            results.append((off + m.start(2), off + m.end(2), str(n + (1 if n % 3 else 2))))
        last_eq = body.rfind("=")
        for m in _OPERATION.finditer(body):
            if m.start() > last_eq:
                continue  # only the left of a relation: the operation must feed a claimed result
            a = re.search(r"(\d+)$", body[: m.start()]).group(1)
            b = re.match(r"\d+", body[m.end():]).group()
            new = _SWAP[m.group(2)]
            if m.group(2) in {r"\cdot", r"\times"} and (int(a), int(b)) in {(2, 2), (0, 0)}:
                continue
            if m.group(2) in "+-" and int(b) == 0:
                continue
            operations.append((off + m.start(2), off + m.end(2), f" {new} " if len(m.group(2)) > 1 else new))
    return results, operations


def planted_errors(rows: list[dict], seed: int = 0) -> list[dict]:
    """One changed computed result and one changed operation per reference solution (where it has one).

    The reference is correct, so its first error is the planted step; a site is picked with a seeded RNG,
    independently of the verifier.
    """
    rng = random.Random(seed)
    planted = []
    for row in rows:
        steps = math500_steps(row["solution"])
        per_kind: dict[str, list[tuple[int, tuple[int, int, str]]]] = {"result": [], "operation": []}
        for index, step in enumerate(steps):
            results, operations = _sites(step)
            per_kind["result"] += [(index, s) for s in results]
            per_kind["operation"] += [(index, s) for s in operations]
        for kind, sites in per_kind.items():
            if not sites:
                continue
            index, (start, end, new) = sites[rng.randrange(len(sites))]
            changed = list(steps)
            old = steps[index][start:end]
            changed[index] = steps[index][:start] + new + steps[index][end:]
            planted.append({"id": row["unique_id"], "kind": kind, "steps": changed, "original": steps, "label": index,
                            "change": f"{old.strip()} -> {new.strip()}"})
    return planted


def planted_recall(items: list[dict], cfg: SympyVerifierConfig) -> dict:
    """How many planted errors are flagged at the planted step, and where the other first flags land.

    A flag at the planted step counts only when that step of the unchanged reference is not refuted too;
    otherwise (and for a flag before the planted step) it is a false flag on a correct step.
    """
    at = late = false = 0
    by_kind: dict[str, list[int]] = {}
    false_flags = []
    reference: dict[str, list[str]] = {}
    for item in items:
        sv = verify_solution(item["steps"], cfg)
        pred, label = sv.first_refuted, item["label"]
        if item["id"] not in reference:
            reference[item["id"]] = verify_solution(item["original"], cfg).verdicts
        hit = pred == label and reference[item["id"]][label] != REFUTED
        at += hit
        late += pred > label
        if 0 <= pred <= label and not hit:
            false += 1
            false_flags.append({"id": item["id"], "step": pred, "evidence": sv.evidence[pred]})
        by_kind.setdefault(item["kind"], [0, 0])
        by_kind[item["kind"]][0] += 1
        by_kind[item["kind"]][1] += hit
    flags = at + late + false
    return {"planted": len(items), "flagged_at_planted_step": at, "flagged_later": late, "flagged_falsely": false,
            "recall": at / max(len(items), 1), "flags_at_or_after": (at + late) / flags if flags else 1.0,
            "by_kind": {k: {"planted": n, "flagged_at_step": h} for k, (n, h) in by_kind.items()},
            "false_flags": false_flags}


def math500_refutations(rows: list[dict], cfg: SympyVerifierConfig) -> dict:
    """Precision on competition-math LaTeX: every refuted claim of a MATH-500 reference, with its step."""
    refuted = []
    for row in rows:
        steps = math500_steps(row["solution"])
        sv = verify_solution(steps, cfg)
        refuted += [{"id": row["unique_id"], "step": i, "claim": sv.evidence[i], "text": steps[i]}
                    for i, v in enumerate(sv.verdicts) if v == REFUTED]
    solutions = len({r["id"] for r in refuted})
    return {"solutions": len(rows), "steps": sum(len(math500_steps(r["solution"])) for r in rows),
            "solutions_with_a_refuted_step": solutions, "rate": solutions / max(len(rows), 1), "refuted": refuted}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "verifiers.json")
    args = parser.parse_args()
    if not args.data.exists():
        print(f"skipped: {args.data} not found (BIG-Bench Mistake data lives in ../shared/data)")
        return 0
    rows = [json.loads(line) for line in args.data.read_text().splitlines() if line.strip()]
    cfg = SympyVerifierConfig()
    t0 = time.perf_counter()
    res = evaluate(rows, cfg)
    res["seconds"] = time.perf_counter() - t0
    res["data"] = str(args.data)
    res["config"] = cfg.model_dump()
    print(f"BIG-Bench Mistake multistep_arithmetic: {res['traces']} traces "
          f"({res['with_mistake']} with a mistake, {res['without_mistake']} without), {res['seconds']:.1f} s")
    print(f"{'metric':<40}{'value':>10}")
    for key, label in [
        ("acc_err", "acc_err (exact first error)"),
        ("acc_cor", "acc_cor (no-mistake -> -1)"),
        ("f1", "F1"),
        ("false_alarm_rate_raw", "false alarms vs labels (raw)"),
        ("false_alarm_rate_right_answer", "false alarms vs labels, right answer"),
        ("false_alarm_rate_audited", "false alarms, audited (<= 2%)"),
        ("step_precision_refuted_raw", "step precision of refuted (raw)"),
    ]:
        print(f"{label:<40}{100 * res[key]:>9.1f}%")
    print(f"{'label errors (confirmed wrong claims)':<40}{res['label_errors_found']:>10d}")
    print(f"{'refuted steps tp / fp (raw)':<40}{res['refuted_steps_tp']:>5d} /{res['refuted_steps_fp']:>3d}")
    if GSM8K_TEST.exists():
        res["gsm8k_reference"] = ref = reference_refutations(gsm8k_reference_steps(GSM8K_TEST), cfg)
        print(f"GSM8K test reference solutions: {ref['solutions_with_a_refuted_step']} of {ref['solutions']} "
              f"({100 * ref['rate']:.2f}%) get a step refuted, over {ref['steps']} steps")
        for step, evidence in ref["refuted"]:
            print(f"  {evidence}   <- {step!r}")
    if GSM8K_MODEL_SOLUTIONS.exists():
        res["gsm8k_right_answer_model"] = ref = reference_refutations(
            gsm8k_right_answer_model_steps(GSM8K_MODEL_SOLUTIONS), cfg)
        print(f"GSM8K model solutions with a right final answer: {ref['solutions_with_a_refuted_step']} of "
              f"{ref['solutions']} ({100 * ref['rate']:.2f}%) get a step refuted, over {ref['steps']} steps")
        for step, evidence in ref["refuted"]:
            print(f"  {evidence}   <- {step!r}")
    if MATH500_TEST.exists():
        rows500 = math500_rows()
        res["math500_reference"] = ref = math500_refutations(rows500, cfg)
        print(f"MATH-500 reference solutions: {ref['solutions_with_a_refuted_step']} of {ref['solutions']} "
              f"({100 * ref['rate']:.2f}%) get a step refuted, over {ref['steps']} steps")
        for r in ref["refuted"]:
            print(f"  {r['id']} step {r['step']}: {r['claim']}")
        res["math500_planted"] = pl = planted_recall(planted_errors(rows500), cfg)
        print(f"MATH-500 planted errors: {pl['flagged_at_planted_step']} of {pl['planted']} "
              f"({100 * pl['recall']:.1f}%) flagged at the planted step; {pl['flagged_later']} flagged later, "
              f"{pl['flagged_falsely']} flagged on a correct step; {100 * pl['flags_at_or_after']:.1f}% of flags at or after it")
        for kind, counts in pl["by_kind"].items():
            print(f"  {kind}: {counts['flagged_at_step']} of {counts['planted']}")
        for r in pl["false_flags"]:
            print(f"  false flag {r['id']} step {r['step']}: {r['evidence']}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(res, indent=2, default=str) + "\n")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
