"""Which texture features move with the skull: rigidity learned from the clip's residuals.

A face is not rigid. Brows rise, cheeks lift in a smile, the nose's wings follow the upper
lip, the lids close, and a feature on any of them drags a rigid fit off the skull. Because
a face is shallow (a few centimetres of depth seen from tens of centimetres away), a
millimetre of such motion on a few features is enough to turn the fitted head by degrees
(measured on expressive renders: exact projections of the skull points with Face Mesh's
per-frame jitter on them alone give 3.4 degrees of median rotation error).

So the refinement does not trust every feature equally. It fits one rigid shape and every
frame's pose to the features (a bundle adjustment), measures each feature's RMS residual
over the clip, and weights it by ``1 / (1 + (rms / s)^2)`` with ``s`` a fraction of the
median residual, then fits again; three rounds. Features that move with expression get
small weights and stop voting; features on the skull (forehead, nose bridge, temples,
eye corners) carry the fit. A tight Huber threshold (half a pixel) also discounts single
observations where a feature is briefly pulled away (a smile, a hand).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.spatial.transform import Rotation

from lsp_prep.camera import project
from lsp_prep.stages.geometry.bundle import bundle_adjust
from lsp_prep.stages.geometry.shape import triangulate


@dataclass(frozen=True)
class RigidityConfig:
    """How the refinement learns which features are rigid (see the module docstring)."""

    rounds: int = 3
    """Reweighted bundle adjustments after the first, unweighted one (0: all features
    count fully)."""
    scale: float = 0.5
    """``s`` of the weights, as a fraction of the median feature residual."""
    huber_px: float = 0.5
    """Huber threshold of the feature fits (pixels, original video)."""


@dataclass(frozen=True)
class RigidFit:
    """A rigid shape of the features, the poses it was fitted with, and each feature's
    rigidity."""

    shape: np.ndarray
    """(P, 3) object points of the features (NaN where a feature could not be placed)."""
    rotation: np.ndarray
    """(F, 3) rotation vectors of the fitted frames."""
    translation: np.ndarray
    """(F, 3) translations of the fitted frames."""
    weights: np.ndarray
    """(P,) in (0, 1]: how much each feature counts (0 where it could not be placed)."""
    residual: np.ndarray
    """(P,) RMS reprojection residual of each feature over the frames (pixels)."""


def feature_residuals(
    points2d: np.ndarray, shape: np.ndarray, rvec: np.ndarray, trans: np.ndarray, K: np.ndarray
) -> np.ndarray:
    """(F, P) distance (pixels) between observed ``points2d`` (F, P, 2) and ``shape``
    (P, 3) posed by ``rvec``/``trans`` (F, 3); NaN where not observed."""
    cam = np.einsum("fij,pj->fpi", Rotation.from_rotvec(rvec).as_matrix(), shape)
    return np.linalg.norm(project(cam + trans[:, None], K) - points2d, axis=-1)


def rigidity_weights(residuals: np.ndarray, *, scale: float) -> tuple[np.ndarray, np.ndarray]:
    """Per-feature weights (P,) and RMS residuals (P,) from ``residuals`` (F, P) pixels
    (NaN where not observed): ``1 / (1 + (rms / (scale * median rms))^2)``; features
    never observed get weight 0."""
    seen = np.isfinite(residuals)
    sq = np.where(seen, residuals, 0.0) ** 2
    rms = np.sqrt(sq.sum(0) / np.maximum(seen.sum(0), 1))
    rms[seen.sum(0) == 0] = np.nan
    s = scale * max(float(np.nanmedian(rms)), 1e-6)
    w = 1.0 / (1.0 + (rms / s) ** 2)
    return np.where(np.isfinite(w), w, 0.0), rms


def rigid_fit(
    points2d: np.ndarray,
    shape0: np.ndarray,
    rvec0: np.ndarray,
    t0: np.ndarray,
    K: np.ndarray,
    *,
    rounds: int = 3,
    scale: float = 0.5,
    huber_px: float = 0.5,
    iterations: int = 60,
    max_points: int = 160,
) -> RigidFit:
    """Bundle-adjust the features ``points2d`` (F, P, 2; NaN where missing) from the first
    shape ``shape0`` (P, 3; NaN rows are left out) and poses ``rvec0``/``t0`` (F, 3), then
    ``rounds`` more times with the rigidity weights of the previous round's residuals.

    The bundle adjustment works on up to ``max_points`` features spread over the list (its
    cost grows with the cube of their number); after each round every feature is
    triangulated from its poses and weighted by its residuals. The object scale is held
    by the two adjusted points farthest apart, at their distance in ``shape0``.
    """
    keep = np.isfinite(shape0).all(1) & (np.isfinite(points2d[..., 0]).sum(0) >= 2)
    idx = np.flatnonzero(keep)
    pick = np.unique(np.linspace(0, len(idx) - 1, min(len(idx), max_points)).round())
    sub = idx[pick.astype(np.int64)]
    s0 = shape0[sub]
    d = np.linalg.norm(s0[:, None] - s0[None], axis=-1)
    a, b = np.unravel_index(int(np.argmax(d)), d.shape)
    w = np.ones(len(idx))
    shape, rv, tr = shape0[idx], rvec0, t0
    where = np.searchsorted(idx, sub)  # positions of the adjusted points among idx
    for _ in range(rounds + 1):
        _, rv, tr, _ = bundle_adjust(
            points2d[:, sub],
            shape[where],
            rv,
            tr,
            K,
            eyes=(int(a), int(b)),
            huber_px=huber_px,
            distance=float(d[a, b]),
            iterations=iterations,
            weights=w[where],
        )
        shape = triangulate(points2d[:, idx], rv, tr, K)
        w, rms = rigidity_weights(
            feature_residuals(points2d[:, idx], shape, rv, tr, K), scale=scale
        )
    n_p = len(shape0)
    full_shape = np.full((n_p, 3), np.nan)
    full_w, full_rms = np.zeros(n_p), np.full(n_p, np.nan)
    full_shape[idx], full_w[idx], full_rms[idx] = shape, w, rms
    return RigidFit(full_shape, rv, tr, full_w, full_rms)
