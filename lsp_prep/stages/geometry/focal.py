"""Focal-length calibration, as in the paper: the focal length ``f`` is found by a
bracketing search on the reprojection error of a rigid fit (a shared 3D shape,
bundle-adjusted with per-frame poses) over frames chosen for pose variety; the principal
point is the image centre."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from scipy.spatial.transform import Rotation

from lsp_prep.camera import (
    focal_from_fov,
    intrinsics,
    project,
    refocus,
    rotvec_to_euler_xyz,
)
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
    interval: tuple[float, float] = (np.nan, np.nan)
    """The ``interval_level`` interval (pixels) of the focal length at the minimum of
    ``curve`` (:func:`minimum_interval`); NaN when the head turns too little to search."""
    source: str = "landmarks"
    """Whose focal length ``focal`` is: ``"landmarks"`` or ``"features"`` (the curve of
    that calibration identified it), or ``"default"`` (the default field of view, kept
    within what the data allow)."""
    landmark_interval: tuple[float, float] = (np.nan, np.nan)
    """The landmarks' curve's interval (this one's when the landmarks' is this curve; else
    that of the ``fallback`` calibration of :func:`search_focal`)."""
    bounded: bool = True
    """The curve's ``interval`` lies inside the searched range, away from both ends: the
    data rule out a much flatter and a much deeper face (the features' poses are used only
    then). Not a contrast threshold on the curve: on the 6 s expressive render of the tests
    the error rises 3.5 % towards long focal lengths, near the 3 % such a rule once used, so
    a 0.1 % change of the crop upstream flipped the whole refinement; the real clips whose
    features do not fix f have their minimum at the searched range's end (pexels, its
    re-encoding and its mirror image: 8 degrees of field of view, rise 0.0 %)."""


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
    name: str = "landmarks",
    fallback: Calibration | None = None,
    groups: np.ndarray | None = None,
) -> Calibration:
    """The bracketing search of :func:`calibrate_focal` on any rigid point set.

    ``points2d`` (F, P, 2) observations in original pixels (NaN where missing) of the
    frames ``frames``; ``shape0`` (P, 3) a first rigid shape; ``rvec0``/``t0`` (F, 3)
    first poses, valid for the focal length ``focal0``. ``gauge`` = (a, b, d) holds points
    a and b at distance d (cm), which fixes the object scale.

    The focal length is identified when its ``config.interval_level`` interval
    (:func:`minimum_interval`, points resampled by ``groups`` (P,) labels, each point
    alone if None) lies inside the searched range and is narrower than
    ``config.max_interval`` of f; it is then this curve's minimum and ``source`` is
    ``name``. Otherwise it is ``fallback``'s focal length where that calibration (of the
    same clip, on other points) identified it, else the default field of view, kept within
    the focal lengths whose error is within ``config.min_contrast`` of the minimum (data
    that rule a focal length out are never overridden; a curve that does not identify f
    is not trusted to rule out more: its interval measures the sampling noise, not the
    pull of expressions, which on the expressive render put all of it, 545-943 px, below
    the true 900). The shape is fitted at the focal length chosen.
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
    turns = spread >= config.min_rotation_deg
    if not turns:
        # the data say nothing about f: solve at the default from the first shape and poses
        # alone (warm starts from a search over f can carry a degenerate shape: a clip
        # turning 5 degrees fitted 31 px off that way)
        error(float(np.log(f_default)))
    else:
        _bracket_minimum(error, lo, hi, rel_tolerance=config.rel_tolerance)
    keys = np.array(sorted(solved))
    curve_err = np.array([solved[key][0] for key in keys])
    best = float(keys[np.argmin(curve_err)])
    interval = (np.nan, np.nan)
    searched = (float(np.exp(lo)), float(np.exp(hi)))
    if turns:
        cost = np.stack(
            [
                squared_residuals(points2d, *solved[k][1:], intrinsics(np.exp(k), image_size))
                for k in keys
            ]
        )
        log_lo, log_hi = minimum_interval(
            keys, cost, level=config.interval_level, n_boot=config.n_boot, groups=groups
        )
        interval = (float(np.exp(log_lo)), float(np.exp(log_hi)))
    bounded = turns and not _open_side(interval, searched)
    reason = _unidentified(spread, interval, float(np.exp(best)), searched, config=config)
    source, log_default = name, float(np.log(f_default))
    if not reason:
        focal = float(np.exp(best))
    elif fallback is not None and fallback.source != "default":
        focal, source = fallback.focal, fallback.source
    elif not turns:
        focal, source = f_default, "default"  # the data say nothing about f
    else:  # what the data allow
        ok = keys[curve_err <= (1 + config.min_contrast) * curve_err.min()]
        focal, source = float(np.exp(np.clip(log_default, ok.min(), ok.max()))), "default"
    chosen = best if not reason else float(np.log(focal))
    error(chosen)
    curve = np.stack([np.exp(keys), curve_err], axis=1)
    return Calibration(
        focal,
        intrinsics(focal, image_size),
        curve,
        source != "default",
        reason,
        solved[chosen][1],
        np.asarray(frames),
        interval,
        source,
        interval if fallback is None else fallback.landmark_interval,
        bounded,
    )


def describe(cal: Calibration, *, level: float) -> str:
    """One line for prep's summary: the focal length, where it comes from and its
    ``level`` interval (the interval of the curve stored with it)."""
    lo, hi = cal.interval
    span = f"{level:.0%} interval {lo:.0f}-{hi:.0f} px" if np.isfinite(lo) else "no interval"
    if cal.source == "default":
        return f"focal length not identified: {cal.reason}; used {cal.focal:.0f} px"
    if cal.reason:  # the features' curve did not identify f; the landmarks' did
        return (
            f"focal length {cal.focal:.0f} px from the {cal.source}; the texture features "
            f"do not fix it ({cal.reason})"
        )
    return f"focal length {cal.focal:.0f} px from the {cal.source} ({span})"


def point_groups(points: np.ndarray, n: int) -> np.ndarray:
    """(P,) labels: ``points`` (P, D) grouped with their neighbours, each to the nearest of
    ``n`` seeds spread over them (farthest-point sampling from the first point)."""
    seeds = [0]
    dist = np.linalg.norm(points - points[0], axis=1)
    for _ in range(min(n, len(points)) - 1):
        seeds.append(int(np.argmax(dist)))
        dist = np.minimum(dist, np.linalg.norm(points - points[seeds[-1]], axis=1))
    return np.argmin(np.linalg.norm(points[:, None] - points[seeds], axis=-1), axis=1)


def squared_residuals(
    points2d: np.ndarray, shape: np.ndarray, rvec: np.ndarray, t: np.ndarray, K: np.ndarray
) -> np.ndarray:
    """(F, P) squared reprojection error (pixels^2) of ``shape`` (P, 3) seen with the
    poses ``rvec``, ``t`` (F, 3) through ``K`` against ``points2d`` (F, P, 2); 0 where a
    point is missing (NaN)."""
    cam = np.einsum("fij,pj->fpi", Rotation.from_rotvec(rvec).as_matrix(), shape) + t[:, None]
    d2 = ((project(cam, K) - points2d) ** 2).sum(-1)
    return np.where(np.isfinite(d2), d2, 0.0)


def minimum_interval(
    log_f: np.ndarray,
    cost: np.ndarray,
    *,
    level: float,
    n_boot: int,
    groups: np.ndarray | None = None,
    seed: int = 0,
) -> tuple[float, float]:
    """The ``level`` interval (``lo``, ``hi``) of log f at the minimum of an error curve,
    by a two-way bootstrap over frames and points.

    ``log_f`` (M,) the focal lengths tried (log pixels, ascending), ``cost`` (M, F, P) each
    observation's cost under the fit at each of them (:func:`squared_residuals`: frame f,
    point p; 0 where not seen). The observations are not independent: residuals correlate
    within a frame (its pose error, the expression of that moment) and within a point (a
    landmark placed off the skull, a feature that moves with expression) or a group of
    points (``groups`` (P,) labels: a brow's features rise together), so frames and groups
    are resampled independently, each with replacement, and a resample's curve is the sum
    of its observations' costs at each focal length (a pair counted as often as its frame
    times its group). Resampling both ways overstates the spread a little rather than
    understate it. Its minimum is the vertex of the parabola (in log f) through the lowest
    point and its two neighbours; a minimum at the first or last focal length is that end,
    so an interval reaching an end is open on that side. The fits are not redone per
    resample (its curve is its cost under the full data's fits, each an upper bound of its
    own best fit at that f), so ``n_boot`` resamples cost a few matrix products.
    """
    m, n_f, n_p = cost.shape
    if m < 3:
        return float(log_f[0]), float(log_f[-1])
    labels = np.arange(n_p) if groups is None else np.unique(groups, return_inverse=True)[1]
    n_g = int(labels.max()) + 1
    rng = np.random.default_rng(seed)
    w_f = _counts(rng.integers(0, n_f, (n_boot, n_f)), n_f)  # (B, F)
    w_p = _counts(rng.integers(0, n_g, (n_boot, n_g)), n_g)[:, labels]  # (B, P)
    curves = np.einsum("bf,mfb->bm", w_f, cost @ w_p.T)  # (B, M)
    k = np.argmin(curves, axis=1)
    mid = np.clip(k, 1, m - 2)
    x = np.stack([log_f[mid - 1], log_f[mid], log_f[mid + 1]], 1)
    y = np.take_along_axis(curves, np.stack([mid - 1, mid, mid + 1], 1), axis=1)
    at = np.where(k == 0, log_f[0], np.where(k == m - 1, log_f[-1], _vertex(x, y)))
    q = (1 - level) / 2
    return float(np.quantile(at, q)), float(np.quantile(at, 1 - q))


def _counts(draws: np.ndarray, n: int) -> np.ndarray:
    """(B, n) how often each of ``n`` items occurs in each row of ``draws`` (B, n)."""
    out = np.zeros((len(draws), n))
    np.add.at(out, (np.arange(len(draws))[:, None], draws), 1.0)
    return out


def _vertex(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Per row, the abscissa of the minimum of the parabola through the three points
    ``x``, ``y`` (B, 3) (x ascending), kept within [x0, x2]; x1 where it does not open up."""
    (x0, x1, x2), (y0, y1, y2) = x.T, y.T
    d01, d12 = (y1 - y0) / (x1 - x0), (y2 - y1) / (x2 - x1)
    curv = (d12 - d01) / (x2 - x0)  # half the second derivative
    with np.errstate(divide="ignore", invalid="ignore"):
        v = (x0 + x1) / 2 - d01 / (2 * curv)
    return np.where(curv > 0, np.clip(v, x0, x2), x1)


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


def _open_side(interval: tuple[float, float], searched: tuple[float, float]) -> str:
    """``"short"`` or ``"long"`` when the ``interval`` (pixels) reaches that end of the
    ``searched`` range (the curve does not bound f there; :func:`minimum_interval` returns
    the end itself), else ``""``."""
    if interval[0] <= searched[0] * (1 + 1e-9):
        return "short"
    if interval[1] >= searched[1] * (1 - 1e-9):
        return "long"
    return ""


def _unidentified(
    spread: float,
    interval: tuple[float, float],
    focal: float,
    searched: tuple[float, float],
    *,
    config: CameraConfig,
) -> str:
    """Why the focal length is not identified ("" when it is): the head's rotation
    ``spread`` (degrees) is too small, or the ``interval`` (pixels) of the curve's minimum
    ``focal`` is open towards an end of the ``searched`` range or wider than
    ``config.max_interval`` of f."""
    if spread < config.min_rotation_deg:
        return f"the head turns only {spread:.1f} degrees (needs {config.min_rotation_deg:g})"
    lo, hi = interval
    pct = f"{config.interval_level:.0%}"
    side = _open_side(interval, searched)
    if side:
        return (
            f"the reprojection error does not bound f towards {side} focal lengths "
            f"({pct} interval {lo:.0f}-{hi:.0f} px)"
        )
    width = (hi - lo) / focal
    if width > config.max_interval:
        return (
            f"the reprojection error hardly changes with f: its {pct} interval, "
            f"{lo:.0f}-{hi:.0f} px, is {width:.0%} of f wide (needs under "
            f"{config.max_interval:.0%})"
        )
    return ""
