"""``steplabel grade``: grade many responses against their references, one verdict per input line."""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterable
from typing import IO

from steplabel.rollouts.grading import Grader


def grade_lines(lines: Iterable[str | bytes], grader: Grader, sink: IO[str], source: str = "<input>") -> dict:
    """Write one JSON verdict per input line, in order; unreadable lines get ``correct: null`` and an error.
    Pass raw bytes lines so that a line that is not UTF-8 is one such error, not the end of the file."""
    totals: Counter[str] = Counter()
    layers: Counter[str] = Counter()
    for number, line in enumerate(lines, start=1):
        verdict: dict = {"line": number}
        try:
            record = json.loads(line)  # bytes: decoded as UTF-8 (UnicodeDecodeError is a ValueError)
            if not isinstance(record, dict):
                raise ValueError("expected a JSON object")
            response, reference = record.get("response"), record.get("reference")
            if not isinstance(response, str) or reference is None or (isinstance(reference, str) and not reference.strip()):
                raise ValueError("needs a string `response` and a non-empty `reference`")
            # inside the try: e.g. a 5,000-digit number exceeds Python's int-conversion limit (ValueError)
            extracted, result = grader.grade_response(response, str(reference))
        except ValueError as error:  # json.JSONDecodeError is a ValueError
            verdict.update(correct=None, extracted=None, layer=None, error=f"{source}:{number}: {error}")
            totals["errors"] += 1
        else:
            verdict.update(
                correct=result.correct,
                extracted=extracted.value if extracted else None,
                rule=extracted.rule if extracted else None,
                layer=result.layer,
            )
            totals["correct" if result.correct else "incorrect"] += 1
            layers[result.layer] += 1
        totals["lines"] += 1
        sink.write(json.dumps(verdict, ensure_ascii=False) + "\n")
    return {"lines": totals["lines"], "correct": totals["correct"], "incorrect": totals["incorrect"],
            "errors": totals["errors"], "layers": dict(layers)}
