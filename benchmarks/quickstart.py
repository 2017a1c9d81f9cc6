"""Wall time of the quick-start run (`steplabel run` on the embedded default), real model included.

Runs the installed CLI in a subprocess on a fresh dataset directory, as a user would after installing,
then reads the committed summary with `steplabel inspect --json`. Target: under 10 minutes.

    python benchmarks/quickstart.py [--config FILE]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.reporting import show_and_save  # noqa: E402

TARGET_S = 600


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", type=Path, default=None)
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "quickstart.json")
    args = parser.parse_args()
    steplabel = [sys.executable, "-m", "steplabel.cli"]
    with tempfile.TemporaryDirectory() as root:
        data = Path(root) / "data"
        command = [*steplabel, "run", "--out", str(data), *(["--config", str(args.config)] if args.config else [])]
        env = {**os.environ, "PREFECT_HOME": str(Path(root) / "prefect")}  # a fresh Prefect home, as on a new machine
        started = time.monotonic()
        subprocess.run(command, check=True, env=env)
        wall = time.monotonic() - started
        t0 = time.monotonic()
        summary = json.loads(subprocess.run([*steplabel, "inspect", str(data), "--json"], check=True,
                                            capture_output=True, text=True).stdout)
        inspect_s = time.monotonic() - t0
    result = {
        "wall_s": round(wall, 1), "inspect_json_s": round(inspect_s, 2),
        **{k: summary[k] for k in ("solutions", "steps", "positive_steps", "negative_steps", "rejects", "rollouts", "tokens")},
        "tokens_per_s": round(summary["tokens"] / wall, 1),
    }
    verdict = "OK" if wall < TARGET_S else "OVER TARGET"
    show_and_save("quick-start run (embedded default, real model on the CPU)", result,
           f"quick-start wall time: {wall:.0f} s (target < {TARGET_S} s) {verdict}", args.out)


if __name__ == "__main__":
    main()
