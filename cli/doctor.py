"""``lsp doctor``: one table of what this machine has for the toolkit and what it means."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from cli._common import Verbose, cli_errors, console


def doctor(
    path: Annotated[
        Path,
        typer.Option(
            metavar="DIR", help="Where datasets and runs will go (its free disk is shown)."
        ),
    ] = Path("."),
    verbose: Verbose = False,
) -> None:
    """Check this machine before a long prep or training: what is here, and what it means.

    Python, torch and its devices (CUDA, bf16/fp16), ffmpeg and its H.264/AAC encoders,
    MediaPipe Face Mesh and Pose (loaded and run once), the VGG19 weights, free disk and
    memory, and estimates of dataset size and of training time per preset on this device
    (from the README's benchmark figures).

    Exits 1, with the fix on the row, when something lsp prep, train or animate needs is
    missing.

    Examples:

      lsp doctor
      lsp doctor --path /data/lsp
    """
    from lsp_models.doctor import STATUS_MARK, diagnose

    with cli_errors(verbose, interrupted="nothing was changed; run it again"):
        result = diagnose(path=path)
    table = Table(title="lsp doctor", title_justify="left")
    for col in ("check", "found", "", "what it means"):
        table.add_column(col, overflow="fold")
    style = {"ok": "green", "warn": "yellow", "missing": "bold red"}
    for c in result.checks:
        mark = f"[{style[c.status]}]{STATUS_MARK[c.status]}[/]"
        table.add_row(c.name, c.found, mark, c.meaning)
    console.print(table)
    if result.missing:
        for c in result.missing:
            console.print(
                f"[bold red]error:[/] {c.name}: {c.meaning}", highlight=False, soft_wrap=True
            )
        raise typer.Exit(1)
    console.print(f"all that lsp needs is here ({result.seconds:.1f} s)", highlight=False)
