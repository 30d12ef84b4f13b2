"""The face-centred square crop: one box per frame, smoothed in time, fixed size per clip.

A crop box is ``(x0, y0, x1, y1)`` in original-video pixels with ``x1 - x0 == y1 - y0``.
A point ``p`` of the original frame maps to the crop as ``(p - (x0, y0)) * size / side``;
:func:`lsp_prep.camera.to_crop` and :func:`~lsp_prep.camera.to_original` are that map
and its inverse. The box size is fixed
per clip (so the camera intrinsics of the crop stay one 3x3 matrix); its centre follows
the face through a Gaussian low-pass so the crop never jitters with the landmarks.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np
from scipy.ndimage import gaussian_filter1d

from lsp_prep.camera import boxes_at, keep_inside
from lsp_prep.errors import InputError


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
    """Keep the box inside the frame: no larger than the frame's shorter side, and shifted
    to stay inside, so close-ups do not get black bars."""

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
    if config.keep_inside:
        side = min(side, float(min(frame_size)))
    t, good = np.arange(n), np.flatnonzero(valid)
    c = np.stack([np.interp(t, good, centres[good, k]) for k in range(2)], axis=1)
    c[:, 1] += config.offset_y * side
    if config.smoothing_s > 0 and n > 1:
        c = gaussian_filter1d(c, sigma=config.smoothing_s * fps, axis=0, mode="nearest")
    if config.keep_inside:
        c = keep_inside(c, side, frame_size)
    return boxes_at(c, side)


def crop_frame(
    frame: np.ndarray,
    box: np.ndarray,
    size: int,
    *,
    frame_scale: tuple[float, float] = (1.0, 1.0),
) -> np.ndarray:
    """Resample one frame's crop box to (size, size, C); outside the frame is black.

    ``box`` is in original pixels; ``frame_scale`` = (kx, ky) says ``frame`` is the
    original resampled by that factor (pixel centres aligned), as ffmpeg's scaler does.
    The geometry is exactly the affine map of :func:`lsp_prep.camera.to_crop`. When
    downscaling, the region around the box is first area-averaged by the largest whole
    factor (OpenCV's fast
    integer path), a remaining factor below 0.8 is low-passed with a 3x3 Gaussian, and one
    sub-pixel bilinear warp finishes, so fine texture does not alias.
    """
    kx, ky = frame_scale
    x0, y0, x1, _ = (float(v) for v in box)
    s = size / (x1 - x0)  # original -> crop
    # frame pixel q sits at original x = (q + 0.5) / kx - 0.5; the crop wants (x - x0) * s
    sx, sy = s / kx, s / ky  # frame -> crop
    ox, oy = (0.5 / kx - 0.5 - x0) * s, (0.5 / ky - 0.5 - y0) * s
    if min(sx, sy) >= 1.0:
        m = np.array([[sx, 0.0, ox], [0.0, sy, oy]])
        return cv2.warpAffine(frame, m, (size, size), flags=cv2.INTER_LINEAR)
    k = max(1, int(1.0 / max(sx, sy)))  # whole area factor
    # the frame region the crop reads, with a margin of k pixels
    fx0, fy0 = int(np.floor(-ox / sx)) - k, int(np.floor(-oy / sy)) - k
    n_src = k * int(np.ceil((size / min(sx, sy) + 2 * k + 1) / k))
    small = _region(frame, fx0, fy0, n_src)
    if k > 1:
        small = cv2.resize(small, (n_src // k, n_src // k), interpolation=cv2.INTER_AREA)
    rx, ry = sx * k, sy * k  # what the warp still has to shrink
    if min(rx, ry) < 0.8:
        small = cv2.GaussianBlur(small, (3, 3), min(0.5 / min(rx, ry), 1.0))
    # small pixel p covers frame q = k * (p + 0.5) - 0.5 + fx0
    m = np.array(
        [[rx, 0.0, ox + sx * (0.5 * k - 0.5 + fx0)], [0.0, ry, oy + sy * (0.5 * k - 0.5 + fy0)]]
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
