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
    """Resample one frame's crop box to (size, size, C); outside the frame is black.

    The geometry is exactly the affine map of :func:`to_crop`. When downscaling, the
    region around the box is first area-averaged by the largest whole factor (OpenCV's
    fast integer path), the remaining factor (0.5-1) is low-passed with a 3x3 Gaussian,
    and one sub-pixel bilinear warp finishes, so fine texture does not alias.
    """
    x0, y0, x1, _ = (float(v) for v in box)
    s = size / (x1 - x0)
    if s >= 1.0:
        m = np.array([[s, 0.0, -x0 * s], [0.0, s, -y0 * s]])
        return cv2.warpAffine(frame, m, (size, size), flags=cv2.INTER_LINEAR)
    k = int(1.0 / s)  # whole area factor >= 1
    ix0, iy0 = int(np.floor(x0)) - k, int(np.floor(y0)) - k
    n_src = k * int(np.ceil((x1 - x0 + 2 * k + 1) / k))
    small = _region(frame, ix0, iy0, n_src)
    if k > 1:
        small = cv2.resize(small, (n_src // k, n_src // k), interpolation=cv2.INTER_AREA)
    r = s * k  # what the warp still has to shrink, in (0.5, 1]
    if r < 0.9:
        small = cv2.GaussianBlur(small, (3, 3), min(0.5 / r, 1.0))
    # small pixel q covers source x = k * (q + 0.5) - 0.5 + ix0; the crop wants (x - x0) * s
    m = np.array(
        [[r, 0.0, (0.5 * k - 0.5 + ix0 - x0) * s], [0.0, r, (0.5 * k - 0.5 + iy0 - y0) * s]]
    )
    return cv2.warpAffine(small, m, (size, size), flags=cv2.INTER_LINEAR)


def _region(frame: np.ndarray, x: int, y: int, n: int) -> np.ndarray:
    """The n x n block of ``frame`` at integer (x, y); parts outside the frame are black."""
    h, w = frame.shape[:2]
    if x >= 0 and y >= 0 and x + n <= w and y + n <= h:
        return frame[y : y + n, x : x + n]
    out = np.zeros((n, n, *frame.shape[2:]), frame.dtype)
    sx0, sy0, sx1, sy1 = max(x, 0), max(y, 0), min(x + n, w), min(y + n, h)
    if sx1 > sx0 and sy1 > sy0:
        out[sy0 - y : sy1 - y, sx0 - x : sx1 - x] = frame[sy0:sy1, sx0:sx1]
    return out
