"""What every command shares: one stderr console, error handling, progress bars."""

from __future__ import annotations

import os
import warnings
from collections.abc import Iterator
from contextlib import contextmanager

import typer
from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TaskID,
    TextColumn,
    TimeRemainingColumn,
)

from lsp_prep.errors import LSPError

console = Console(stderr=True)
"""All human-facing output goes to stderr; stdout stays free for data."""


@contextmanager
def cli_errors(verbose: bool = False) -> Iterator[None]:
    """Turn the library's exceptions into one red line and exit code 1."""
    try:
        yield
    except LSPError as exc:
        if verbose:
            console.print_exception()
        console.print(f"[bold red]error:[/] {exc}", highlight=False, soft_wrap=True)
        raise typer.Exit(1) from None
    except KeyboardInterrupt:
        console.print("[yellow]interrupted:[/] run the same command again to resume")
        raise typer.Exit(130) from None


@contextmanager
def shown_warnings() -> Iterator[None]:
    """Print each UserWarning raised inside the block (the toolkit's) as one yellow line
    when it ends; other categories (ResourceWarning, ...) stay hidden as by default."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("ignore")
        warnings.simplefilter("default", UserWarning)
        try:
            yield
        finally:
            for w in caught:
                console.print(f"[yellow]warning:[/] {w.message}", highlight=False, soft_wrap=True)


@contextmanager
def stage_progress(enabled: bool = True) -> Iterator:
    """A rich progress display; yields a ``progress(stage, done, total)`` callback."""
    if not enabled or os.environ.get("LSP_NO_PROGRESS"):
        yield lambda stage, done, total: None
        return
    columns = (
        TextColumn("{task.description:<8}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeRemainingColumn(),
    )
    with Progress(*columns, console=console, transient=False) as bar:
        tasks: dict[str, TaskID] = {}

        def update(stage: str, done: int, total: int | None) -> None:
            if stage not in tasks:
                tasks[stage] = bar.add_task(stage, total=total)
            bar.update(tasks[stage], completed=done, total=total)

        yield update
