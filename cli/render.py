"""Terminal rendering of labelled solutions: every step marked good/bad with its MC score.

Colours: a BAD step is red; a GOOD step is green when its MC score is >= 0.5 (or unknown), yellow below
(a "good but shaky" step); the step marked by the judge as its first error, when it differs from the MC
first error, is flagged with ``judge!``. A step the tools verified or refuted says so (``tool:ok`` /
``tool:REFUTED`` with the failing claim below it), a step whose exported label differs from the labeler's
own says ``(labeler: GOOD)`` (the hybrid rule changed it), and each sandboxed code check is listed with its
outcome. Step text is appended as plain text (never parsed as rich markup).
"""

from __future__ import annotations

import json
from typing import Any

import polars as pl
from rich.console import Console
from rich.panel import Panel
from rich.text import Text


def _step_style(good: bool | None, mc: float | None) -> str:
    if good is None:
        return "dim"
    if not good:
        return "bold red"
    return "green" if mc is None or mc >= 0.5 else "yellow"


TOOL_MARKS = {"verified": ("tool:ok", "green"), "refuted": ("tool:REFUTED", "bold red")}


def _at(values: list[Any] | None, index: int) -> Any:
    """``values[index]``, or None when the list is missing or shorter (never an error)."""
    if values is None or index >= len(values):
        return None
    return values[index]


def render_solutions(console: Console, rows: pl.DataFrame) -> None:
    for row in rows.iter_rows(named=True):
        body = Text()
        body.append(f"{row.get('prompt')}\n\n", style="bold")
        steps = row.get("completions") or []
        judge_first = row.get("judge_first_error")
        for index, step in enumerate(steps):
            good = _at(row.get("labels"), index)
            mc = _at(row.get("mc_scores"), index)
            mark = "????" if good is None else ("GOOD" if good else "BAD ")
            score = "  -  " if mc is None else f"{mc:.2f}"
            body.append(f"[{index}] {mark} mc={score}  ", style=_step_style(good, mc))
            if judge_first is not None and judge_first == index and judge_first != row.get("first_error"):
                body.append("judge! ", style="bold magenta")
            own = _at(row.get("labeler_labels"), index)
            if own is not None and good is not None and own != good:
                body.append(f"(labeler: {'GOOD' if own else 'BAD'}) ", style="magenta")
            tool = _at(row.get("tool_verdicts"), index)
            if tool in TOOL_MARKS:
                body.append(f"{TOOL_MARKS[tool][0]} ", style=TOOL_MARKS[tool][1])
            body.append(str(step).replace("\n", " ") + "\n")
            evidence = _at(row.get("tool_evidence"), index)
            if tool == "refuted" and evidence:
                body.append(f"      refuted claim: {evidence}\n", style="red")
        for check in json.loads(row.get("tool_checks") or "[]"):
            body.append(f"code check of step {check['step']}: {check['verdict']} "
                        f"(sandbox {check['status'] or 'not run'}): {check['evidence'] or 'passed'}\n", style="dim")
        verdict = {True: "correct", False: "wrong"}.get(row.get("final_correct"), "ungraded")
        judge = "" if judge_first is None else f"; judge first error: {judge_first}"
        body.append(
            f"\nfinal answer {row.get('final_answer')!r} vs reference {row.get('reference_answer')!r}: {verdict} "
            f"({row.get('grader_layer')}); first error: {row.get('first_error')}{judge}; "
            f"rollouts {row.get('rollouts_used')}, tokens {row.get('tokens_generated')}",
            style="dim",
        )
        title = Text(f"{row.get('solution_id')} ({row.get('labeler')})")
        console.print(Panel(body, title=title, expand=False))
