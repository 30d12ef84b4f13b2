"""Bundle adjustment: one shared rigid shape and per-frame poses minimising the
reprojection error (the inner solve of the focal search)."""

from __future__ import annotations

import numpy as np
from scipy.linalg import cho_factor, cho_solve
from scipy.spatial.transform import Rotation

from lsp_prep.camera import project
from lsp_prep.constants import EYE_DISTANCE_CM


def skew(v: np.ndarray) -> np.ndarray:
    """(..., 3) -> (..., 3, 3) cross-product matrices."""
    z = np.zeros(v.shape[:-1])
    return np.stack(
        [
            np.stack([z, -v[..., 2], v[..., 1]], -1),
            np.stack([v[..., 2], z, -v[..., 0]], -1),
            np.stack([-v[..., 1], v[..., 0], z], -1),
        ],
        -2,
    )


def bundle_adjust(
    pts2d: np.ndarray,
    shape0: np.ndarray,
    rvec0: np.ndarray,
    t0: np.ndarray,
    K: np.ndarray,
    *,
    eyes: tuple[int, int],
    huber_px: float,
    shape_prior: float = 0.05,
    iterations: int = 100,
    distance: float = EYE_DISTANCE_CM,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, float]:
    """Shared shape + per-frame poses minimising reprojection error.

    Levenberg-Marquardt with analytic Jacobians and Huber weights (IRLS); each step
    eliminates the per-frame 6x6 pose blocks (Schur complement) and solves the dense
    shape system by Cholesky, so frames cost linearly. ``pts2d`` (F, P, 2) may hold NaN for missing
    points. The gauge is fixed by the distance of points ``eyes`` (``distance`` cm) and a
    weak pull towards ``shape0``.
    Returns shape (P, 3), rvec (F, 3), T (F, 3) and the RMS reprojection error (pixels).
    """
    n_f, n_p = pts2d.shape[:2]
    seen = np.isfinite(pts2d).all(-1)  # (F, P)
    obs = np.where(seen[..., None], pts2d, 0.0)
    a, b = eyes  # positions of the outer eye corners among the P points
    n_s = 3 * n_p

    def residual(shape, rmat, t):
        rx = shape @ rmat.transpose(0, 2, 1)  # (F, P, 3)
        cam = rx + t[:, None]
        return project(cam, K) - obs, rx, cam

    def cost(r, shape):
        norm = np.linalg.norm(r, axis=-1)[seen]
        rho = np.where(norm <= huber_px, 0.5 * norm**2, huber_px * (norm - 0.5 * huber_px))
        eye = 10.0 * (np.linalg.norm(shape[a] - shape[b]) - distance)
        return rho.sum() + 0.5 * eye**2 + 0.5 * shape_prior**2 * ((shape - shape0) ** 2).sum()

    shape, t = shape0.copy(), t0.astype(float).copy()
    rmat = Rotation.from_rotvec(rvec0).as_matrix()
    r, rx, cam = residual(shape, rmat, t)
    c = cost(r, shape)
    mu = 1e-3
    fx, fy = K[0, 0], K[1, 1]
    # indices of the shape block's 3x3 diagonal blocks, and of the gauge points
    i3, i6 = np.arange(3), np.arange(6)
    rows = 3 * np.arange(n_p)[:, None, None] + i3[:, None]
    cols = 3 * np.arange(n_p)[:, None, None] + i3
    blk_s = (np.broadcast_to(rows, (n_p, 3, 3)).ravel(), np.broadcast_to(cols, (n_p, 3, 3)).ravel())
    gauge_idx = np.r_[3 * a + i3, 3 * b + i3]
    for _ in range(iterations):
        z = cam[..., 2]
        du = np.zeros((n_f, n_p, 2, 3))
        du[..., 0, 0] = fx / z
        du[..., 0, 2] = -fx * cam[..., 0] / z**2
        du[..., 1, 1] = fy / z
        du[..., 1, 2] = -fy * cam[..., 1] / z**2
        j_rot = -(du @ skew(rx))  # (F, P, 2, 3)
        j_pose = np.concatenate([j_rot, du], axis=-1)  # (F, P, 2, 6)
        j_shape = du @ rmat[:, None]  # (F, P, 2, 3)
        norm = np.linalg.norm(r, axis=-1)
        w = np.where(norm <= huber_px, 1.0, huber_px / np.maximum(norm, 1e-9)) * seen
        # normal equations assembled block by block: shapes couple only through poses
        jw_shape = j_shape * w[..., None, None]
        jw_pose = j_pose * w[..., None, None]
        jw_rows = jw_shape.transpose(1, 3, 0, 2).reshape(n_p, 3, -1)
        h_ss = jw_rows @ j_shape.transpose(1, 0, 2, 3).reshape(n_p, -1, 3)
        h_pp = jw_pose.transpose(0, 3, 1, 2).reshape(n_f, 6, -1) @ j_pose.reshape(n_f, -1, 6)
        h_sp = (jw_shape.swapaxes(-1, -2) @ j_pose).transpose(1, 2, 0, 3).reshape(n_s, 6 * n_f)
        a_mat = np.zeros((n_s, n_s))  # the shape block; poses are eliminated (Schur)
        a_mat[blk_s] = h_ss.ravel()
        g_s = (jw_shape.swapaxes(-1, -2) @ r[..., None])[..., 0].sum(0).ravel()
        g_p = (jw_pose.swapaxes(-1, -2) @ r[..., None])[..., 0].sum(1)  # (F, 6)
        # gauge terms: the distance of points a and b, and the pull towards shape0
        d = shape[a] - shape[b]
        dist = np.linalg.norm(d)
        je = np.r_[d, -d] / dist
        a_mat[np.ix_(gauge_idx, gauge_idx)] += 100.0 * np.outer(je, je)
        g_s[gauge_idx] += 100.0 * je * (dist - distance)
        a_mat[np.arange(n_s), np.arange(n_s)] += shape_prior**2
        g_s += shape_prior**2 * (shape - shape0).ravel()
        diag_a = np.diag(a_mat).copy() + 1e-9
        diag_c = np.diagonal(h_pp, axis1=1, axis2=2).copy() + 1e-9
        b_mat = h_sp.reshape(n_s, n_f, 6)
        while True:
            a_mat[np.arange(n_s), np.arange(n_s)] = diag_a * (1.0 + mu)
            h_pp[:, i6, i6] = diag_c * (1.0 + mu)
            c_inv = np.linalg.inv(h_pp)  # (F, 6, 6) blocks of the pose part
            bc = (b_mat.transpose(1, 0, 2) @ c_inv).transpose(1, 0, 2).reshape(n_s, 6 * n_f)
            schur = a_mat - bc @ h_sp.T
            rhs = g_s - bc @ g_p.ravel()
            try:  # the damped system is positive definite: Cholesky
                x_s = cho_solve(cho_factor(schur, check_finite=False), rhs, check_finite=False)
            except np.linalg.LinAlgError:
                x_s = np.linalg.lstsq(schur, rhs, rcond=None)[0]
            x_p = np.einsum("fij,fj->fi", c_inv, g_p - (h_sp.T @ x_s).reshape(n_f, 6))
            step = -np.concatenate([x_s, x_p.ravel()])
            new_shape = shape + step[:n_s].reshape(n_p, 3)
            poses = step[n_s:].reshape(n_f, 6)
            new_rmat = Rotation.from_rotvec(poses[:, :3]).as_matrix() @ rmat
            new_t = t + poses[:, 3:]
            r_new, rx_new, cam_new = residual(new_shape, new_rmat, new_t)
            c_new = cost(r_new, new_shape) if (cam_new[..., 2] > 0).all() else np.inf
            if c_new < c:
                break
            mu *= 10.0
            if mu > 1e8:
                break
        if c_new >= c:
            break
        converged = (c - c_new) < 1e-5 * c
        shape, rmat, t, r, rx, cam, c = new_shape, new_rmat, new_t, r_new, rx_new, cam_new, c_new
        mu = max(mu / 10.0, 1e-7)
        if converged:
            break
    rms = float(np.sqrt((r[seen] ** 2).sum(-1).mean()))
    return shape, Rotation.from_matrix(rmat).as_rotvec(), t, rms
