"""``steplabel export`` and ``steplabel publish``.

These are plain functions with their Typer options on the signatures; steplabel.cli.main registers them:

    from steplabel.cli.export import export_command, publish_command
    app.command("export")(export_command)
    app.command("publish")(publish_command)

(This module does not import steplabel.cli.main, so the registration cannot be circular.)
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from steplabel.cli.common import console, fail, open_store
from steplabel.storage.exporters import DEFAULT_FORMAT, format_help

FORMAT_HELP = format_help()


def export_command(
    directory: Annotated[str, typer.Argument(help="dataset directory (or s3://... URL) written by `steplabel run`")],
    format: Annotated[str, typer.Option("--format", "-f", help=FORMAT_HELP)] = DEFAULT_FORMAT,
    out: Annotated[Path, typer.Option("--out", "-o", help="write OUT/<format>/<split>-00000-of-00001.parquet")] = Path("export"),
    version: Annotated[Optional[str], typer.Option("--version", "-v", help="e.g. v3; default: latest")] = None,
    split_ratio: Annotated[
        Optional[str], typer.Option("--split-ratio", help="e.g. train=0.9,test=0.1 (by problem); default: one train split")
    ] = None,
    stop_at_first_error: Annotated[
        bool, typer.Option("--stop-at-first-error/--all-steps",
                           help="prm800k only: list steps up to the first bad one, as upstream's found_error (default), or all")
    ] = True,
    searched_paths: Annotated[
        bool, typer.Option("--searched-paths", help="also export every path an OmegaPRM search labelled")
    ] = False,
) -> None:
    """Export a version of the dataset in a PRM training format."""
    from steplabel.storage.exporters import FORMATS, export_version
    from steplabel.storage.store import StoreError

    if format not in FORMATS:
        fail(f"unknown format {format!r}; choose one of: {', '.join(FORMATS)}")
    store = open_store(directory)
    options = {"stop_at_first_error": stop_at_first_error} if format == "prm800k" else {}
    try:
        files = export_version(store, version, format, out, split_ratio, searched_paths=searched_paths, **options)
    except (ValueError, StoreError) as error:
        fail(str(error))
    except OSError as error:  # read-only, not a directory, no space: the export path, not the dataset
        fail(f"--out {out}: cannot write the export: {error.strerror or error}"
             + (f" ({error.filename})" if error.filename else ""), code=1)
    for path in files:
        console.print(f"wrote {path}", highlight=False)


def publish_command(
    directory: Annotated[str, typer.Argument(help="dataset directory (or s3://... URL) written by `steplabel run`")],
    repo_id: Annotated[str, typer.Option("--repo-id", help="Hub dataset repository, ORG/NAME")],
    version: Annotated[Optional[str], typer.Option("--version", "-v", help="e.g. v3; default: latest")] = None,
    private: Annotated[bool, typer.Option("--private", help="create the repository as private")] = False,
    dry_run: Annotated[
        Optional[Path], typer.Option("--dry-run", help="write the commit's files to this empty directory; no network")
    ] = None,
    split_ratio: Annotated[
        Optional[str], typer.Option("--split-ratio", help="e.g. train=0.9,test=0.1 (by problem); default: one train split")
    ] = None,
    license: Annotated[Optional[str], typer.Option(
        "--license", help="Hub license id of the data, e.g. apache-2.0, cc-by-4.0, mit; default: other")] = None,
    license_name: Annotated[Optional[str], typer.Option("--license-name", help="with --license other: its name")] = None,
    license_link: Annotated[Optional[str], typer.Option(
        "--license-link", help="with --license other: URL (or repo file) of its text")] = None,
    pretty_name: Annotated[Optional[str], typer.Option("--pretty-name", help="the card's title")] = None,
    language: Annotated[Optional[list[str]], typer.Option(
        "--language", help="ISO 639 code of the text, repeatable; default: en")] = None,
) -> None:
    """Publish a version to the Hugging Face Hub: one commit (all formats, card, manifest) and a tag."""
    from steplabel.storage.publish import card_options, publish
    from steplabel.storage.store import StoreError

    store = open_store(directory)
    try:
        card = card_options(license=license, license_name=license_name, license_link=license_link,
                            pretty_name=pretty_name, language=tuple(language) if language else None)
        result = publish(store, repo_id, version=version, private=private, dry_run=dry_run, split_ratio=split_ratio,
                         card=card)
    except ImportError as error:
        fail(f"publishing needs huggingface_hub ({error}); pip install huggingface_hub")
    except (ValueError, StoreError) as error:
        fail(str(error))
    except OSError as error:
        fail(f"publishing {repo_id}: {error.strerror or error}" + (f" ({error.filename})" if error.filename else ""), code=1)
    except Exception as error:  # noqa: BLE001 - Hub errors (auth, network): one line, no traceback, no token
        fail(f"publishing {repo_id} failed: {type(error).__name__}: {error}", code=1)
    rows = ", ".join(f"{cfg} {sum(splits.values())}" for cfg, splits in result.rows.items())
    if result.dry_run is not None:
        console.print(f"dry run: {len(result.files)} files for {repo_id}@{result.version} in {result.dry_run} ({rows})", highlight=False)
    else:
        console.print(
            f"published {result.version} to {repo_id}: {len(result.files)} files ({rows}), tag {result.tag}"
            + (f"\n{result.commit_url}" if result.commit_url else ""),
            highlight=False,
        )
