"""Progress events from shard tasks to whoever shows them (the CLI's rich bar, Prefect logs).

Flow parameters must be serialisable, so the listener is registered here instead of passed in. The flow
emits the run and shard events itself, so they arrive whatever runner labels the shards; ``wave`` events
come from the labelling task and reach only listeners in its process (the thread runner's).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass


@dataclass(frozen=True)
class ProgressEvent:
    kind: str  # "run_started" | "shard_started" | "wave" | "shard_done" | "shard_skipped"
    shard_id: str = ""
    shards_total: int = 0
    samples: int = 0
    tokens: int = 0
    solutions: int = 0
    active: int = 0


_listeners: list[Callable[[ProgressEvent], None]] = []


def add_listener(listener: Callable[[ProgressEvent], None]) -> None:
    _listeners.append(listener)


def remove_listener(listener: Callable[[ProgressEvent], None]) -> None:
    if listener in _listeners:
        _listeners.remove(listener)


def emit(event: ProgressEvent) -> None:
    for listener in list(_listeners):
        listener(event)
