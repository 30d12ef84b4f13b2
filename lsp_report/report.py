"""The two reports as plain functions: :func:`report_dataset` and :func:`report_run`
(each writes one HTML page and returns its numbers), and :func:`report` choosing by path."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lsp_prep.errors import InputError
from lsp_prep.progress import ProgressFn, no_progress
from lsp_report.page import render_page, write_page
from lsp_report.plots import plot_style


@dataclass
class ReportResult:
    """What one report wrote."""

    output: Path | None
    """The HTML page (None when only the numbers were asked for)."""
    numbers: dict[str, Any]
    """Every number the page shows (``--json``)."""
    seconds: float = 0.0
    sections: list[str] = field(default_factory=list)


def report_dataset(
    dataset: Path, *, output: Path | None, progress: ProgressFn = no_progress
) -> ReportResult:
    """Report on a prepped dataset: write the page to ``output`` (skip when None)."""
    from lsp_report.dataset import dataset_numbers, read_dataset
    from lsp_report.dataset_page import dataset_sections

    t0 = time.perf_counter()
    progress("read", 0, 1)
    data = read_dataset(Path(dataset))
    numbers = dataset_numbers(data)
    progress("read", 1, 1)
    if output is None:
        return ReportResult(None, numbers, time.perf_counter() - t0)
    with plot_style():
        sections = dataset_sections(data, numbers, progress=progress)
    subtitle = f"{data.path}  ·  {numbers['frames']} frames, {numbers['duration_s']:.1f} s"
    write_page(output, render_page(f"Dataset {data.path.stem}", subtitle, sections))
    return ReportResult(
        Path(output), numbers, time.perf_counter() - t0, [s.title for s in sections]
    )


def report_run(
    run_dir: Path, *, output: Path | None, progress: ProgressFn = no_progress
) -> ReportResult:
    """Report on a training run (and its dataset, when it can be found)."""
    from lsp_report.run import run_numbers, run_sections

    t0 = time.perf_counter()
    run_dir = Path(run_dir)
    numbers = run_numbers(run_dir)
    if output is None:
        return ReportResult(None, numbers, time.perf_counter() - t0)
    with plot_style():
        sections = run_sections(run_dir, numbers, progress=progress)
    write_page(output, render_page(f"Run {run_dir.name}", str(run_dir), sections))
    return ReportResult(
        Path(output), numbers, time.perf_counter() - t0, [s.title for s in sections]
    )


def report(path: Path, *, output: Path | None, progress: ProgressFn = no_progress) -> ReportResult:
    """A dataset's report for a file, a run's for a directory."""
    path = Path(path)
    if path.is_dir():
        return report_run(path, output=output, progress=progress)
    if path.is_file():
        return report_dataset(path, output=output, progress=progress)
    raise InputError(f"{path}: no such dataset file or run directory")
