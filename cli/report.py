"""``lsp report``: a dataset or a training run as one self-contained HTML page."""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path
from typing import Annotated, Any

import typer

from cli._common import cli_errors, console, stage_progress
from lsp_report.report import report


def _plain(value: Any) -> Any:
    """JSON-safe numbers: NaN and infinities become null."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


def report_command(
    path: Annotated[
        Path,
        typer.Argument(
            metavar="DATASET_OR_RUN", help="A dataset (.h5 from lsp prep) or a run directory."
        ),
    ],
    output: Annotated[
        Path | None,
        typer.Option(
            "--output",
            metavar="FILE",
            help="The HTML page to write. Default: DATASET.html beside the dataset, or "
            "RUN/report.html; with --json alone, no page (formerly -o).",
        ),
    ] = None,
    as_json: Annotated[
        bool, typer.Option("--json", help="Print every number of the report as JSON on stdout.")
    ] = False,
    progress: Annotated[bool, typer.Option(help="Show progress bars.")] = True,
    verbose: Annotated[
        bool, typer.Option("--verbose", "-v", help="A traceback with an error.")
    ] = False,
) -> None:
    """See a dataset or a trained run at a glance: one HTML file, images inlined, readable
    offline.

    For a dataset: frames with the landmarks and feature map, head pose, focal search,
    misfit, shoulders, audio-visual sync, candidates, split and every warning of prep with
    what to do. For a run directory: the loss curves of every stage, validation metrics,
    the renderer's sample sheets, `lsp eval` results, then the run's dataset.

    Examples:

      lsp report data/me.h5
      lsp report runs/me --output runs/me.html
      lsp report data/me.h5 --json > me.json
    """
    with cli_errors(verbose, interrupted="nothing was written; run the same command again"):
        if output is None and not as_json:
            output = path / "report.html" if path.is_dir() else path.with_suffix(".html")
        with stage_progress(progress and output is not None) as bar:
            result = report(path, output=output, progress=bar)
        if as_json:
            json.dump(_plain(result.numbers), sys.stdout, indent=2)
            sys.stdout.write("\n")
        if result.output is not None:
            size = result.output.stat().st_size / 1e6
            console.print(
                f"wrote {result.output} ({size:.1f} MB, {len(result.sections)} sections) in "
                f"{result.seconds:.1f} s: open it in a browser",
                highlight=False,
            )
