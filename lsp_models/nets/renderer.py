"""The renderer's objective and the trained pair: generator (:mod:`lsp_models.nets.generator`)
and multi-scale discriminator (:mod:`lsp_models.nets.discriminator`).

Paper, section 3.4: adversarial training with a multi-scale PatchGAN discriminator
(pix2pixHD), LSGAN, plus L1 on pixels, VGG19 perceptual loss and discriminator feature
matching, weighted 1 / 100 / 10 / 1.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from lsp_models.nets.discriminator import DiscriminatorConfig, Features, MultiScaleDiscriminator
from lsp_models.nets.generator import Generator, GeneratorConfig
from lsp_models.nets.vgg import VGGLoss, VGGLossConfig
from lsp_prep.errors import InputError


@dataclass(frozen=True)
class LossConfig:
    """Weights of the generator's loss terms (paper / DESIGN.md: 1, 100, 10, 1)."""

    gan: float = 1.0
    """LSGAN generator term: mean over scales of ``mean (D(cond, fake) - 1)^2``."""
    l1: float = 100.0
    """Mean absolute pixel difference between generated and real frame."""
    vgg: float = 10.0
    """VGG19 perceptual loss (:class:`lsp_models.nets.vgg.VGGLoss`)."""
    fm: float = 1.0
    """Discriminator feature matching: L1 between the activations the discriminator has on
    the real and on the generated frame, averaged over layers (logits excluded) and scales."""

    def __post_init__(self) -> None:
        for name in ("gan", "l1", "vgg", "fm"):
            value = getattr(self, name)
            if not (value >= 0 and math.isfinite(value)):
                raise InputError(f"loss.{name} must be a finite weight >= 0, got {value}")


@dataclass(frozen=True)
class RendererConfig:
    """Everything that defines the renderer stage's networks and objective."""

    generator: GeneratorConfig = field(default_factory=GeneratorConfig)
    discriminator: DiscriminatorConfig = field(default_factory=DiscriminatorConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    vgg: VGGLossConfig = field(default_factory=VGGLossConfig)

    def __post_init__(self) -> None:
        g, d = self.generator, self.discriminator
        if (d.cond_channels, d.image_channels) != (g.in_channels, g.out_channels):
            raise InputError(
                f"discriminator sees cond {d.cond_channels} + image {d.image_channels} channels "
                f"but the generator maps {g.in_channels} -> {g.out_channels}"
            )


def _lsgan(logits: list[torch.Tensor], target: float) -> torch.Tensor:
    """Mean over scales of the mean squared distance of the patch logits to ``target``."""
    terms = [F.mse_loss(x, torch.full_like(x, target)) for x in logits]
    return torch.stack(terms).mean()


def feature_matching(fake: Features, real: Features) -> torch.Tensor:
    """Mean over scales and over each scale's intermediate layers of ``mean |fake - real|``.

    The logits (each scale's last entry) are left out and ``real`` is used as a constant
    target. pix2pixHD sums over layers with weight 4 / (n_layers + 1) (= 1 for 3 layers) and
    averages over scales; this mean over layers is that divided by n_layers + 1.
    """
    per_scale = []
    for f_scale, r_scale in zip(fake, real, strict=True):
        terms = [F.l1_loss(f, r.detach()) for f, r in zip(f_scale[:-1], r_scale[:-1], strict=True)]
        per_scale.append(torch.stack(terms).mean())
    return torch.stack(per_scale).mean()


def generator_losses(
    discriminator: MultiScaleDiscriminator | Callable[[torch.Tensor, torch.Tensor], Features],
    vgg_loss: VGGLoss | None,
    *,
    cond: torch.Tensor,
    fake: torch.Tensor,
    real: torch.Tensor,
    config: LossConfig = LossConfig(),
) -> dict[str, torch.Tensor]:
    """The generator's objective on one batch, as a dict of scalar tensors.

    cond (B, 13, S, S) is the generator's input, fake (B, 3, S, S) its output (with gradient),
    real (B, 3, S, S) the ground-truth frame. Keys: ``"gan/g"``, ``"fm"``, ``"l1"``, ``"vgg"``
    (unweighted, for logging) and ``"total"`` (weighted by ``config``, to backpropagate).
    A term whose weight is 0 is not computed (reported as 0); ``vgg_loss`` may be None only
    when ``config.vgg == 0``.

    Gradients also reach the discriminator's parameters: zero them before its own step.
    """
    if fake.shape != real.shape:
        raise InputError(f"fake and real differ in shape: {tuple(fake.shape)}, {tuple(real.shape)}")
    zero = fake.new_zeros(())
    out: dict[str, torch.Tensor] = {"gan/g": zero, "fm": zero, "l1": zero, "vgg": zero}
    if config.gan > 0 or config.fm > 0:
        d_fake = discriminator(cond, fake)
        if config.gan > 0:
            out["gan/g"] = _lsgan([f[-1] for f in d_fake], 1.0)
        if config.fm > 0:
            with torch.no_grad():
                d_real = discriminator(cond, real)
            out["fm"] = feature_matching(d_fake, d_real)
    if config.l1 > 0:
        out["l1"] = F.l1_loss(fake, real)
    if config.vgg > 0:
        if vgg_loss is None:
            raise InputError("loss.vgg > 0 needs a VGGLoss (see lsp_models.nets.vgg.load_vgg19)")
        out["vgg"] = vgg_loss(fake, real)
    out["total"] = (
        config.gan * out["gan/g"]
        + config.fm * out["fm"]
        + config.l1 * out["l1"]
        + config.vgg * out["vgg"]
    )
    return out


def discriminator_losses(
    discriminator: MultiScaleDiscriminator,
    *,
    cond: torch.Tensor,
    fake: torch.Tensor,
    real: torch.Tensor,
) -> dict[str, torch.Tensor]:
    """LSGAN discriminator objective: real patches -> 1, generated -> 0 (``fake`` detached).

    Keys: ``"gan/d_real"``, ``"gan/d_fake"`` (each a mean over scales) and ``"total"``, their
    average (pix2pixHD's 0.5 factor, which halves D's learning rate relative to G's).
    """
    d_real = discriminator(cond, real)
    d_fake = discriminator(cond, fake.detach())
    loss_real = _lsgan([f[-1] for f in d_real], 1.0)
    loss_fake = _lsgan([f[-1] for f in d_fake], 0.0)
    return {
        "gan/d_real": loss_real,
        "gan/d_fake": loss_fake,
        "total": 0.5 * (loss_real + loss_fake),
    }


# --------------------------------------------------------------------------------------


class RendererNets(nn.Module):
    """The generator and the discriminator trained together; what a checkpoint stores."""

    def __init__(self, config: RendererConfig) -> None:
        super().__init__()
        self.config = config
        self.generator = Generator(config.generator)
        self.discriminator = MultiScaleDiscriminator(config.discriminator)
