"""``lsp animate``: a speech recording in, a talking-head mp4 of the trained person out."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from cli._common import Verbose, cli_errors, console, shown_warnings, stage_progress
from lsp_models.constants import SAMPLING_TEMPERATURE


def animate(
    run_dir: Annotated[
        Path, typer.Option("--run-dir", "-r", metavar="DIR", help="The person's run directory.")
    ],
    audio: Annotated[
        Path, typer.Option(metavar="FILE", help="Speech recording (wav, mp3, m4a, a video...).")
    ],
    output: Annotated[
        Path,
        typer.Option(
            "--output", metavar="FILE", help="The video to write: .mp4, .mov or .mkv (formerly -o)."
        ),
    ],
    dataset: Annotated[
        Path | None,
        typer.Option(
            metavar="FILE",
            help="The person's dataset (default: the one training recorded in RUN).",
        ),
    ] = None,
    fps: Annotated[int, typer.Option(metavar="N", help="Output frame rate: 60 or 30.")] = 60,
    pose_from: Annotated[
        Path | None,
        typer.Option(
            metavar="FILE", help="Replay this dataset's recorded head motion instead of sampling."
        ),
    ] = None,
    temperature: Annotated[
        float,
        typer.Option(
            metavar="X", help="Head-pose sampling temperature (sigma scale; 0 = mean path)."
        ),
    ] = SAMPLING_TEMPERATURE,
    seed: Annotated[int, typer.Option(metavar="N", help="Seed of the head-pose sampler.")] = 0,
    save_intermediates: Annotated[
        bool,
        typer.Option(help="Also write OUT.npz (landmarks, poses, camera) and OUT.features.mp4."),
    ] = False,
    device: Annotated[
        str, typer.Option(metavar="NAME", help="auto (CUDA if present), cpu, or cuda[:N].")
    ] = "auto",
    stream: Annotated[
        bool, typer.Option(help="Feed the audio through the streaming API in 40 ms chunks.")
    ] = False,
    overrides: Annotated[
        list[str] | None,
        typer.Option(
            "--set",
            metavar="KEY=VALUE",
            help="Override an animation setting, e.g. --set mouth_amp=[2,2,2] "
            "(defaults in RUN/animate.json).",
        ),
    ] = None,
    progress: Annotated[bool, typer.Option(help="Show a progress bar.")] = True,
    verbose: Verbose = False,
) -> None:
    """Animate speech: audio -> mouth and head motion -> landmarks -> rendered 60 FPS mp4.

    Writes OUT (H.264 + AAC in the container its extension names: mp4, mov or mkv; the first
    and last frame aligned with the audio) and OUT.json (inputs, resolved settings, timings),
    named after OUT's full name: --output x.mov writes x.mov.json.

    Examples:

      lsp animate -r runs/me --audio speech.m4a --output talk.mp4
      lsp animate -r runs/me --audio speech.wav --output talk.mp4 --fps 30 --seed 3
      lsp animate -r runs/me --audio speech.wav --output talk.mp4 --pose-from data/me.h5
    """
    from lsp_prep.signals import deferred_signals

    finished: list[object] = []

    def restart() -> str:
        if finished:  # the interrupt came while the command was winding up
            return f"{output} and its side files were written in full before it"
        return f"nothing was written under {output} (animate cannot resume); run it again"

    with (
        cli_errors(verbose, interrupted=restart),
        shown_warnings(),
        stage_progress(progress) as bar,
    ):
        # inside the command's handling, so an interrupt during torch's start-up (held until
        # it is done: its C start-up prints one as a bare traceback) says what was written
        with deferred_signals():
            from lsp_models.infer.animate import animate as run_animate
        result = run_animate(
            run_dir=run_dir,
            audio=audio,
            output=output,
            dataset=dataset,
            fps=fps,
            pose_from=pose_from,
            temperature=temperature,
            seed=seed,
            save_intermediates=save_intermediates,
            device=device,
            overrides=overrides or [],
            chunk_s=0.04 if stream else 1.0,
            progress=with_estimate(bar, say=lambda line: console.print(line, highlight=False)),
        )
        finished.append(result)
    table = Table(title=f"lsp animate -> {result.output}", title_justify="left")
    for col in ("stage", "seconds", "ms / frame"):
        table.add_column(col, justify="left" if col == "stage" else "right")
    for stage, secs in result.timings.items():
        table.add_row(stage, f"{secs:.2f}", f"{1e3 * secs / max(result.frames, 1):.2f}")
    total = sum(result.timings.values())
    table.add_row("total", f"{total:.2f}", f"{1e3 * total / max(result.frames, 1):.2f}")
    console.print(table)
    console.print(
        f"{result.frames} frames at {result.fps} FPS for {result.seconds:.2f} s of audio; "
        f"dataset {result.dataset}; streaming look-ahead {result.lookahead_s * 1e3:.0f} ms",
        highlight=False,
    )
    for path in result.intermediates:
        console.print(f"intermediate: {path}", highlight=False)


ESTIMATE_AFTER_S = 2.0
"""Seconds of rendering measured before animate prints its estimate of the whole."""


def with_estimate(
    progress: Callable[[str, int, int | None], None],
    *,
    say: Callable[[str], None],
    clock: Callable[[], float] = time.perf_counter,
) -> Callable[[str, int, int | None], None]:
    """``progress`` that also says, once, how long the whole animation will take: frames
    left times the cost per frame measured from the first progress call (so model loading
    and warm-up are left out) over at least :data:`ESTIMATE_AFTER_S` seconds."""
    first: list[tuple[float, int]] = []
    said = False

    def update(stage: str, done: int, total: int | None) -> None:
        nonlocal said
        progress(stage, done, total)
        now = clock()
        if not first:
            first.append((now, done))
            return
        t0, n0 = first[0]
        if said or not total or done <= n0 or now - t0 < ESTIMATE_AFTER_S:
            return
        per_frame = (now - t0) / (done - n0)
        left = per_frame * (total - done)
        say(
            f"estimate: {_duration(left)} left for {total - done} of {total} frames "
            f"({1e3 * per_frame:.0f} ms per frame so far)"
        )
        said = True

    return update


def _duration(seconds: float) -> str:
    """``42 s``, ``3 min 5 s`` or ``1 h 10 min``."""
    s = round(seconds)
    if s < 60:
        return f"{s} s"
    if s < 3600:
        return f"{s // 60} min {s % 60} s"
    return f"{s // 3600} h {s % 3600 // 60} min"
