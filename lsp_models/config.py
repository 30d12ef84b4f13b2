"""Every setting of model training: one typed config tree, presets that are instances of it.

:class:`ModelsConfig` has a section per model (its architecture, stored in the model's
checkpoints) and one per model's training (:class:`TrainConfig`); the renderer's section
is nested (generator, discriminator, loss, vgg). Its defaults are the paper's sizes and
the only defaults there are; a preset in ``manifests/presets/NAME.toml`` is plain data
for the same tree, loaded by :func:`load_preset` through :mod:`lsp_prep.configtree` (unknown
keys refused), and ``--set section.key=value`` overrides any field at any depth, e.g.
``--set mouth_train.max_steps=50`` or ``--set renderer.generator.image_size=64``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from importlib import resources

import tomllib

from lsp_models.nets.apc import APCConfig
from lsp_models.nets.headpose import HeadPoseConfig
from lsp_models.nets.mouth import MouthConfig
from lsp_models.nets.renderer import RendererConfig
from lsp_models.train.loop import TrainConfig
from lsp_models.train.render_data import RenderDataConfig
from lsp_prep import configtree
from lsp_prep.errors import InputError

STAGES = ("apc", "mouth", "headpose", "renderer")
"""The models `lsp train all` trains, in order."""


@dataclass(frozen=True)
class ModelsConfig:
    """Every model of a person and how each is trained."""

    apc: APCConfig = field(default_factory=APCConfig)
    """APC speech features: a GRU predicting the log-mel a few frames ahead."""
    apc_train: TrainConfig = field(default_factory=TrainConfig)
    """Optimisation of APC."""
    mouth: MouthConfig = field(default_factory=MouthConfig)
    """Audio-to-mouth: LSTM + MLP from APC features to the 25 mouth points."""
    mouth_train: TrainConfig = field(default_factory=TrainConfig)
    """Optimisation of the mouth model."""
    headpose: HeadPoseConfig = field(default_factory=HeadPoseConfig)
    """Probabilistic head pose: a dilated causal conv net with a Gaussian output."""
    headpose_train: TrainConfig = field(default_factory=TrainConfig)
    """Optimisation of the head-pose model."""
    renderer: RendererConfig = field(default_factory=RendererConfig)
    """Renderer: generator, discriminator, loss weights and VGG perceptual loss."""
    renderer_train: TrainConfig = field(default_factory=TrainConfig)
    """Optimisation of the renderer."""
    renderer_data: RenderDataConfig = field(default_factory=RenderDataConfig)
    """Loading and augmentation of the renderer's training frames."""

    def train_config(self, stage: str) -> TrainConfig:
        """The optimisation section of ``stage`` (apc, mouth, headpose or renderer)."""
        if stage not in STAGES:
            raise InputError(f"unknown stage {stage!r}: choose one of {', '.join(STAGES)}")
        config: TrainConfig = getattr(self, f"{stage}_train")
        return config


def preset_names() -> list[str]:
    """The presets in manifests/presets/, by name."""
    folder = resources.files("manifests").joinpath("presets")
    return sorted(
        p.name.removesuffix(".toml") for p in folder.iterdir() if p.name.endswith(".toml")
    )


def load_preset(name: str, overrides: list[str] | None = None) -> ModelsConfig:
    """Preset ``name`` with ``section.key=value`` overrides applied."""
    path = resources.files("manifests").joinpath("presets", f"{name}.toml")
    if not path.is_file():
        raise InputError(f"unknown preset {name!r}: choose one of {', '.join(preset_names())}")
    try:
        config = configtree.from_data(ModelsConfig, tomllib.loads(path.read_text()))
    except InputError as exc:
        raise InputError(f"preset {name!r}: {exc}") from None
    return configtree.with_overrides(config, overrides or [], see="see `lsp train --help`")
