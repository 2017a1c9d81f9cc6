"""Terminal rendering of labelled solutions: every step marked good/bad with its MC score."""

from __future__ import annotations

import polars as pl
from rich.console import Console
from rich.panel import Panel
from rich.text import Text


def _step_style(good: bool, mc: float | None) -> str:
    if not good:
        return "bold red"
    return "green" if mc is None or mc >= 0.5 else "yellow"


def render_solutions(console: Console, rows: pl.DataFrame) -> None:
    for row in rows.iter_rows(named=True):
        body = Text()
        body.append(f"{row['prompt']}\n\n", style="bold")
        scores = row["mc_scores"] or [None] * len(row["completions"])
        for index, (step, good, mc) in enumerate(zip(row["completions"], row["labels"], scores, strict=True)):
            mark = "GOOD" if good else "BAD "
            score = "  -  " if mc is None else f"{mc:.2f}"
            body.append(f"[{index}] {mark} mc={score}  ", style=_step_style(good, mc))
            body.append(step.replace("\n", " ") + "\n")
        verdict = "correct" if row["final_correct"] else "wrong"
        body.append(
            f"\nfinal answer {row['final_answer']!r} vs reference {row['reference_answer']!r}: {verdict} "
            f"({row['grader_layer']}); first error: {row['first_error']}; "
            f"rollouts {row['rollouts_used']}, tokens {row['tokens_generated']}",
            style="dim",
        )
        console.print(Panel(body, title=f"{row['solution_id']} ({row['labeler']})", expand=False))
