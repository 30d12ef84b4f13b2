"""The numbers of ``lsp eval``: mouth point distances and opening, head-pose statistics,
and image similarity (L1, PSNR, SSIM), each a pure function on arrays."""

from __future__ import annotations

import math

import numpy as np
import torch

from lsp_prep.errors import InputError
from lsp_prep.layout import Layout

POSE_DIMS = ("pitch", "yaw", "roll", "x", "y", "z")
POSE_UNITS = ("deg", "deg", "deg", "mm", "mm", "mm")
INNER_LIP_MIDPOINTS = (13, 14)
"""MediaPipe Face Mesh indices of the upper and lower inner-lip midpoints."""
CM_TO_MM = 10.0
"""Dataset lengths are nominal cm (9 cm outer-eye distance)."""


def point_distance(pred: np.ndarray, target: np.ndarray) -> float:
    """Mean Euclidean distance (mm) between points (N, P, 3) given in cm: averaged over
    frames and points. NaN for N = 0."""
    if pred.shape != target.shape or pred.shape[-1] != 3:
        raise InputError(
            f"point_distance needs equal (N, P, 3) arrays, got {pred.shape}, {target.shape}"
        )
    if pred.size == 0:
        return math.nan
    return float(np.linalg.norm(pred - target, axis=-1).mean() * CM_TO_MM)


def inner_lip_indices(layout: Layout) -> tuple[int, int]:
    """Positions of the upper and lower inner-lip midpoints within the 25 mouth points."""
    mouth = list(layout.mouth)
    out = []
    for mp in INNER_LIP_MIDPOINTS:
        lsp = np.flatnonzero(layout.mediapipe_index == mp)
        if len(lsp) != 1 or int(lsp[0]) not in mouth:
            raise InputError(f"layout {layout.name}: MediaPipe point {mp} is not a mouth point")
        out.append(mouth.index(int(lsp[0])))
    return out[0], out[1]


def mouth_opening(points: np.ndarray, *, lips: tuple[int, int]) -> np.ndarray:
    """Mouth opening (N,) mm: distance between the inner-lip midpoints ``lips`` of the
    mouth points (N, 25, 3) in cm (mean shape + dv_m)."""
    return np.linalg.norm(points[:, lips[0]] - points[:, lips[1]], axis=-1) * CM_TO_MM


def correlation(a: np.ndarray, b: np.ndarray) -> float:
    """Pearson correlation of two series (N,); NaN when either is constant or N < 2."""
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    if len(a) < 2 or a.std() == 0 or b.std() == 0:
        return math.nan
    return float(np.corrcoef(a, b)[0, 1])


def pose_statistics(pose: np.ndarray, valid: np.ndarray | None = None) -> dict[str, np.ndarray]:
    """Statistics of poses (N, 6) (pitch, yaw, roll radians; translation cm) over the
    ``valid`` frames: ``mean``, ``std`` and ``mean_abs_velocity`` (per frame, over pairs of
    consecutive valid frames), each (6,) in degrees and mm."""
    pose = np.asarray(pose, np.float64)
    ok = np.ones(len(pose), bool) if valid is None else np.asarray(valid, bool)
    scale = np.array([180 / math.pi] * 3 + [CM_TO_MM] * 3)
    x = pose * scale
    pairs = ok[1:] & ok[:-1]
    vel = np.abs(np.diff(x, axis=0))[pairs]
    nan = np.full(6, np.nan)
    return {
        "mean": x[ok].mean(0) if ok.any() else nan,
        "std": x[ok].std(0) if ok.any() else nan,
        "mean_abs_velocity": vel.mean(0) if len(vel) else nan,
    }


def l1_error(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Mean absolute difference per image (B,) of uint8 images (B, H, W, C), 0-255 scale."""
    d = np.abs(a.astype(np.float64) - b.astype(np.float64))
    return d.reshape(len(d), -1).mean(1)


def psnr(a: np.ndarray, b: np.ndarray, *, data_range: float = 255.0) -> np.ndarray:
    """PSNR per image (B,) in dB: ``10 log10(data_range^2 / MSE)``; inf for equal images."""
    d = a.astype(np.float64) - b.astype(np.float64)
    mse = (d**2).reshape(len(d), -1).mean(1)
    with np.errstate(divide="ignore"):
        return 10 * np.log10(data_range**2 / mse)


def gaussian_window(size: int = 11, sigma: float = 1.5) -> np.ndarray:
    """Normalised 1-D Gaussian (size,), centred."""
    x = np.arange(size) - (size - 1) / 2
    w = np.exp(-(x**2) / (2 * sigma**2))
    return w / w.sum()


def ssim(
    a: np.ndarray,
    b: np.ndarray,
    *,
    data_range: float = 255.0,
    win_size: int = 11,
    sigma: float = 1.5,
    k1: float = 0.01,
    k2: float = 0.03,
) -> np.ndarray:
    """Structural similarity per image (B,) of images (B, H, W, C) (any dtype, values in
    ``[0, data_range]``): Wang et al. 2004 with a Gaussian window (``win_size`` taps,
    ``sigma``), population (co)variances, computed per channel on the "valid" region (no
    padding: the window never leaves the image) and averaged over the region and the
    channels. Identical images give 1."""
    if a.shape != b.shape or a.ndim != 4:
        raise InputError(f"ssim needs equal (B, H, W, C) arrays, got {a.shape}, {b.shape}")
    if min(a.shape[1:3]) < win_size:
        raise InputError(f"ssim needs images of at least {win_size}x{win_size}, got {a.shape}")
    w = torch.from_numpy(gaussian_window(win_size, sigma))
    c = a.shape[-1]
    kx = w.view(1, 1, 1, -1).repeat(c, 1, 1, 1)  # (C, 1, 1, win)
    ky = w.view(1, 1, -1, 1).repeat(c, 1, 1, 1)  # (C, 1, win, 1)

    def filt(x: torch.Tensor) -> torch.Tensor:  # (B, C, H, W) -> (B, C, H - win + 1, ...)
        x = torch.nn.functional.conv2d(x, kx, groups=c)
        return torch.nn.functional.conv2d(x, ky, groups=c)

    x = torch.from_numpy(np.asarray(a, np.float64)).permute(0, 3, 1, 2)  # (B, C, H, W)
    y = torch.from_numpy(np.asarray(b, np.float64)).permute(0, 3, 1, 2)
    mx, my = filt(x), filt(y)
    vx = filt(x * x) - mx * mx
    vy = filt(y * y) - my * my
    cxy = filt(x * y) - mx * my
    c1, c2 = (k1 * data_range) ** 2, (k2 * data_range) ** 2
    s = ((2 * mx * my + c1) * (2 * cxy + c2)) / ((mx**2 + my**2 + c1) * (vx + vy + c2))
    return s.mean(dim=(1, 2, 3)).numpy()
