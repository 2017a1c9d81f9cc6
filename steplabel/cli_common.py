"""What every CLI command shares: the consoles and the way errors end a command."""

from __future__ import annotations

import typer
from rich.console import Console
from rich.text import Text

console = Console()
err_console = Console(stderr=True)


def fail(message: str, code: int = 2) -> None:
    """Print ``error: ...`` on stderr, one line per problem (no rich markup, no wrapping), and exit."""
    for line in str(message).splitlines() or [""]:
        err_console.print(Text.assemble(("error:", "bold red"), " ", line), highlight=False, soft_wrap=True)
    raise typer.Exit(code)
