"""What every CLI command shares: the consoles and the way errors end a command."""

from __future__ import annotations

import typer
from rich.console import Console
from rich.text import Text

console = Console()
err_console = Console(stderr=True)


def open_store(directory: str, *, committed: bool = True):
    """The store at a local directory or an object-store URL; a one-line error when there is none."""
    from pathlib import Path

    from steplabel.storage.store import ShardStore

    from steplabel.storage.store import StoreError

    if "://" not in directory and not Path(directory).is_dir():
        fail(f"{directory}: no such directory (expected a dataset written by `steplabel run`)")
    try:
        store = ShardStore(directory)
        if not store.is_store():
            fail(f"{directory}: not a steplabel dataset: no committed version yet and no run staged (write one "
                 f"with `steplabel run --out {directory}`)", code=1)
        if committed and store.latest() is None:
            fail(f"{directory}: no committed version yet (write one with `steplabel run --out {directory}`)")
    except (StoreError, OSError, ValueError) as error:  # unreadable pointer, bad URL, missing credentials
        fail(f"{directory}: {error}")
    return store


def first_line(error: BaseException) -> str:
    """The first line of an error's message (polars errors run to many lines), or its type's name."""
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__


def fail(message: str, code: int = 2) -> None:
    """Print ``error: ...`` on stderr, one line per problem (no rich markup, no wrapping), and exit."""
    for line in str(message).splitlines() or [""]:
        err_console.print(Text.assemble(("error:", "bold red"), " ", line), highlight=False, soft_wrap=True)
    raise typer.Exit(code)
