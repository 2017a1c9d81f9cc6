"""Answer-grader development set: Math-Verify alone vs steplabel's grader, per subset and surface form.

The set is built in memory from the gold answers of ``../shared/data/math500/test.jsonl`` and
``../shared/data/gsm8k/test.jsonl`` (never copied into the repo), each written in the surface forms
models use (boxed, "Final Answer: The final answer is $X$.", "The answer is", no marker, equations,
lists in another order, sets, inequalities for intervals, units, dollars, thousands commas,
percentages, a LaTeX fraction without ``$``) as a correct response, plus wrong variants (one digit
changed, or the answer negated).  Subsets: ``gsm8k``, ``math`` (all of MATH-500) and
``olympiad`` (MATH-500 level 5 answers that are not plain integers: the multi-part, interval and
symbolic answers OlympiadBench is made of, plus integer-parameter families written two ways).
``gsm8k_models`` adds real GPT-3 solutions to GSM8K whose correctness the dataset records.

Math-Verify alone is ``verify(parse("$gold$"), parse(response))`` on the whole response (gold first,
default extraction).  The grader is ``Grader.grade_response(response, gold)``.

    python benchmarks/grader_devset.py [--gsm8k-limit 400] [--models-limit 800]
"""

from __future__ import annotations

import argparse
import json
import logging
import random
import re
import sys
import time
from collections import defaultdict
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.reporting import show_and_save  # noqa: E402
from steplabel.rollouts.grading import Grader  # noqa: E402

DATA = ROOT.parent / "shared" / "data"
MATH500 = DATA / "math500" / "test.jsonl"
GSM8K_TEST = DATA / "gsm8k" / "test.jsonl"
GSM8K_MODELS = DATA / "gsm8k" / "example_model_solutions.jsonl"
OUT = ROOT / "benchmarks" / "results" / "grader_devset.json"
SUBSETS = ("gsm8k", "math", "olympiad", "gsm8k_models")
LEAD = "Let me work through this carefully, step by step.\n\n"


@dataclass(frozen=True)
class Case:
    """One response to grade, the gold answer, and whether a careful human would call it right."""

    subset: str
    form: str
    response: str
    gold: str
    correct: bool


def _split_top(s: str) -> list[str]:
    """Top-level comma parts of an answer ("(1,2), 3" -> ["(1,2)", "3"])."""
    parts, depth, cur = [], 0, ""
    for ch in s:
        depth += ch in "([{"
        depth -= ch in ")]}"
        if ch == "," and depth == 0:
            parts.append(cur.strip())
            cur = ""
        else:
            cur += ch
    return [*parts, cur.strip()]


_THOUSANDS = re.compile(r"^(?:\\\$)?\d{1,3}(?:,(?:\\!)?\s*\d{3})+$")


def _parts(gold: str) -> list[str]:
    """The parts of a multi-part answer; "10,\\!080" is one number, not a list."""
    return [gold] if _THOUSANDS.match(gold) else _split_top(gold)


_SIMPLE = re.compile(r"^-?[\w\\{}.^ ]+$")
_INTERVAL = re.compile(r"^(?P<lo>[\[(])\s*(?P<a>[^,]+?)\s*,\s*(?P<b>[^,]+?)\s*(?P<hi>[\])])$")


def _as_inequality(gold: str) -> str | None:
    """``[2, 5)`` -> ``2 \\le x < 5``; None when the answer is not one interval with an infinite or
    bracketed end (a bare ``(2, 3)`` may be a point)."""
    m = _INTERVAL.match(gold.replace("\\left", "").replace("\\right", ""))
    if not m or not ("\\infty" in gold or "[" in gold or "]" in gold):
        return None
    strict = {"(": "<", ")": "<", "[": "\\le", "]": "\\le"}
    lo = "" if "infty" in m["a"] else f"{m['a']} {strict[m['lo']]} "
    hi = "" if "infty" in m["b"] else f" {strict[m['hi']]} {m['b']}"
    if not lo and not hi:
        return None
    return f"{lo}x{hi}".strip()


def _bump_digit(gold: str) -> str | None:
    """The gold answer with its first digit changed: a different value in every form we write."""
    m = re.search(r"\d", gold)
    if not m:
        return None
    return gold[: m.start()] + str((int(m.group()) + 1) % 10) + gold[m.end() :]


def correct_forms(gold: str, numeric: bool) -> Iterator[tuple[str, str]]:
    """(surface form, response) pairs that state the gold answer correctly."""
    yield "boxed", f"{LEAD}So the answer is $\\boxed{{{gold}}}$."
    yield "final_answer", f"{LEAD}Final Answer: The final answer is ${gold}$. I hope it is correct."
    yield "answer_is", f"{LEAD}The answer is ${gold}$."
    yield "no_marker", f"{LEAD}Putting it together we get ${gold}$."
    parts = _parts(gold)
    if len(parts) > 1:
        rev = ", ".join(reversed(parts))
        yield "list_reordered", f"{LEAD}So the answer is $\\boxed{{{rev}}}$."
        yield "list_dollars", f"{LEAD}The solutions are " + ", ".join(f"${p}$" for p in reversed(parts)) + "."
        if all(_SIMPLE.match(p) for p in parts):
            yield "set", f"{LEAD}Hence $\\boxed{{\\{{{rev}\\}}}}$."
            yield "multi_boxed", f"{LEAD}The roots are " + " and ".join(f"$\\boxed{{{p}}}$" for p in parts) + "."
    elif "=" not in gold and "," not in gold and "\\text" not in gold:
        yield "equation", f"{LEAD}Solving gives $\\boxed{{x = {gold}}}$."
        yield "equation_no_marker", f"{LEAD}Solving, we find $x = {gold}$."
    inequality = _as_inequality(gold)
    if inequality:
        yield "inequality", f"{LEAD}So $\\boxed{{{inequality}}}$."
    frac = re.fullmatch(r"\\[dt]?frac\{(\d+)\}\{(\d+)\}", gold)
    if frac:
        yield "fraction_no_dollars", f"{LEAD}The probability is \\frac{{{frac[1]}}}{{{frac[2]}}}."
        yield "slash_fraction", f"{LEAD}The probability is {frac[1]}/{frac[2]}."
    if numeric:
        value = int(gold)
        yield "units", f"{LEAD}So the answer is $\\boxed{{{gold} \\text{{ units}}}}$."
        yield "number_words", f"{LEAD}In total that makes {value:,} items."
        yield "dollars", f"{LEAD}She pays ${value:,} in total.\nThe answer is ${value:,}."


def wrong_forms(gold: str, numeric: bool) -> Iterator[tuple[str, str]]:
    """(surface form, response) pairs whose answer is not the gold one."""
    bumped = _bump_digit(gold)
    if bumped is not None:
        yield "wrong_boxed", f"{LEAD}So the answer is $\\boxed{{{bumped}}}$."
        yield "wrong_final_answer", f"{LEAD}Final Answer: The final answer is ${bumped}$. I hope it is correct."
        yield "wrong_no_marker", f"{LEAD}Putting it together we get ${bumped}$."
    parts = _parts(gold)
    if len(parts) > 1:
        yield "wrong_list_missing", f"{LEAD}So the answer is $\\boxed{{{', '.join(parts[1:])}}}$."
    if numeric:
        value = int(gold)
        yield "wrong_substring", f"{LEAD}The answer is {value * 10 + 1:,}."  # "1" vs "21" trap, reversed
        yield "wrong_dollars", f"{LEAD}She pays ${value + 1:,} in total."
    elif bumped is None and "\\text" not in gold:
        yield "wrong_negated", f"{LEAD}So the answer is $\\boxed{{-({gold})}}$."


FAMILIES = [  # (gold, correct response answer, wrong response answer), olympiad-style trigonometric answers
    ("x = \\frac{\\pi}{2} + k\\pi", "\\frac{\\pi}{2}+n\\pi, n \\in \\mathbb{Z}", "\\frac{\\pi}{4}+n\\pi, n \\in \\mathbb{Z}"),
    ("k\\pi", "x = m\\pi", "2m\\pi"),
    ("\\frac{\\pi}{6}+2k\\pi, \\frac{5\\pi}{6}+2k\\pi", "\\frac{5\\pi}{6}+2n\\pi, \\frac{\\pi}{6}+2n\\pi",
     "\\frac{\\pi}{6}+2n\\pi"),
    ("-\\frac{\\pi}{4}+k\\pi", "\\frac{3\\pi}{4}+k\\pi", "\\frac{\\pi}{4}+k\\pi"),
    ("f(x)=2x, g(x)=3", "(f(x), g(x)) = (2x, 3)", "(f(x), g(x)) = (2x, 4)"),
    ("x=1, y=2", "(x, y) = (1, 2)", "(x, y) = (2, 1)"),
]


def build(gsm8k_limit: int, models_limit: int, seed: int = 0) -> list[Case]:
    """The whole dev set, deterministic for a seed."""
    rng = random.Random(seed)
    cases: list[Case] = []
    math_rows = [json.loads(line) for line in MATH500.read_text().splitlines()]
    for row in math_rows:
        gold = row["answer"].strip()
        subsets = ["math"]
        if row["level"] == 5 and not gold.lstrip("-").isdigit():
            subsets.append("olympiad")
        numeric = gold.isdigit()
        for subset in subsets:
            cases += [Case(subset, f, r, gold, True) for f, r in correct_forms(gold, numeric)]
            cases += [Case(subset, f, r, gold, False) for f, r in wrong_forms(gold, numeric)]
    for gold, right, wrong in FAMILIES:
        cases.append(Case("olympiad", "family_or_system", f"{LEAD}Hence $\\boxed{{{right}}}$.", gold, True))
        cases.append(Case("olympiad", "wrong_family_or_system", f"{LEAD}Hence $\\boxed{{{wrong}}}$.", gold, False))
    gsm_rows = [json.loads(line) for line in GSM8K_TEST.read_text().splitlines()]
    for row in rng.sample(gsm_rows, min(gsm8k_limit, len(gsm_rows))):
        gold = row["answer"].rsplit("####", 1)[1].strip().replace(",", "")
        numeric = gold.isdigit()
        cases += [Case("gsm8k", f, r, gold, True) for f, r in correct_forms(gold, numeric)]
        cases += [Case("gsm8k", f, r, gold, False) for f, r in wrong_forms(gold, numeric)]
        if numeric and re.search(r"percent|%", row["question"]):
            cases.append(Case("gsm8k", "percent", f"{LEAD}The answer is {gold}%.", gold, True))
    model_rows = [json.loads(line) for line in GSM8K_MODELS.read_text().splitlines()]
    model_cases = []
    for row in model_rows:
        gold = row["ground_truth"].rsplit("A:", 1)[1].strip()
        for key, value in row.items():
            if isinstance(value, dict):
                model_cases.append(Case("gsm8k_models", key, value["solution"], gold, bool(value["is_correct"])))
    cases += rng.sample(model_cases, min(models_limit, len(model_cases)))
    return cases


def math_verify_alone(response: str, gold: str) -> bool:
    """Math-Verify as its README uses it: gold parsed first, default extraction of the whole response."""
    from math_verify import parse, verify

    try:
        return bool(verify(parse(f"${gold}$"), parse(response)))
    except Exception:  # noqa: BLE001 - a crash is a "no", as in any reward loop
        return False


def agreement(hits: list[bool]) -> float:
    return round(100 * sum(hits) / len(hits), 2) if hits else float("nan")


def run(cases: list[Case], grader: Grader) -> dict:
    """Grade every case both ways; agreement per subset and per surface form, plus the grader's misses."""
    by_subset: dict[str, dict[str, list[bool]]] = defaultdict(lambda: {"mv": [], "grader": []})
    by_form: dict[str, dict[str, list[bool]]] = defaultdict(lambda: {"mv": [], "grader": []})
    layers: dict[str, int] = defaultdict(int)
    misses, mv_misses = [], []
    for case in cases:
        mv_ok = math_verify_alone(case.response, case.gold) == case.correct
        extracted, verdict = grader.grade_response(case.response, case.gold)
        ok = verdict.correct == case.correct
        layers[verdict.layer] += 1
        for table in (by_subset[case.subset], by_subset["all (synthetic)" if case.subset != "gsm8k_models" else "_"],
                      by_form[case.form if case.subset != "gsm8k_models" else "gsm8k_model_solution"]):
            table["mv"].append(mv_ok)
            table["grader"].append(ok)
        row = {"subset": case.subset, "form": case.form, "gold": case.gold, "expected": case.correct,
               "extracted": extracted.value if extracted else None, "layer": verdict.layer}
        if not ok:
            misses.append(row)
        if not mv_ok:
            mv_misses.append(row | {"response_tail": case.response[-80:]})
    by_subset.pop("_", None)

    def table(groups: dict) -> dict:
        return {k: {"n": len(v["mv"]), "math_verify": agreement(v["mv"]), "grader": agreement(v["grader"])}
                for k, v in sorted(groups.items())}

    return {"subsets": table(by_subset), "forms": table(by_form), "layers": dict(layers),
            "grader_misses": misses[:200], "math_verify_misses_sample": mv_misses[:60]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--gsm8k-limit", type=int, default=400, help="GSM8K test problems sampled")
    parser.add_argument("--models-limit", type=int, default=800, help="real GSM8K model solutions sampled")
    args = parser.parse_args()
    if not MATH500.exists() or not GSM8K_TEST.exists():
        raise SystemExit(f"error: dev-set data not found under {DATA}")
    logging.getLogger("math_verify").setLevel(logging.ERROR)
    cases = build(args.gsm8k_limit, args.models_limit)
    start = time.perf_counter()
    with Grader() as grader:
        result = run(cases, grader)
    result["cases"] = len(cases)
    result["wall_s"] = round(time.perf_counter() - start, 1)
    flat = {f"{name} (n={v['n']})": f"Math-Verify {v['math_verify']}% | grader {v['grader']}%"
            for name, v in result["subsets"].items()}
    flat |= {f"form {name} (n={v['n']})": f"MV {v['math_verify']}% | grader {v['grader']}%"
             for name, v in result["forms"].items()}
    flat["grader misses"] = len(result["grader_misses"])
    synthetic = result["subsets"]["all (synthetic)"]["grader"]
    verdict = "PASS" if synthetic >= 98 and all(result["subsets"][s]["grader"] >= 97 for s in SUBSETS) else "FAIL"
    show_and_save("answer grader dev set: agreement with the expected verdict", flat,
                  f"{verdict}: >= 98% overall and >= 97% per subset", OUT)
    OUT.write_text(json.dumps({"table": flat} | result, indent=2, ensure_ascii=False) + "\n")  # + the misses


if __name__ == "__main__":
    main()
