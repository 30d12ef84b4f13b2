"""The image-to-image renderer: conditional feature map + 4 candidates -> photorealistic frame.

Paper, section 3.4: a UNet-like generator with 8 levels at 512x512 (feature resolutions
256^2 .. 2^2, channels 64, 128, 256, 512, 512, 512, 512, 512); each encoder level is a
stride-2 convolution followed by a residual block, each decoder level a nearest-neighbour
x2 upsampling, a convolution and a residual block, with skip connections (encoder features
concatenated). The input has 13 channels: the 1-channel drawing of the landmarks (the
conditional feature map) and the 4 candidate RGB images of the person. Training is
adversarial with a multi-scale PatchGAN discriminator (pix2pixHD), LSGAN, plus L1 on pixels,
VGG19 perceptual loss and discriminator feature matching, weighted 1 / 100 / 10 / 1.

Conventions: images are RGB in [-1, 1] (the generator ends in tanh), the conditional map in
[-1, 1] as well; tensors are (B, C, H, W).

Normalisation. The official inference code uses BatchNorm in the generator; that needs
batches of several frames at 512x512 to give stable statistics and behaves differently in
train and eval mode. GroupNorm (32 groups) is the default here: it is independent of the
batch size (batches of 1-2 frames are what fits on most GPUs at 512x512), identical in
training and inference, and still meaningful at the 2x2 and 4x4 innermost levels, where
InstanceNorm would normalise over only 4 or 16 values per channel. ``"instance"`` and
``"batch"`` remain available; the discriminator defaults to InstanceNorm like pix2pixHD (its
smallest maps are about 1/8 of the input side, so InstanceNorm is well defined there).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Literal, get_args

import torch
import torch.nn.functional as F
from torch import nn

from lsp_models.nets.vgg import VGGLoss, VGGLossConfig
from lsp_prep.errors import InputError

Norm = Literal["group", "instance", "batch", "none"]
"""Normalisation after each convolution: GroupNorm, InstanceNorm (affine), BatchNorm, none."""

Features = list[list[torch.Tensor]]
"""Discriminator output: per scale (full resolution first), the activation of every layer;
the last one of each scale is the patch logits map (B, 1, h, w)."""


def _check_norm(norm: str, where: str) -> None:
    if norm not in get_args(Norm):
        raise InputError(f"{where}.norm must be one of {get_args(Norm)}, got {norm!r}")


def _norm_layer(norm: Norm, channels: int, groups: int) -> nn.Module:
    """The normalisation layer for ``channels`` channels (GroupNorm: gcd(groups, channels))."""
    if norm == "group":
        return nn.GroupNorm(math.gcd(groups, channels), channels)
    if norm == "instance":
        return nn.InstanceNorm2d(channels, affine=True)
    if norm == "batch":
        return nn.BatchNorm2d(channels)
    return nn.Identity()


def _init_weights(module: nn.Module) -> None:
    """pix2pix(HD) initialisation: convolutions N(0, 0.02), norm scales N(1, 0.02), biases 0."""
    for m in module.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.normal_(m.weight, 0.0, 0.02)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.GroupNorm | nn.InstanceNorm2d | nn.BatchNorm2d) and m.affine:
            nn.init.normal_(m.weight, 1.0, 0.02)
            nn.init.zeros_(m.bias)


# --------------------------------------------------------------------------------------
# Generator


@dataclass(frozen=True)
class GeneratorConfig:
    """The UNet-like generator. Levels = ``len(channels)``."""

    in_channels: int = 13
    """Input channels: the 1-channel conditional feature map + 4 candidate RGB images."""
    out_channels: int = 3
    """Output channels (RGB in [-1, 1])."""
    channels: tuple[int, ...] = (64, 128, 256, 512, 512, 512, 512, 512)
    """Channels of each encoder level, outermost first; level ``i`` works at
    ``image_size / 2**(i+1)``. The paper's 8 levels take 512^2 down to 2^2."""
    image_size: int = 512
    """Side of the square input and output; divisible by ``2**len(channels)``."""
    norm: Norm = "group"
    """Normalisation after every convolution but the first and the last (see module doc)."""
    norm_groups: int = 32
    """GroupNorm groups (``gcd(norm_groups, C)`` for a layer with C channels)."""
    down_kernel: Literal[3, 4] = 3
    """Kernel of the stride-2 encoder convolutions (3 as the official code, 4 as pix2pix)."""

    def __post_init__(self) -> None:
        if self.in_channels < 1 or self.out_channels < 1:
            raise InputError(
                f"generator.in_channels and out_channels must be >= 1, "
                f"got {self.in_channels}, {self.out_channels}"
            )
        if not self.channels or any(c < 1 for c in self.channels):
            raise InputError(
                f"generator.channels must be positive and non-empty, got {self.channels}"
            )
        levels = len(self.channels)
        if self.image_size < 2**levels or self.image_size % 2**levels:
            raise InputError(
                f"generator.image_size {self.image_size} must be a multiple of "
                f"2**levels = {2**levels} ({levels} levels in channels={self.channels})"
            )
        _check_norm(self.norm, "generator")
        if self.norm_groups < 1:
            raise InputError(f"generator.norm_groups must be >= 1, got {self.norm_groups}")
        if self.down_kernel not in (3, 4):
            raise InputError(f"generator.down_kernel must be 3 or 4, got {self.down_kernel}")

    @property
    def levels(self) -> int:
        return len(self.channels)


class ResidualBlock(nn.Module):
    """``relu(x + norm(conv(relu(norm(conv(x))))))`` with 3x3 convolutions; shape kept."""

    def __init__(self, channels: int, norm: Norm, groups: int) -> None:
        super().__init__()
        bias = norm == "none"
        self.block = nn.Sequential(
            nn.Conv2d(channels, channels, 3, padding=1, bias=bias),
            _norm_layer(norm, channels, groups),
            nn.ReLU(inplace=True),
            nn.Conv2d(channels, channels, 3, padding=1, bias=bias),
            _norm_layer(norm, channels, groups),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(x + self.block(x))  # (B, C, H, W)


class DownLevel(nn.Module):
    """Stride-2 conv (+ norm) + ReLU + residual block: (B, C_in, H, W) -> (B, C, H/2, W/2)."""

    def __init__(self, c_in: int, c_out: int, cfg: GeneratorConfig, *, first: bool) -> None:
        super().__init__()
        norm: Norm = "none" if first else cfg.norm  # the input's own statistics are kept
        k = cfg.down_kernel
        self.conv = nn.Conv2d(c_in, c_out, k, stride=2, padding=1, bias=norm == "none")
        self.norm = _norm_layer(norm, c_out, cfg.norm_groups)
        self.res = ResidualBlock(c_out, cfg.norm, cfg.norm_groups)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.res(F.relu(self.norm(self.conv(x))))


class UpLevel(nn.Module):
    """Nearest x2 + 3x3 conv + norm + ReLU + residual block: (B, C_in, H, W) -> (B, C, 2H, 2W)."""

    def __init__(self, c_in: int, c_out: int, cfg: GeneratorConfig) -> None:
        super().__init__()
        bias = cfg.norm == "none"
        self.conv = nn.Conv2d(c_in, c_out, 3, padding=1, bias=bias)
        self.norm = _norm_layer(cfg.norm, c_out, cfg.norm_groups)
        self.res = ResidualBlock(c_out, cfg.norm, cfg.norm_groups)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.interpolate(x, scale_factor=2.0, mode="nearest")  # (B, C_in, 2H, 2W)
        return self.res(F.relu(self.norm(self.conv(x))))


class Generator(nn.Module):
    """UNet with residual levels: (B, in_channels, S, S) -> (B, out_channels, S, S) in [-1, 1].

    Encoder level ``i`` maps to ``channels[i]`` at ``S / 2**(i+1)``. Decoder level ``i``
    (innermost first) takes the encoder's level ``i`` output concatenated with the previous
    decoder output (the innermost only its own encoder output), doubles the resolution and
    maps to ``channels[i-1]``. The last step upsamples ``cat(e_0, d_1)`` to ``S`` and a 3x3
    convolution + tanh makes the image (no residual block at full resolution, as the official
    code: a 64-channel block at 512^2 would double the cost for little gain).
    """

    def __init__(self, config: GeneratorConfig) -> None:
        super().__init__()
        self.config = config
        ch = config.channels
        self.down = nn.ModuleList(
            DownLevel(config.in_channels if i == 0 else ch[i - 1], ch[i], config, first=i == 0)
            for i in range(config.levels)
        )
        # up[i] produces decoder level i's output (channels[i-1]) from level i's input.
        self.up = nn.ModuleList(
            UpLevel(ch[i] if i == config.levels - 1 else 2 * ch[i], ch[i - 1], config)
            for i in range(1, config.levels)
        )
        c_last = ch[0] if config.levels == 1 else 2 * ch[0]
        self.to_image = nn.Conv2d(c_last, config.out_channels, 3, padding=1)
        _init_weights(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        cfg = self.config
        s = cfg.image_size
        if x.ndim != 4 or tuple(x.shape[1:]) != (cfg.in_channels, s, s):
            raise InputError(
                f"generator expects (B, {cfg.in_channels}, {s}, {s}), got {tuple(x.shape)}"
            )
        skips: list[torch.Tensor] = []
        h = x  # (B, C_in, S, S)
        for level in self.down:
            h = level(h)  # (B, channels[i], S / 2**(i+1), S / 2**(i+1))
            skips.append(h)
        h = skips.pop()  # innermost: (B, channels[-1], S / 2**L, S / 2**L)
        for level in reversed(self.up):
            h = level(h)  # (B, channels[i-1], S / 2**i, S / 2**i)
            h = torch.cat([skips.pop(), h], dim=1)  # (B, 2 * channels[i-1], ...)
        h = F.interpolate(h, scale_factor=2.0, mode="nearest")  # (B, 2 * channels[0], S, S)
        return torch.tanh(self.to_image(h))  # (B, out_channels, S, S)


# --------------------------------------------------------------------------------------
# Discriminator


@dataclass(frozen=True)
class DiscriminatorConfig:
    """Multi-scale PatchGAN (pix2pixHD): one N-layer discriminator per scale."""

    cond_channels: int = 13
    """Channels of the conditional input (the generator's input)."""
    image_channels: int = 3
    """Channels of the real or generated image concatenated to it."""
    ndf: int = 64
    """Channels of the first layer; doubled at every stride-2 layer up to ``max_channels``."""
    max_channels: int = 512
    """Cap on the channels of any layer."""
    n_layers: int = 3
    """Stride-2 4x4 convolutions per scale (3: a 70x70 receptive field at each scale)."""
    num_scales: int = 2
    """Scales: the input, then average-pooled by 2 each time (pix2pixHD's default 2)."""
    norm: Norm = "instance"
    """Normalisation after every convolution but the first and the last."""
    norm_groups: int = 32
    """GroupNorm groups when ``norm == "group"``."""

    def __post_init__(self) -> None:
        if self.cond_channels < 0 or self.image_channels < 1:
            raise InputError(
                f"discriminator.cond_channels must be >= 0 and image_channels >= 1, "
                f"got {self.cond_channels}, {self.image_channels}"
            )
        if self.ndf < 1 or self.max_channels < self.ndf:
            raise InputError(
                f"discriminator needs 1 <= ndf <= max_channels, got {self.ndf}, {self.max_channels}"
            )
        if self.n_layers < 1:
            raise InputError(f"discriminator.n_layers must be >= 1, got {self.n_layers}")
        if self.num_scales < 1:
            raise InputError(f"discriminator.num_scales must be >= 1, got {self.num_scales}")
        _check_norm(self.norm, "discriminator")
        if self.norm_groups < 1:
            raise InputError(f"discriminator.norm_groups must be >= 1, got {self.norm_groups}")


class PatchDiscriminator(nn.Module):
    """pix2pixHD's N-layer PatchGAN; returns every layer's activation (n_layers + 2 of them)."""

    def __init__(self, config: DiscriminatorConfig) -> None:
        super().__init__()
        cfg = config
        c_in = cfg.cond_channels + cfg.image_channels
        bias = cfg.norm == "none"
        layers: list[nn.Sequential] = [
            nn.Sequential(nn.Conv2d(c_in, cfg.ndf, 4, stride=2, padding=2), nn.LeakyReLU(0.2))
        ]
        nf = cfg.ndf
        for n in range(1, cfg.n_layers + 1):
            prev, nf = nf, min(nf * 2, cfg.max_channels)
            stride = 2 if n < cfg.n_layers else 1  # the last one keeps the resolution
            layers.append(
                nn.Sequential(
                    nn.Conv2d(prev, nf, 4, stride=stride, padding=2, bias=bias),
                    _norm_layer(cfg.norm, nf, cfg.norm_groups),
                    nn.LeakyReLU(0.2),
                )
            )
        layers.append(nn.Sequential(nn.Conv2d(nf, 1, 4, stride=1, padding=2)))
        self.layers = nn.ModuleList(layers)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        out: list[torch.Tensor] = []
        for layer in self.layers:
            x = layer(x)  # (B, C_l, h_l, w_l)
            out.append(x)
        return out  # last: (B, 1, h, w) patch logits


class MultiScaleDiscriminator(nn.Module):
    """``num_scales`` PatchGANs on ``cat(cond, image)`` at full, 1/2, 1/4 ... resolution."""

    def __init__(self, config: DiscriminatorConfig) -> None:
        super().__init__()
        self.config = config
        self.scales = nn.ModuleList(PatchDiscriminator(config) for _ in range(config.num_scales))
        self.downsample = nn.AvgPool2d(3, stride=2, padding=1, count_include_pad=False)
        _init_weights(self)

    def forward(self, cond: torch.Tensor, image: torch.Tensor) -> Features:
        """cond (B, cond_channels, H, W), image (B, image_channels, H, W) -> :data:`Features`."""
        cfg = self.config
        if (
            cond.ndim != 4
            or image.ndim != 4
            or cond.shape[1] != cfg.cond_channels
            or image.shape[1] != cfg.image_channels
            or cond.shape[0] != image.shape[0]
            or cond.shape[2:] != image.shape[2:]
        ):
            raise InputError(
                f"discriminator expects cond (B, {cfg.cond_channels}, H, W) and image "
                f"(B, {cfg.image_channels}, H, W), got {tuple(cond.shape)} and {tuple(image.shape)}"
            )
        x = torch.cat([cond, image], dim=1)  # (B, cond + image channels, H, W)
        out: Features = []
        for i, d in enumerate(self.scales):
            if i:
                x = self.downsample(x)  # (B, C, ceil(H / 2**i), ceil(W / 2**i))
            out.append(d(x))
        return out


# --------------------------------------------------------------------------------------
# Losses


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
    discriminator: MultiScaleDiscriminator,
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
# Inputs, outputs and the trained pair


class RendererNets(nn.Module):
    """The generator and the discriminator trained together; what a checkpoint stores."""

    def __init__(self, config: RendererConfig) -> None:
        super().__init__()
        self.config = config
        self.generator = Generator(config.generator)
        self.discriminator = MultiScaleDiscriminator(config.discriminator)


def to_unit(images: torch.Tensor) -> torch.Tensor:
    """uint8 images (..., H, W, C) 0-255 -> float (..., C, H, W) in [-1, 1]."""
    x = images.float().div(127.5).sub(1.0)
    return x.movedim(-1, -3)


def from_unit(x: torch.Tensor) -> torch.Tensor:
    """float (..., C, H, W) in [-1, 1] -> uint8 (..., H, W, C) 0-255 (rounded, clamped)."""
    y = x.detach().float().add(1.0).mul(127.5).round().clamp(0, 255)
    return y.to(torch.uint8).movedim(-3, -1)


def renderer_input(feature_map: torch.Tensor, candidates: torch.Tensor) -> torch.Tensor:
    """The generator's 13-channel input.

    ``feature_map`` (B, S, S) uint8 (lines 255 on 0, :func:`lsp_prep.featuremap.
    draw_feature_map`); ``candidates`` (4, S, S, 3) uint8 RGB (the same for the batch) or
    (B, 4, S, S, 3). Returns (B, 1 + 4 * 3, S, S) float in [-1, 1]: the map, then the
    candidates' RGB channels in order.
    """
    if feature_map.ndim != 3:
        raise InputError(f"feature_map must be (B, S, S), got {tuple(feature_map.shape)}")
    b, s = feature_map.shape[0], feature_map.shape[-1]
    if candidates.ndim == 4:
        candidates = candidates.unsqueeze(0).expand(b, *candidates.shape)
    if candidates.ndim != 5 or tuple(candidates.shape[2:]) != (s, s, 3):
        raise InputError(
            f"candidates must be (4, {s}, {s}, 3) or (B, 4, {s}, {s}, 3), "
            f"got {tuple(candidates.shape)}"
        )
    fm = to_unit(feature_map.unsqueeze(-1))  # (B, 1, S, S)
    cand = to_unit(candidates).flatten(1, 2)  # (B, 4 * 3, S, S)
    return torch.cat([fm, cand], dim=1)
