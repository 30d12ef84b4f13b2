"""Image layers pasted into frames: backgrounds, soft-edged RGBA layers and their per-frame
affines, and compositing (both the 2D portraits and the 3D torso plane use them)."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Literal

import numpy as np

from lsp_prep.errors import InputError

Background = Literal["texture", "plain"]
"""Kinds of :func:`make_background`: smooth coloured blobs or plain grey."""


@dataclass(frozen=True, eq=False)
class Layer:
    """One image to paste: RGBA (H, W, 4) uint8 and its per-frame affine (N, 2, 3)."""

    rgba: np.ndarray
    """The image (H, W, 4) uint8; alpha 255 is opaque."""
    affine: np.ndarray = field(repr=False)
    """Layer pixel -> frame pixel per frame (N, 2, 3): ``q = A[:, :2] @ p + A[:, 2]``."""


def make_background(
    *, size: tuple[int, int], kind: Background = "texture", seed: int = 0
) -> np.ndarray:
    """A static RGB background (H, W, 3) uint8: smooth coloured blobs or plain grey."""
    import cv2

    w, h = size
    if kind == "plain":
        return np.broadcast_to(np.array([118, 124, 132], np.uint8), (h, w, 3)).copy()
    if kind != "texture":
        raise InputError(f"background must be 'texture' or 'plain', got {kind!r}")
    rng = np.random.default_rng(seed)
    coarse = rng.normal(0.0, 1.0, size=(max(2, h // 40), max(2, w // 40), 3)).astype(np.float32)
    smooth = cv2.resize(coarse, (w, h), interpolation=cv2.INTER_CUBIC)
    fine = rng.normal(0.0, 6.0, size=(h, w, 3)).astype(np.float32)
    return np.clip(120.0 + 25.0 * smooth + fine, 0, 255).astype(np.uint8)


def soft_rgba(image: np.ndarray, *, feather: float) -> np.ndarray:
    """RGBA (H, W, 4) of an RGB image whose alpha ramps up over ``feather`` * short side."""
    h, w = image.shape[:2]
    ramp = max(1.0, feather * min(h, w))
    x = np.minimum(np.arange(w) + 0.5, w - np.arange(w) - 0.5) / ramp
    y = np.minimum(np.arange(h) + 0.5, h - np.arange(h) - 0.5) / ramp
    alpha = np.clip(np.minimum(y[:, None], x[None, :]), 0.0, 1.0)
    return np.dstack([image, np.round(alpha * 255).astype(np.uint8)])


def prescaled_layer(rgba: np.ndarray, affine: np.ndarray) -> Layer:
    """Resize ``rgba`` once by the mean scale (area filter, no aliasing) and fold it in."""
    import cv2

    scale = float(np.sqrt(np.abs(np.linalg.det(affine[:, :, :2]))).mean())
    if scale >= 0.9:
        return Layer(rgba=rgba, affine=affine)
    h, w = rgba.shape[:2]
    nw, nh = max(1, round(w * scale)), max(1, round(h * scale))
    small = cv2.resize(rgba, (nw, nh), interpolation=cv2.INTER_AREA)
    sx, sy = nw / w, nh / h
    # Pixel centres: small x' = sx * x + (sx - 1) / 2, so x = (x' - (sx - 1) / 2) / sx.
    inv = np.array([[1 / sx, 0, -(sx - 1) / (2 * sx)], [0, 1 / sy, -(sy - 1) / (2 * sy)]])
    folded = affine[:, :, :2] @ inv[:, :2]
    shift = affine[:, :, :2] @ inv[:, 2] + affine[:, :, 2]
    return Layer(rgba=small, affine=np.concatenate([folded, shift[:, :, None]], axis=2))


def composite(frame: np.ndarray, layer: Layer, i: int) -> None:
    """Paste layer frame ``i`` into ``frame`` (H, W, 3) in place, warping only its bounding box."""
    import cv2

    h, w = frame.shape[:2]
    m = layer.affine[i]
    lh, lw = layer.rgba.shape[:2]
    corners = np.array([[-0.5, -0.5], [lw - 0.5, -0.5], [lw - 0.5, lh - 0.5], [-0.5, lh - 0.5]])
    q = corners @ m[:, :2].T + m[:, 2]
    x0, y0 = (max(0, int(np.floor(v))) for v in q.min(axis=0))
    x1, y1 = min(w, int(np.ceil(q[:, 0].max())) + 1), min(h, int(np.ceil(q[:, 1].max())) + 1)
    if x1 <= x0 or y1 <= y0:
        return
    m_roi = m.copy()
    m_roi[:, 2] -= (x0, y0)
    warped = cv2.warpAffine(
        layer.rgba,
        m_roi,
        (x1 - x0, y1 - y0),
        flags=cv2.INTER_LINEAR,
        borderMode=cv2.BORDER_CONSTANT,
        borderValue=(0, 0, 0, 0),
    )
    alpha = warped[:, :, 3:4].astype(np.uint16)
    roi = frame[y0:y1, x0:x1]
    blended = (warped[:, :, :3] * alpha + roi * (255 - alpha) + 127) // 255
    roi[...] = blended.astype(np.uint8)


def render_frames(
    *, background: np.ndarray, layers: Sequence[Layer], n_frames: int
) -> Iterable[np.ndarray]:
    """Yield ``n_frames`` frames (H, W, 3): ``background`` with every layer pasted in order."""
    for i in range(n_frames):
        frame = background.copy()
        for layer in layers:
            composite(frame, layer, i)
        yield frame
