"""The renderer's generator: conditional feature map + 4 candidates -> photorealistic frame.

Paper, section 3.4: a UNet-like generator with 8 levels at 512x512 (feature resolutions
256^2 .. 2^2, channels 64, 128, 256, 512, 512, 512, 512, 512); each encoder level is a
stride-2 convolution followed by a residual block, each decoder level a nearest-neighbour
x2 upsampling, a convolution and a residual block, with skip connections (encoder features
concatenated). The input has 13 channels: the 1-channel drawing of the landmarks (the
conditional feature map) and the 4 candidate RGB images of the person. Training is
adversarial (:mod:`lsp_models.nets.discriminator`, :mod:`lsp_models.nets.renderer`).

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
from dataclasses import dataclass
from typing import Literal, get_args

import torch
import torch.nn.functional as F
from torch import nn

from lsp_prep.errors import InputError

Norm = Literal["group", "instance", "batch", "none"]
"""Normalisation after each convolution: GroupNorm, InstanceNorm (affine), BatchNorm, none."""


def check_norm(norm: str, where: str) -> None:
    """InputError unless ``norm`` is one of :data:`Norm` (``where`` names the section)."""
    if norm not in get_args(Norm):
        raise InputError(f"{where}.norm must be one of {get_args(Norm)}, got {norm!r}")


def norm_layer(norm: Norm, channels: int, groups: int) -> nn.Module:
    """The normalisation layer for ``channels`` channels (GroupNorm: gcd(groups, channels))."""
    if norm == "group":
        return nn.GroupNorm(math.gcd(groups, channels), channels)
    if norm == "instance":
        return nn.InstanceNorm2d(channels, affine=True)
    if norm == "batch":
        return nn.BatchNorm2d(channels)
    return nn.Identity()


def init_weights(module: nn.Module) -> None:
    """pix2pix(HD) initialisation: convolutions N(0, 0.02), norm scales N(1, 0.02), biases 0."""
    for m in module.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.normal_(m.weight, 0.0, 0.02)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.GroupNorm | nn.InstanceNorm2d | nn.BatchNorm2d) and m.affine:
            nn.init.normal_(m.weight, 1.0, 0.02)
            nn.init.zeros_(m.bias)


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
        check_norm(self.norm, "generator")
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
            norm_layer(norm, channels, groups),
            nn.ReLU(inplace=True),
            nn.Conv2d(channels, channels, 3, padding=1, bias=bias),
            norm_layer(norm, channels, groups),
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
        self.norm = norm_layer(norm, c_out, cfg.norm_groups)
        self.res = ResidualBlock(c_out, cfg.norm, cfg.norm_groups)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.res(F.relu(self.norm(self.conv(x))))


class UpLevel(nn.Module):
    """Nearest x2 + 3x3 conv + norm + ReLU + residual block: (B, C_in, H, W) -> (B, C, 2H, 2W)."""

    def __init__(self, c_in: int, c_out: int, cfg: GeneratorConfig) -> None:
        super().__init__()
        bias = cfg.norm == "none"
        self.conv = nn.Conv2d(c_in, c_out, 3, padding=1, bias=bias)
        self.norm = norm_layer(cfg.norm, c_out, cfg.norm_groups)
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
        init_weights(self)

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
