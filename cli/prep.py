"""``lsp prep``: videos in, one HDF5 dataset per clip out."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape
from rich.table import Table

from cli._common import cli_errors, clip_progress, console, stage_progress
from lsp_prep.batch import LOCAL_RAY, Executor, Outcome
from lsp_prep.config import PrepConfig
from lsp_prep.configtree import sections_help
from lsp_prep.errors import LSPError


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
    jobs: Annotated[
        int,
        typer.Option(
            "--jobs",
            "-j",
            min=1,
            metavar="N",
            help="Clips prepped at once, each in its own process using one core (local); "
            f"with --executor ray and --address {LOCAL_RAY}, the CPUs of the Ray instance.",
        ),
    ] = 1,
    executor: Annotated[
        Executor,
        typer.Option(
            metavar="local|ray",
            help="Where the clips run: 'local' (this machine) or 'ray' (one task per clip on "
            "a Ray cluster; pip install 'lsp-toolkit\\[ray]'; DIR must be the same path on "
            "every node).",
        ),
    ] = Executor.local,
    address: Annotated[
        str,
        typer.Option(
            metavar="ADDRESS",
            help="Ray cluster to join with --executor ray: 'auto' (the one this machine "
            f"belongs to), HOST:PORT, or '{LOCAL_RAY}' (a private instance started here).",
        ),
    ] = "auto",
) -> None:
    """Prepare datasets: 60 FPS 512x512 face crops, landmarks, calibrated camera, 3D head
    track (fitted to texture features of the upper face), shoulders, candidate images,
    log-mels and a train/val split.

    Writes DIR/<clip>.h5 (see docs/dataset.md) and adds a row per clip to DIR/manifest.csv.
    An interrupted run resumes where it stopped; a finished clip is reused unless --force.
    With several clips, every input is checked first; clips with the same file name are
    named after their folders too; a clip that fails does so alone and the summary lists
    it (exit code 1).

    Examples:

      lsp prep me_talking.mp4 -o data/
      lsp prep phone.mov -o data/ --audio mic.wav
      lsp prep a.mp4 b.mp4 -o data/ --set crop.scale=2.0
      lsp prep clips/*.mp4 -o data/ --jobs 2
    """
    from lsp_prep.signals import deferred_signals

    # 0.4-1.2 s of imports, only when prep runs; a C extension interrupted while it starts
    # prints a bare traceback itself, so a Ctrl-C then takes effect once they are done
    with deferred_signals():
        from lsp_prep.pipeline import prep_video

    with cli_errors(verbose):
        if audio is not None and len(videos) > 1:
            raise typer.BadParameter("--audio can be given with one video only")
        config = PrepConfig().with_overrides(overrides or [])
        if len(videos) == 1 and executor is Executor.local:
            with stage_progress(progress) as bar:
                result = prep_video(
                    videos[0],
                    out_dir=out_dir,
                    config=config,
                    audio=audio,
                    force=force,
                    progress=bar,
                )
            outcomes = [Outcome(videos[0], result.dataset.stem, result)]
        else:
            outcomes = _prep_many(
                videos,
                out_dir=out_dir,
                config=config,
                audio=audio,
                force=force,
                jobs=jobs,
                executor=executor,
                address=address,
                progress=progress,
            )
        results = [o.result for o in outcomes if o.result is not None]
        table = Table(title=f"lsp prep -> {out_dir}", title_justify="left")
        for col in ("clip", "frames", "seconds", "valid", "interp.", "status"):
            table.add_column(col, justify="left" if col in ("clip", "status") else "right")
        for o in outcomes:
            if o.result is None:
                table.add_row(str(o.video), "", "", "", "", "[red]failed[/]")
                continue
            r = o.result
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
        failed = [o for o in outcomes if not o.ok]
        for o in failed:
            console.print(f"[red]failed:[/] {escape(o.error)}", highlight=False, soft_wrap=True)
            if verbose and o.detail:
                console.print(o.detail, highlight=False)
        if failed:
            raise LSPError(
                f"{len(failed)} of {len(outcomes)} clips failed (listed above); fix them and "
                "run the same command again: the finished clips are reused"
            )


def _prep_many(
    videos: list[Path],
    *,
    out_dir: Path,
    config: PrepConfig,
    audio: Path | None,
    force: bool,
    jobs: int,
    executor: Executor,
    address: str,
    progress: bool,
) -> list[Outcome]:
    """Several clips (or one on Ray): every input checked up front, then prepped, each
    alone (lsp_prep.batch)."""
    from lsp_prep.batch import plan_clips, prep_clips

    plan = plan_clips(videos, out_dir=out_dir, config=config, audio=audio)
    for note in plan.notes:
        console.print(f"[yellow]note:[/] {escape(note)}", highlight=False, soft_wrap=True)
    for o in plan.refused:
        console.print(
            f"[red]failed:[/] {escape(o.error)} (the other clips go ahead)",
            highlight=False,
            soft_wrap=True,
        )
    with clip_progress(progress) as bar:
        return prep_clips(
            plan,
            out_dir=out_dir,
            config=config,
            audio=audio,
            force=force,
            jobs=jobs,
            executor=executor,
            address=address,
            progress=bar,
        )
