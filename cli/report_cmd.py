"""``steplabel report DIR --out report.html``: write one self-contained HTML report of a version.

Registered in :mod:`steplabel.cli.main` as ``app.command("report")(report_command)``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.console import Console

from steplabel.cli.common import fail, first_line, open_store

console = Console()


def report_command(
    directory: Annotated[str, typer.Argument(help="dataset directory (or s3://... URL) written by `steplabel run`")],
    out: Annotated[Path, typer.Option("--out", "-o", help="HTML file to write")] = Path("report.html"),
    version: Annotated[Optional[str], typer.Option("--version", "-v", help="e.g. v3; default: latest")] = None,
    samples: Annotated[int, typer.Option(
        "--samples", min=0, help="solutions in the sample browser: a seeded sample spread over problems"
    )] = 50,
    seed: Annotated[int, typer.Option("--seed", help="seed of the sample")] = 0,
) -> None:
    """Write one self-contained HTML file (inline SVG plots, sample browser; no network needed)."""
    from steplabel.storage.html_report import write_report
    from steplabel.storage.store import StoreError

    store = open_store(directory, committed=False)
    if out.exists() and out.is_dir():
        fail(f"{out}: is a directory (expected an .html file path)")
    try:
        path = write_report(store, version, out, samples=samples, seed=seed)
    except StoreError as error:
        fail(first_line(error))
    except OSError as error:
        fail(f"cannot write {out}: {first_line(error)}")
    console.print(f"wrote {path} ({path.stat().st_size / 1024:.0f} KiB)", highlight=False)
