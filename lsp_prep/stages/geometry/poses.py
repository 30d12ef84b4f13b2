"""Head tracking: every frame's pose in one batched robust Levenberg-Marquardt over all
frames, with Huber weights and a light temporal prior."""

from __future__ import annotations

import numpy as np
from scipy.ndimage import gaussian_filter1d
from scipy.spatial.transform import Rotation

from lsp_prep.camera import project, projection_jacobian
from lsp_prep.stages.geometry.bundle import skew
from lsp_prep.stages.geometry.config import GeometryConfig


def track_poses(
    points2d: np.ndarray,
    shape: np.ndarray,
    rvec0: np.ndarray,
    t0: np.ndarray,
    K: np.ndarray,
    *,
    weights: np.ndarray | None = None,
    config: GeometryConfig = GeometryConfig(),
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Fit every frame's pose at once: batched Levenberg-Marquardt with Huber weights,
    then a temporal prior that pulls each pose towards its smoothed trajectory.

    ``points2d`` (N, P, 2) observed pixels (NaN where missing), ``shape`` (P, 3) object
    points, initial ``rvec0``/``t0`` (N, 3). Each frame has its own damping and accepts a
    step only when its cost drops. Returns rvec (N, 3), T (N, 3) and the RMS reprojection
    error per frame (N,) in pixels.
    """
    n = len(points2d)
    seen = np.isfinite(points2d).all(-1)
    obs = np.where(seen[..., None], points2d, 0.0)
    w_pts = seen.astype(float) if weights is None else seen * weights
    hub = config.huber_px

    def evaluate(rmat, t, prior):
        rx = np.einsum("nij,pj->npi", rmat, shape)
        cam = rx + t[:, None]
        r = project(cam, K) - obs
        norm = np.linalg.norm(r, axis=-1)
        rho = np.where(norm <= hub, 0.5 * norm**2, hub * (norm - 0.5 * hub)) * w_pts
        cost = rho.sum(1)
        if prior is not None:
            lam, rv_s, t_s = prior
            d_rot = (Rotation.from_rotvec(rv_s) * Rotation.from_matrix(rmat).inv()).as_rotvec()
            cost = cost + 0.5 * lam * (((d_rot * 57.3) ** 2).sum(1) + ((t_s - t) ** 2).sum(1))
        bad = (cam[..., 2] <= 0).any(1)
        return np.where(bad, np.inf, cost), r, rx, cam, norm

    rmat = Rotation.from_rotvec(rvec0).as_matrix()
    t = t0.astype(float).copy()
    mu = np.full(n, 1e-3)
    prior = None
    cost, r, rx, cam, norm = evaluate(rmat, t, prior)
    for it in range(config.iterations):
        if (
            it == config.iterations // 2
            and config.prior_weight > 0
            and config.smooth_frames > 0
            and n > 2
        ):
            rv_now = Rotation.from_matrix(rmat).as_rotvec()
            rv_s = gaussian_filter1d(rv_now, config.smooth_frames, axis=0, mode="nearest")
            t_s = gaussian_filter1d(t, config.smooth_frames, axis=0, mode="nearest")
            prior = (config.prior_weight * w_pts.sum(1), rv_s, t_s)
            cost, r, rx, cam, norm = evaluate(rmat, t, prior)
        du = projection_jacobian(cam, K)
        jac = np.concatenate([-(du @ skew(rx)), du], axis=-1)  # (N, P, 2, 6)
        w = np.where(norm <= hub, 1.0, hub / np.maximum(norm, 1e-9)) * w_pts
        jw = jac * w[..., None, None]
        h = jw.transpose(0, 3, 1, 2).reshape(n, 6, -1) @ jac.reshape(n, -1, 6)
        g = np.einsum("npki,npk->ni", jw, r)
        if prior is not None:
            lam, rv_s, t_s = prior
            d_rot = (Rotation.from_rotvec(rv_s) * Rotation.from_matrix(rmat).inv()).as_rotvec()
            scale = np.array([57.3**2] * 3 + [1.0] * 3)
            h = h + lam[:, None, None] * np.diag(scale)
            g = g - lam[:, None] * scale * np.concatenate([d_rot, t_s - t], axis=1)
        damp = mu[:, None, None] * (
            np.diagonal(h, axis1=1, axis2=2)[:, :, None] * np.eye(6) + 1e-9 * np.eye(6)
        )
        step = -np.linalg.solve(h + damp, g[..., None])[..., 0]
        new_rmat = Rotation.from_rotvec(step[:, :3]).as_matrix() @ rmat
        new_t = t + step[:, 3:]
        c_new, r_new, rx_new, cam_new, norm_new = evaluate(new_rmat, new_t, prior)
        ok = c_new < cost
        rmat[ok], t[ok], cost[ok] = new_rmat[ok], new_t[ok], c_new[ok]
        r[ok], rx[ok], cam[ok], norm[ok] = r_new[ok], rx_new[ok], cam_new[ok], norm_new[ok]
        mu = np.where(ok, np.maximum(mu / 10, 1e-7), np.minimum(mu * 10, 1e8))
    err = np.linalg.norm(r, axis=-1)
    rms = np.sqrt((err**2 * seen).sum(1) / np.maximum(seen.sum(1), 1))
    rms[~seen.any(1)] = np.nan
    return Rotation.from_matrix(rmat).as_rotvec(), t, rms
