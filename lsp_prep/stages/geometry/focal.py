"""Focal-length calibration, as in the paper: the focal length ``f`` is found by a
bracketing search on the reprojection error of a rigid fit (a shared 3D shape,
bundle-adjusted with per-frame poses) over frames chosen for pose variety; the principal
point is the image centre."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from lsp_prep.camera import focal_from_fov, intrinsics, refocus, rotvec_to_euler_xyz
from lsp_prep.constants import EYE_DISTANCE_CM
from lsp_prep.errors import InputError
from lsp_prep.stages.geometry.bundle import bundle_adjust
from lsp_prep.stages.geometry.config import CameraConfig
from lsp_prep.stages.geometry.shape import eye_pair, initial_poses, mean_shape


@dataclass(frozen=True)
class Calibration:
    """Result of :func:`calibrate_focal`."""

    focal: float
    """Focal length in original-video pixels."""
    K: np.ndarray
    """(3, 3) intrinsics of the original video."""
    curve: np.ndarray
    """(M, 2) every focal length tried and its RMS reprojection error (pixels), by focal."""
    identified: bool
    """False when the clip could not identify f and the default field of view was used."""
    reason: str
    """Why f was not identified (empty when it was)."""
    shape: np.ndarray
    """(P, 3) rigid shape of the calibration points, object coordinates (cm)."""
    frames: np.ndarray
    """(F,) frame indices used."""


def select_frames(rvec: np.ndarray, candidates: np.ndarray, n: int) -> np.ndarray:
    """Up to ``n`` of ``candidates`` spread over head rotation (farthest-point sampling)."""
    if len(candidates) <= n:
        return np.sort(candidates)
    ang = rotvec_to_euler_xyz(rvec[candidates])[:, :2]  # pitch, yaw
    chosen = [int(np.argmin(np.linalg.norm(ang - np.median(ang, 0), axis=1)))]
    dist = np.linalg.norm(ang - ang[chosen[0]], axis=1)
    for _ in range(n - 1):
        i = int(np.argmax(dist))
        chosen.append(i)
        dist = np.minimum(dist, np.linalg.norm(ang - ang[i], axis=1))
    return np.sort(candidates[chosen])


def calibrate_focal(
    points2d: np.ndarray,
    points3d: np.ndarray,
    valid: np.ndarray,
    *,
    image_size: tuple[int, int],
    stable: np.ndarray,
    config: CameraConfig = CameraConfig(),
) -> Calibration:
    """Find the focal length of the original video by a bracketing search.

    ``points2d`` (N, L, 2) landmarks in original pixels, ``points3d`` (N, L, 3) MediaPipe's
    per-frame 3D landmarks (pixels), ``valid`` (N,), ``stable`` the landmark indices of the
    rigid fit. For each candidate f the rigid shape and the poses of up to
    ``config.n_frames`` frames chosen for pose variety are bundle-adjusted (warm-started
    from the nearest focal length already tried); a coarse grid over log f, walked from
    long to short focal lengths, brackets the minimum of the RMS reprojection error, and
    golden-section steps narrow the bracket to ``rel_tolerance``.

    When the head barely turns, or the error curve does not rise on both sides of its
    minimum, f is not identified: the default field of view is used, clipped to the range
    of focal lengths whose error is within ``min_contrast`` of the minimum (so data that
    rule a focal length out are never overridden), and ``reason`` says why.
    """
    w, h = image_size
    idx = np.flatnonzero(valid)
    if len(idx) == 0:
        raise InputError("no valid frames to calibrate the camera on")
    p2, p3 = points2d[:, stable], points3d[:, stable]
    eyes = eye_pair(stable)
    shape0 = mean_shape(p3[idx], eye_corners=eyes)
    principal = np.array([(w - 1) / 2, (h - 1) / 2])
    f_default = focal_from_fov(config.default_fov_deg, w)
    rv_all, t_all = initial_poses(p3[idx], shape0, focal=f_default, principal=principal)
    frames = select_frames(rv_all, np.arange(len(idx)), config.n_frames)
    return search_focal(
        p2[idx[frames]],
        shape0,
        rv_all[frames],
        t_all[frames],
        f_default,
        image_size=image_size,
        gauge=(*eyes, EYE_DISTANCE_CM),
        frames=idx[frames],
        config=config,
    )


def search_focal(
    points2d: np.ndarray,
    shape0: np.ndarray,
    rvec0: np.ndarray,
    t0: np.ndarray,
    focal0: float,
    *,
    image_size: tuple[int, int],
    gauge: tuple[int, int, float],
    frames: np.ndarray,
    config: CameraConfig = CameraConfig(),
) -> Calibration:
    """The bracketing search of :func:`calibrate_focal` on any rigid point set.

    ``points2d`` (F, P, 2) observations in original pixels (NaN where missing) of the
    frames ``frames``; ``shape0`` (P, 3) a first rigid shape; ``rvec0``/``t0`` (F, 3)
    first poses, valid for the focal length ``focal0``. ``gauge`` = (a, b, d) holds points
    a and b at distance d (cm), which fixes the object scale.
    """
    w, _ = image_size
    a_g, b_g, dist_g = gauge
    f_default = focal_from_fov(config.default_fov_deg, w)
    spread = float(np.degrees(np.ptp(rotvec_to_euler_xyz(rvec0)[:, :2], axis=0).max()))

    # log f -> (rms, shape, rvec, T)
    solved: dict[float, tuple[float, np.ndarray, np.ndarray, np.ndarray]] = {}

    def error(logf: float, iterations: int = 40) -> float:
        if logf not in solved:
            f = float(np.exp(logf))
            if solved:
                near = min(solved, key=lambda k: abs(k - logf))
                _, shape_i, rv_i, t_i = solved[near]
                t_i = refocus(t_i, f / np.exp(near))
            else:
                shape_i, rv_i, t_i = shape0, rvec0, refocus(t0, f / focal0)
            shape, rv, t, rms = bundle_adjust(
                points2d,
                shape_i,
                rv_i,
                t_i,
                intrinsics(f, image_size),
                eyes=(a_g, b_g),
                huber_px=2.0,
                distance=dist_g,
                iterations=iterations,
            )
            solved[logf] = (rms, shape, rv, t)
        return solved[logf][0]

    lo = np.log(focal_from_fov(config.max_fov_deg, w))
    hi = np.log(focal_from_fov(config.min_fov_deg, w))
    if spread < config.min_rotation_deg:
        # the data say nothing about f: solve at the default from the first shape and poses
        # alone (warm starts from a search over f can carry a degenerate shape: a clip
        # turning 5 degrees fitted 31 px off that way)
        error(float(np.log(f_default)))
    else:
        _bracket_minimum(error, lo, hi, rel_tolerance=config.rel_tolerance)
    keys = np.array(sorted(solved))
    curve_err = np.array([solved[key][0] for key in keys])
    best = float(keys[np.argmin(curve_err)])
    e_min = solved[best][0]
    ok = keys[curve_err <= (1 + config.min_contrast) * e_min]
    reason = _unidentified(spread, curve_err / e_min - 1, config=config)
    if spread < config.min_rotation_deg:
        chosen = float(np.log(f_default))  # the data say nothing about f
        error(chosen)
    elif reason:
        chosen = float(np.clip(np.log(f_default), ok.min(), ok.max()))  # what the data allow
        error(chosen)
    else:
        chosen = best
    focal = float(np.exp(chosen))
    curve = np.stack([np.exp(keys), curve_err], axis=1)
    return Calibration(
        focal,
        intrinsics(focal, image_size),
        curve,
        not reason,
        reason,
        solved[chosen][1],
        np.asarray(frames),
    )


def _bracket_minimum(
    error: Callable[..., float], lo: float, hi: float, *, rel_tolerance: float
) -> None:
    """Evaluate ``error(log f)`` where its minimum over [``lo``, ``hi``] lies: a coarse grid
    walked from long to short focal lengths, then golden-section steps on the bracket around
    the grid's minimum until it is narrower than ``rel_tolerance`` of f. A minimum at either
    end of the range brackets nothing, and the search stops there."""
    grid = np.linspace(hi, lo, 10)  # long to short: weak perspective first, then warm starts
    # the grid only has to bracket the minimum: fewer iterations than near it
    errs = np.array([error(float(g), iterations=15) for g in grid])
    k = int(np.argmin(errs))
    a, b = sorted((grid[max(k - 1, 0)], grid[min(k + 1, len(grid) - 1)]))
    gr = (np.sqrt(5) - 1) / 2
    c, d = b - gr * (b - a), a + gr * (b - a)
    while 0 < k < len(grid) - 1 and b - a > np.log1p(rel_tolerance):
        if error(float(c)) < error(float(d)):
            b, d = d, c
            c = b - gr * (b - a)
        else:
            a, c = c, d
            d = a + gr * (b - a)


def _unidentified(spread: float, rise: np.ndarray, *, config: CameraConfig) -> str:
    """Why the focal length is not identified ("" when it is): the head's rotation
    ``spread`` (degrees) is too small, or the error curve's ``rise`` above its minimum (by
    focal length, shortest first) stays under ``min_contrast`` at one end."""
    rise_short, rise_long = rise[0], rise[-1]
    if spread < config.min_rotation_deg:
        return f"the head turns only {spread:.1f} degrees (needs {config.min_rotation_deg:g})"
    if min(rise_short, rise_long) < config.min_contrast:
        side = "long" if rise_long < rise_short else "short"
        return (
            f"the reprojection error is flat towards {side} focal lengths "
            f"(rises {min(rise_short, rise_long):.1%})"
        )
    return ""
