"""Run the real pipeline flow in a subprocess on a scripted engine (for crash/resume tests).

    python tests/run_pipeline_script.py --config CONFIG.json --out DIR [--sleep 0.002]

The scripted engine solves the built-in problems right on even samples and off by one on odd ones (as in
``tests/test_pipeline_flow.py``) and sleeps ``--sleep`` seconds per sample, so a run lasts long enough to be
killed at random points. With ``--events`` it prints ``EVENT <kind> <shard_id>`` lines (progress events,
waves left out; ``shard_done`` comes after the shard is staged) so a test can kill it at chosen points. Prints the flow's result as one JSON line on stdout. Pass ``PREFECT_API_URL`` of a
running server (the tests pass the session harness's) so that each child does not start its own ephemeral
server; ``PREFECT_HOME`` should point at a temporary directory.

``--crash-at POINT`` makes the child SIGKILL its own process group (itself and its grader worker) at a
named point, so a crash test chooses where the crash lands instead of racing a timer:

* ``staged:N``       after the N-th shard this process stages (marker written);
* ``mid-stage:N``    inside the N-th stage: its table files written, its ``.done`` marker not;
* ``promote:K``      inside the commit, after K staged files were moved into ``shards/``;
* ``manifest-write`` inside the commit, the manifest's temporary file written but not renamed;
* ``manifest``       between the manifest and ``LATEST``;
* ``latest``         after ``LATEST`` was swapped, before the staging area is removed.

It prints ``CRASH <point>`` on stderr just before the kill.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import signal
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # repo root

os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("PREFECT_LOGGING_LEVEL", "WARNING")


def arithmetic_script_factory(num_problems: int, seed: int, sleep_s: float):
    from steplabel.rollouts.builtin_problems import generate_problems

    answers = {p.question: p.answer for p in generate_problems(num_problems, seed=seed)}

    def script(request, index: int) -> str:
        if sleep_s:
            time.sleep(sleep_s)
        question = request.prompt.split("Question:")[-1]
        answer = answers.get(question.split("\n")[0].strip(), 0) + index % 2
        if re.search(r"^Step \d+:", question, flags=re.MULTILINE):
            return f"Step 9: so it is {answer}.\nThe answer is {answer}."
        return f"Step 1: add them up.\nStep 2: that gives {answer}.\nThe answer is {answer}."

    return script


def _die(point: str) -> None:
    sys.stderr.write(f"CRASH {point}\n")
    sys.stderr.flush()
    os.killpg(os.getpgrp(), signal.SIGKILL)


def install_crash_point(point: str) -> None:
    """Wrap the store's own steps so that the process kills itself at ``point`` (see the module doc)."""
    from steplabel.storage.filesystem import LocalFS
    from steplabel.storage.store import ShardStore

    name, _, count = point.partition(":")
    target = int(count or 1)
    seen = {"n": 0}

    def counted() -> bool:
        seen["n"] += 1
        return seen["n"] == target

    def commit_staging(run_id: str, shard_id: str) -> bool:
        return not run_id.endswith("-unverified") and not shard_id.startswith("source-")

    if name in ("staged", "mid-stage"):
        stage, write_atomic = ShardStore.stage, LocalFS.write_atomic
        one_at_a_time, inside = threading.Lock(), threading.local()  # verify tasks stage from other threads

        def staging(self, run_id, shard_id, tables):
            with one_at_a_time:  # no other shard's marker lands between the counted one and the kill
                inside.fresh = commit_staging(run_id, shard_id) and not self.is_staged(run_id, shard_id)
                try:
                    stage(self, run_id, shard_id, tables)
                finally:
                    fresh, inside.fresh = inside.fresh, False
                if fresh and name == "staged" and counted():
                    _die(point)

        def marker_write(self, path, data):
            if getattr(inside, "fresh", False) and path.endswith(".done") and name == "mid-stage" and counted():
                _die(point)
            write_atomic(self, path, data)

        ShardStore.stage, LocalFS.write_atomic = staging, marker_write
    elif name == "promote":
        promote = ShardStore._promote

        def promoting(self, *args):
            promote(self, *args)
            if counted():
                _die(point)

        ShardStore._promote = promoting
    elif name == "manifest-write":
        replace = os.replace

        def renaming(src, dst):
            if "versions" in str(dst) and str(dst).endswith(".json"):
                _die(point)
            replace(src, dst)

        os.replace = renaming
    elif name in ("manifest", "latest"):
        swap = ShardStore._swap_latest

        def swapping(self, version):
            if name == "manifest":
                _die(point)
            swap(self, version)
            _die(point)

        ShardStore._swap_latest = swapping
    else:
        raise SystemExit(f"--crash-at {point!r}: unknown point")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", required=True, help="run config as a JSON (or YAML) file")
    parser.add_argument("--out", required=True, help="dataset root")
    parser.add_argument("--sleep", type=float, default=0.002, help="seconds per generated sample")
    parser.add_argument("--events", action="store_true", help="print 'EVENT <kind> <shard>' lines as the run goes")
    parser.add_argument("--crash-at", help="SIGKILL this process group at a named point (see the module doc)")
    args = parser.parse_args(argv)
    if args.crash_at:
        install_crash_point(args.crash_at)

    from steplabel.flows import resources
    from steplabel.flows.config import load_config
    from steplabel.flows.pipeline import pipeline_flow, run_id_for
    from tests.scripted_engine import ScriptedEngine

    config = load_config(args.config)
    source = config.source
    script = arithmetic_script_factory(getattr(source, "num_problems", 0), getattr(source, "seed", 0), args.sleep)
    engine = ScriptedEngine(script)
    resources.build_engine = lambda engine_config: engine  # what the flow tests monkeypatch
    if args.events:
        from steplabel.flows.progress import add_listener

        def print_event(event) -> None:
            if event.kind != "wave":
                sys.stdout.write(f"EVENT {event.kind} {event.shard_id or '-'}\n")
                sys.stdout.flush()

        add_listener(print_event)
    result = pipeline_flow(config=config.model_dump(mode="json"), out=args.out, run_id=run_id_for(config))
    sys.stdout.write(json.dumps(result) + "\n")
    sys.stdout.flush()
    return 0


if __name__ == "__main__":
    sys.exit(main())
