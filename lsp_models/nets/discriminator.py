"""The renderer's multi-scale PatchGAN discriminator (pix2pixHD): one N-layer
discriminator per scale, InstanceNorm by default. Tensors are (B, C, H, W)."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from lsp_models.nets.generator import Norm, check_norm, init_weights, norm_layer
from lsp_prep.errors import InputError

Features = list[list[torch.Tensor]]
"""Discriminator output: per scale (full resolution first), the activation of every layer;
the last one of each scale is the patch logits map (B, 1, h, w)."""


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
        check_norm(self.norm, "discriminator")
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
                    norm_layer(cfg.norm, nf, cfg.norm_groups),
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
        init_weights(self)

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
