"""The billboard: the tracked points back-projected to a plane at the mean face depth."""

from __future__ import annotations

from typing import Literal

import numpy as np

from lsp_prep.errors import InputError


def billboard(
    points2d: np.ndarray,
    valid: np.ndarray,
    *,
    intrinsics: np.ndarray,
    depth: float,
    reference: Literal["first", "median"] = "first",
) -> np.ndarray:
    """Lift tracked points onto the billboard plane ``z = depth``: (P, 3) camera coordinates.

    ``points2d`` (N, P, 2) and ``valid`` (N, P) as :func:`track_points` returns them;
    ``intrinsics`` the crop's camera matrix K, (3, 3) or per frame (N, 3, 3); ``depth`` the
    mean face depth in camera units. Each point is back-projected ``X = depth * K^-1 (u, v,
    1)`` from ``reference="first"``: its position on the first frame where it is valid (with
    that frame's K), so ``K @ X / depth`` gives that position back exactly; or
    ``"median"``: the per-axis median of the back-projections over all its valid frames
    (robust to a bad first frame, no longer exact on any single frame). A point valid on no
    frame gets NaN.
    """
    pts = np.asarray(points2d, np.float64)
    valid = np.asarray(valid, bool)
    if pts.ndim != 3 or pts.shape[2] != 2:
        raise InputError(f"points2d must be (N, P, 2), got shape {pts.shape}")
    n, p = pts.shape[:2]
    if valid.shape != (n, p):
        raise InputError(f"valid must be (N, P) = ({n}, {p}), got shape {valid.shape}")
    k = np.asarray(intrinsics, np.float64)
    if k.shape == (3, 3):
        k = np.broadcast_to(k, (n, 3, 3))
    if k.shape != (n, 3, 3):
        raise InputError(f"intrinsics must be (3, 3) or (N, 3, 3) = ({n}, 3, 3), got {k.shape}")
    if not np.isfinite(k).all() or np.any(np.abs(np.linalg.det(k)) < 1e-12):
        raise InputError("intrinsics must be finite, invertible camera matrices")
    if not (np.isfinite(depth) and depth > 0):
        raise InputError(f"depth must be a positive distance, got {depth}")
    if reference not in ("first", "median"):
        raise InputError(f"reference must be 'first' or 'median', got {reference!r}")
    valid = valid & np.isfinite(pts).all(axis=2)
    out = np.full((p, 3), np.nan)
    k_inv = np.linalg.inv(k)  # (N, 3, 3)
    for j in range(p):
        frames = np.flatnonzero(valid[:, j])
        if len(frames) == 0:
            continue
        if reference == "first":
            frames = frames[:1]
        uv1 = np.concatenate([pts[frames, j], np.ones((len(frames), 1))], axis=1)  # (F, 3)
        rays = np.einsum("fij,fj->fi", k_inv[frames], uv1)  # (F, 3)
        xyz = depth * rays / rays[:, 2:3]
        out[j] = np.median(xyz, axis=0)
    return out
