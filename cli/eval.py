"""``lsp eval``: measure a trained person on the dataset's val split; tables + a JSON file."""

from __future__ import annotations

import math
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.table import Table

from cli._common import Verbose, cli_errors, console, shown_warnings, stage_progress

if TYPE_CHECKING:
    from lsp_models.eval.evaluate import EvalResult
from lsp_models.constants import SAMPLING_TEMPERATURE


def _num(x: float | None, fmt: str = ".2f") -> str:
    return "-" if x is None or not math.isfinite(x) else format(x, fmt)


def eval_command(
    run_dir: Annotated[
        Path, typer.Option("--run-dir", "-r", metavar="DIR", help="The person's run directory.")
    ],
    dataset: Annotated[
        Path | None,
        typer.Option(
            metavar="FILE",
            help="The person's dataset (default: the one training recorded in RUN).",
        ),
    ] = None,
    max_frames: Annotated[
        int | None,
        typer.Option(
            min=1,
            metavar="N",
            help="Render at most N val frames (evenly strided) for the image metrics.",
        ),
    ] = None,
    seeds: Annotated[
        int,
        typer.Option(
            min=1, metavar="N", help="Head-pose samples to average (seeds SEED, SEED+1, ...)."
        ),
    ] = 3,
    seed: Annotated[int, typer.Option(metavar="SEED", help="First head-pose sampling seed.")] = 0,
    temperature: Annotated[
        float,
        typer.Option(metavar="X", help="Head-pose sampling temperature (animate's default)."),
    ] = SAMPLING_TEMPERATURE,
    delays: Annotated[
        list[int] | None,
        typer.Option(
            "--delay",
            metavar="N",
            help="Only the mouth models trained with this delay (repeatable; default: every "
            "RUN/mouth*/mouth.pt).",
        ),
    ] = None,
    device: Annotated[
        str, typer.Option(metavar="NAME", help="auto (CUDA if present), cpu, or cuda[:N].")
    ] = "auto",
    output: Annotated[
        Path | None,
        typer.Option(
            "--output",
            metavar="FILE",
            help="The JSON file to write (default RUN/eval.json; formerly --json).",
        ),
    ] = None,
    progress: Annotated[bool, typer.Option(help="Show a progress bar.")] = True,
    verbose: Verbose = False,
) -> None:
    """Evaluate a trained person on the val split of its dataset.

    mouth: mean distance (mm) of predicted to tracked mouth points (the paper's
    Table 1 measure) beside the predict-the-mean baseline, for RUN/mouth and any
    RUN/mouth*/mouth.pt trained with another delay; correlation of predicted and
    tracked mouth opening.

    headpose: mean, std, mean |velocity| per frame and power spectrum (centroid,
    share of power per band) of each pose dimension (degrees, mm), recorded vs
    sampled vs animated.

    image: L1 (0-255), PSNR (dB) and SSIM of renders from the tracked feature
    maps vs the real frames, at the renderer's size.

    Writes every number to RUN/eval.json (or --output FILE).

    Examples:

      lsp eval -r runs/me
      lsp eval -r runs/me --max-frames 200 --seeds 5 --output runs/me/eval_200.json
      lsp eval -r runs/me --delay 18 --dataset data/me.h5
    """
    from lsp_models.eval.evaluate import evaluate

    nothing = "nothing was written; run the same command again"
    with (
        cli_errors(verbose, interrupted=nothing),
        shown_warnings(),
        stage_progress(progress) as bar,
    ):
        if dataset is not None:
            from lsp_models.infer.loading import check_dataset, check_person

            check_dataset(dataset)
            if run_dir.is_dir():
                check_person(run_dir, dataset)
        r = evaluate(
            run_dir=run_dir,
            dataset=dataset,
            delays=delays,
            n_pose_samples=seeds,
            seed=seed,
            temperature=temperature,
            device=device,
            max_frames=max_frames,
            output=output,
            progress=bar,
        )

    console.print(mouth_table(r))
    console.print(pose_table(r))
    console.print(
        "rec: recorded track; rec~: the same smoothed as animate smooths (without the "
        "tracker's jitter); smp: the model's samples; anim: after animate's amplification "
        "and smoothing; |vel|: mean absolute change per frame; centroid: power-weighted "
        "mean frequency",
        highlight=False,
    )
    console.print(image_table(r))
    console.print(f"dataset {r.dataset}; report {r.output}", highlight=False)


def mouth_table(r: EvalResult) -> Table:
    """Mouth error per model, beside the predict-the-mean baseline."""
    mouths = sorted(r.mouth, key=lambda m: (m.delay, m.name))
    t = Table(
        title=f"mouth: {r.valid_val_frames} valid of {r.val_frames} val frames (mm, object space)",
        title_justify="left",
    )
    t.add_column("model")
    for m in mouths:
        t.add_column(f"{m.name}\ndelay {m.delay}", justify="right")
    rows = [
        ("step", [str(m.step) for m in mouths]),
        ("error", [_num(m.error_mm) for m in mouths]),
        ("error, raw APC", [_num(m.error_raw_mm) for m in mouths]),
        ("mean baseline", [_num(m.baseline_mm) for m in mouths]),
        (
            "vs baseline",
            [f"{_num(100 * (1 - m.error_mm / m.baseline_mm), '+.1f')} %" for m in mouths],
        ),
        ("opening corr.", [_num(m.opening_corr, ".3f") for m in mouths]),
        ("opening std", [_num(m.opening_std_mm) for m in mouths]),
        ("tracked std", [_num(m.tracked_opening_std_mm) for m in mouths]),
    ]
    for name, cells in rows:
        t.add_row(name, *cells)
    return t


def pose_table(r: EvalResult) -> Table:
    """Head-pose statistics and spectra: recorded, sampled and animated."""
    from lsp_models.eval.metrics import POSE_DIMS, POSE_UNITS

    p = r.pose
    t = Table(
        title=f"headpose: recorded ({p.valid_frames} valid val frames) vs sampled "
        f"({p.frames} frames, {len(p.seeds)} seeds, temperature {p.temperature:g})",
        title_justify="left",
    )
    t.add_column("statistic")
    for dim, unit in zip(POSE_DIMS, POSE_UNITS, strict=True):
        t.add_column(f"{dim}\n{unit}", justify="right")
    rec, rec_s, smp, anim = p.recorded, p.recorded_smoothed, p.sampled, p.animated
    fast = _fast_share(p.bands_hz)
    rows: list[tuple[str, list[float], str]] = [
        ("mean rec", rec["mean"], ".2f"),
        ("mean smp", smp["mean"], ".2f"),
        ("std rec", rec["std"], ".2f"),
        ("std smp", smp["std"], ".2f"),
        ("std anim", anim["std"], ".2f"),
        ("std smp/rec", p.std_ratio, ".2f"),
        ("std anim/rec", p.animated_std_ratio, ".2f"),
        ("|vel| rec", rec["mean_abs_velocity"], ".3f"),
        ("|vel| rec~", rec_s["mean_abs_velocity"], ".3f"),
        ("|vel| smp", smp["mean_abs_velocity"], ".3f"),
        ("|vel| anim", anim["mean_abs_velocity"], ".3f"),
        ("|vel| smp/rec", p.velocity_ratio, ".2f"),
        ("|vel| anim/rec", p.animated_velocity_ratio, ".2f"),
        ("|vel| anim/rec~", p.animated_velocity_ratio_smoothed, ".2f"),
        ("centroid Hz rec", rec["centroid_hz"], ".2f"),
        ("centroid Hz smp", smp["centroid_hz"], ".2f"),
        ("centroid Hz anim", anim["centroid_hz"], ".2f"),
    ]
    if p.gain is not None and p.raw_std_ratio is not None and p.raw_velocity_ratio is not None:
        rows += [  # headpose.range_calibration, and the same model sampled without it
            ("range gain", p.gain, ".2f"),
            *([("range gain fast", p.gain_fast, ".2f")] if p.gain_fast is not None else []),
            ("std smp/rec raw", p.raw_std_ratio, ".2f"),
            ("|vel| smp/rec raw", p.raw_velocity_ratio, ".2f"),
        ]
    if fast is not None:
        label = f"power>{p.bands_hz[fast]:g}Hz %"
        for who, stats in (("rec", rec), ("smp", smp), ("anim", anim)):
            share: list[float] = [100 * sum(b[fast:]) for b in stats["band_power"]]
            rows.append((f"{label} {who}", share, ".1f"))
    for label, values, fmt in rows:
        t.add_row(label, *(_num(v, fmt) for v in values))
    return t


def _fast_share(bands_hz: list[float]) -> int | None:
    """Index of the first band starting at 2 Hz or above (head motion is slower)."""
    return next((i for i, lo in enumerate(bands_hz[:-1]) if lo >= 2.0), None)


def image_table(r: EvalResult) -> Table:
    """Renderer L1, PSNR and SSIM on val frames."""
    im = r.image
    t = Table(
        title=f"image: renders from tracked feature maps vs real frames "
        f"({im.image_size}px, {im.frames} of {im.val_frames} val frames)",
        title_justify="left",
    )
    for col in ("renderer step", "L1 (0-255)", "PSNR (dB)", "SSIM"):
        t.add_column(col, justify="right")
    t.add_row(str(im.step), _num(im.l1), _num(im.psnr_db), _num(im.ssim, ".4f"))
    return t
