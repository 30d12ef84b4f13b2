"""Image helpers of the shoulder points: grey conversion, texture, windows, correlation."""

from __future__ import annotations

import cv2
import numpy as np

from lsp_prep.errors import InputError


def to_gray(frame: np.ndarray, *, bgr: bool = False) -> np.ndarray:
    """(H, W, 3) RGB (or BGR with ``bgr``) or (H, W) uint8 -> (H, W) uint8 grayscale."""
    frame = np.asarray(frame)
    if frame.dtype != np.uint8:
        raise InputError(f"frames must be uint8, got {frame.dtype}")
    if frame.ndim == 2:
        return frame
    if frame.ndim == 3 and frame.shape[2] == 3:
        return cv2.cvtColor(frame, cv2.COLOR_BGR2GRAY if bgr else cv2.COLOR_RGB2GRAY)
    raise InputError(f"frames must be (H, W, 3) or (H, W), got shape {frame.shape}")


def texture_map(gray: np.ndarray, *, window: int) -> np.ndarray:
    """(H, W) float32 minimum eigenvalue of each pixel's ``window`` structure tensor.

    Intensities are scaled to [0, 1] and derivatives are per pixel (Sobel / 8), and the
    tensor is averaged over the window, so the value is in (intensity / pixel)^2 and does
    not depend on the window size for a uniform texture.
    """
    g = gray.astype(np.float32) / 255.0
    ix = cv2.Sobel(g, cv2.CV_32F, 1, 0, ksize=3) / 8.0
    iy = cv2.Sobel(g, cv2.CV_32F, 0, 1, ksize=3) / 8.0
    k = (window, window)
    a = cv2.boxFilter(ix * ix, -1, k)
    b = cv2.boxFilter(ix * iy, -1, k)
    c = cv2.boxFilter(iy * iy, -1, k)
    return (a + c) / 2 - np.sqrt(((a - c) / 2) ** 2 + b * b)


def inside(points: np.ndarray, size: tuple[int, int], margin: float) -> np.ndarray:
    """(K,) bool: (K, 2) points at least ``margin`` inside an image of ``size`` (W, H)."""
    w, h = size
    x, y = points[:, 0], points[:, 1]
    return (x >= margin) & (y >= margin) & (x <= w - 1 - margin) & (y <= h - 1 - margin)


def patches(gray: np.ndarray, points: np.ndarray, window: int) -> np.ndarray:
    """(K, window, window) float32 sub-pixel windows of ``gray`` centred on (K, 2) points
    (zeros for a point that is not finite or lies far outside the image)."""
    out = np.zeros((len(points), window, window), np.float32)
    h, w = gray.shape
    for k, (x, y) in enumerate(points):
        # getRectSubPix crashes on NaN centres: callers pass tracked (finite, inside) points
        if (
            np.isfinite(x)
            and np.isfinite(y)
            and -window < x < w + window
            and -window < y < h + window
        ):
            out[k] = cv2.getRectSubPix(
                gray, (window, window), (float(x), float(y)), None, cv2.CV_32F
            )
    return out


def ncc(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """(K,) normalised cross-correlation of matching (K, w, w) windows; 1 where both flat."""
    a = a.reshape(len(a), -1)
    b = b.reshape(len(b), -1)
    a = a - a.mean(axis=1, keepdims=True)
    b = b - b.mean(axis=1, keepdims=True)
    na, nb = np.linalg.norm(a, axis=1), np.linalg.norm(b, axis=1)
    out = np.ones(len(a), np.float32)
    ok = (na > 1e-3) & (nb > 1e-3)
    out[ok] = (a[ok] * b[ok]).sum(axis=1) / (na[ok] * nb[ok])
    # a flat window against a textured one (or the other way) does not match
    out[(na > 1e-3) != (nb > 1e-3)] = 0.0
    return out
