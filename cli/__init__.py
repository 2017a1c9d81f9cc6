"""Command-line interface (Typer + rich): parses arguments and prints; the work happens in the library."""
