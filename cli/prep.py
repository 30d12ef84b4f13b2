"""``lsp prep``: videos in, one HDF5 dataset per clip out."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from cli._common import cli_errors, console, stage_progress
from lsp_prep.config import PrepConfig
from lsp_prep.configtree import sections_help


def prep(
    videos: Annotated[
        list[Path], typer.Argument(metavar="VIDEO...", help="Video file(s) of one person talking.")
    ],
    out_dir: Annotated[
        Path,
        typer.Option(
            "--out-dir",
            "-o",
            metavar="DIR",
            help="Output directory: DIR/<clip>.h5 and DIR/manifest.csv (formerly --out).",
        ),
    ],
    audio: Annotated[
        Path | None,
        typer.Option(
            metavar="FILE",
            help="Speech track to use instead of the video's own (one video only).",
        ),
    ] = None,
    overrides: Annotated[
        list[str] | None,
        typer.Option(
            "--set",
            metavar="KEY=VALUE",
            help="Override a config value, e.g. --set crop.scale=2.0 or --set "
            f"features.every=1. Sections: {sections_help(PrepConfig)}; each option is "
            "documented on its field in the section's dataclass.",
        ),
    ] = None,
    force: Annotated[bool, typer.Option(help="Recompute everything, ignoring caches.")] = False,
    progress: Annotated[bool, typer.Option(help="Show progress bars.")] = True,
    verbose: Annotated[
        bool, typer.Option("--verbose", "-v", help="Per-stage timings; a traceback with an error.")
    ] = False,
) -> None:
    """Prepare datasets: 60 FPS 512x512 face crops, landmarks, calibrated camera, 3D head
    track (fitted to texture features of the upper face), shoulders, candidate images,
    log-mels and a train/val split.

    Writes DIR/<clip>.h5 (see docs/dataset.md) and adds a row per clip to DIR/manifest.csv.
    An interrupted run resumes where it stopped; a finished clip is reused unless --force.

    Examples:

      lsp prep me_talking.mp4 -o data/
      lsp prep phone.mov -o data/ --audio mic.wav
      lsp prep a.mp4 b.mp4 -o data/ --set crop.scale=2.0
    """
    from lsp_prep.pipeline import prep_video  # 0.4-1.2 s of imports: only when prep runs

    with cli_errors(verbose):
        if audio is not None and len(videos) > 1:
            raise typer.BadParameter("--audio can be given with one video only")
        config = PrepConfig().with_overrides(overrides or [])
        results = []
        for video in videos:
            with stage_progress(progress) as bar:
                results.append(
                    prep_video(
                        video,
                        out_dir=out_dir,
                        config=config,
                        audio=audio,
                        force=force,
                        progress=bar,
                    )
                )
        table = Table(title=f"lsp prep -> {out_dir}", title_justify="left")
        for col in ("clip", "frames", "seconds", "valid", "interp.", "status"):
            table.add_column(col, justify="left" if col in ("clip", "status") else "right")
        for r in results:
            table.add_row(
                r.dataset.name,
                str(r.n_frames),
                f"{r.duration_s:.1f}",
                f"{r.valid_fraction:.1%}",
                str(r.interpolated_frames),
                "reused" if r.reused else "written",
            )
        console.print(table)
        if verbose:
            for r in results:
                times = "  ".join(f"{k} {v:.1f}s" for k, v in r.timings.items())
                console.print(f"{r.dataset.name}: {times}", highlight=False)
        for r in results:
            for note in r.notes:
                console.print(f"[cyan]note:[/] {note}", highlight=False, soft_wrap=True)
            for w in r.warnings:
                console.print(f"[yellow]warning:[/] {w}", highlight=False)
        for r in results:
            console.print(
                f"see it at a glance: lsp report {r.dataset} (writes "
                f"{r.dataset.with_suffix('.html').name} beside it)",
                highlight=False,
            )
