"""The face-centred square crop: one box per frame, smoothed in time, fixed size per clip.

A crop box is ``(x0, y0, x1, y1)`` in original-video pixels with ``x1 - x0 == y1 - y0``.
A point ``p`` of the original frame maps to the crop as ``(p - (x0, y0)) * size / side``;
:func:`to_crop` and :func:`to_original` are that map and its inverse. The box size is fixed
per clip (so the camera intrinsics of the crop stay one 3x3 matrix); its centre follows
the face through a Gaussian low-pass so the crop never jitters with the landmarks.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np
from scipy.ndimage import gaussian_filter1d

from .errors import InputError


@dataclass(frozen=True)
class CropConfig:
    """How the square crop is placed around the face."""

    scale: float = 2.2
    """Crop side as a multiple of the clip's median face size (landmark bounding box)."""
    offset_y: float = 0.08
    """Crop centre below the face centre, as a fraction of the crop side (shows shoulders)."""
    smoothing_s: float = 1.0
    """Gaussian sigma (seconds) of the crop centre's trajectory; 0 follows every frame."""
    keep_inside: bool = True
    """Shift the box to stay inside the frame where it fits (never scale it)."""

    def __post_init__(self) -> None:
        if self.scale <= 1.0:
            raise InputError(f"crop.scale must be > 1, got {self.scale}")
        if self.smoothing_s < 0:
            raise InputError(f"crop.smoothing_s must be >= 0, got {self.smoothing_s}")


def face_extent(points: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Centre (N, 2) and size (N,) of each frame's landmark bounding box; NaN stays NaN."""
    lo, hi = np.min(points[..., :2], axis=1), np.max(points[..., :2], axis=1)
    return (lo + hi) / 2, np.max(hi - lo, axis=1)


def crop_boxes(
    centres: np.ndarray,
    sizes: np.ndarray,
    valid: np.ndarray,
    *,
    fps: float,
    frame_size: tuple[int, int],
    config: CropConfig = CropConfig(),
) -> np.ndarray:
    """Smoothed square crop boxes (N, 4) from per-frame face centres (N, 2) and sizes (N,).

    Invalid frames take the centre interpolated from their valid neighbours (held at the
    ends). Raises InputError if no frame is valid.
    """
    valid = np.asarray(valid, bool)
    if not valid.any():
        raise InputError("no valid face in any frame: cannot place a crop")
    n = len(centres)
    side = config.scale * float(np.median(sizes[valid]))
    t, good = np.arange(n), np.flatnonzero(valid)
    c = np.stack([np.interp(t, good, centres[good, k]) for k in range(2)], axis=1)
    c[:, 1] += config.offset_y * side
    if config.smoothing_s > 0 and n > 1:
        c = gaussian_filter1d(c, sigma=config.smoothing_s * fps, axis=0, mode="nearest")
    if config.keep_inside:
        for k, extent in enumerate(frame_size):
            if side <= extent:
                c[:, k] = np.clip(c[:, k], side / 2, extent - side / 2)
            else:
                c[:, k] = extent / 2
    return np.concatenate([c - side / 2, c + side / 2], axis=1)


def _scale(boxes: np.ndarray, size: int) -> np.ndarray:
    return size / (boxes[..., 2] - boxes[..., 0])


def to_crop(points: np.ndarray, boxes: np.ndarray, size: int) -> np.ndarray:
    """Original-pixel points (N, P, D>=2) -> crop pixels; a 3rd coordinate scales like x."""
    s = _scale(boxes, size)[:, None, None]
    out = points * s
    out[..., 0] -= boxes[:, None, 0] * s[..., 0]
    out[..., 1] -= boxes[:, None, 1] * s[..., 0]
    return out


def to_original(points: np.ndarray, boxes: np.ndarray, size: int) -> np.ndarray:
    """Inverse of :func:`to_crop`."""
    s = _scale(boxes, size)[:, None, None]
    out = points / s
    out[..., 0] += boxes[:, None, 0]
    out[..., 1] += boxes[:, None, 1]
    return out


def crop_frame(frame: np.ndarray, box: np.ndarray, size: int) -> np.ndarray:
    """Resample one frame's crop box to (size, size, 3); outside the frame is black.

    Downscaling low-passes first (Gaussian, sigma 0.5 px at the output scale) so fine
    texture does not alias; the geometry is exactly the affine map of :func:`to_crop`.
    """
    x0, y0, x1, _ = (float(v) for v in box)
    s = size / (x1 - x0)
    if s < 0.8:
        # Blur only the region the crop reads, with a margin for the kernel.
        sigma = 0.5 / s
        pad = int(np.ceil(3 * sigma)) + 2
        h, w = frame.shape[:2]
        ix0, iy0 = max(int(x0) - pad, 0), max(int(y0) - pad, 0)
        ix1, iy1 = min(int(np.ceil(x1)) + pad, w), min(int(np.ceil(box[3])) + pad, h)
        if ix1 <= ix0 or iy1 <= iy0:
            return np.zeros((size, size, 3), np.uint8)
        frame = cv2.GaussianBlur(frame[iy0:iy1, ix0:ix1], (0, 0), sigma)
        x0, y0 = x0 - ix0, y0 - iy0
    m = np.array([[s, 0.0, -x0 * s], [0.0, s, -y0 * s]])
    return cv2.warpAffine(
        frame, m, (size, size), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT
    )
