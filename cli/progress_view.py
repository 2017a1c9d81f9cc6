"""A rich progress bar fed by the pipeline's progress events: shards, rollouts/s, labelled solutions, ETA."""

from __future__ import annotations

import time

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

from steplabel.flows.progress import ProgressEvent, add_listener, remove_listener


class RunProgress:
    def __init__(self, console: Console) -> None:
        self._progress = Progress(
            TextColumn("[bold]shards"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[rollouts]} rollouts ({task.fields[rate]:.1f}/s), {task.fields[solutions]} labelled"),
            TimeElapsedColumn(),
            TextColumn("ETA"),
            TimeRemainingColumn(),
            console=console,
            transient=False,
        )
        self._task = self._progress.add_task("shards", total=None, rollouts=0, rate=0.0, solutions=0)
        self._rollouts = 0
        self._solutions = 0
        self._started = time.monotonic()

    def _on_event(self, event: ProgressEvent) -> None:
        if event.kind == "run_started":
            self._progress.update(self._task, total=event.shards_total)
        elif event.kind == "wave":
            self._rollouts += event.samples
        elif event.kind in ("shard_done", "shard_skipped"):
            self._solutions += event.solutions
            self._progress.advance(self._task)
        rate = self._rollouts / max(time.monotonic() - self._started, 1e-9)
        self._progress.update(self._task, rollouts=self._rollouts, rate=rate, solutions=self._solutions)

    def __enter__(self) -> "RunProgress":
        add_listener(self._on_event)
        self._progress.start()
        return self

    def __exit__(self, *exc: object) -> None:
        remove_listener(self._on_event)
        self._progress.stop()
