"""Bundle adjustment: one shared rigid shape and per-frame poses minimising the
reprojection error (the inner solve of the focal search)."""

from __future__ import annotations

import numpy as np
from scipy.linalg import cho_factor, cho_solve
from scipy.spatial.transform import Rotation

from lsp_prep.camera import project, projection_jacobian
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
    weights: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, float]:
    """Shared shape + per-frame poses minimising reprojection error.

    Levenberg-Marquardt with analytic Jacobians and Huber weights (IRLS); each step
    eliminates the per-frame 6x6 pose blocks (Schur complement) and solves the dense
    shape system by Cholesky, so frames cost linearly. ``pts2d`` (F, P, 2) may hold NaN for missing
    points. The gauge is fixed by the distance of points ``eyes`` (``distance`` cm) and a
    weak pull towards ``shape0``. ``weights`` (P,) scale each point's terms (how rigid
    it is; see :func:`rigidity_weights`).
    Returns shape (P, 3), rvec (F, 3), T (F, 3) and the RMS reprojection error (pixels,
    unweighted).
    """
    n_f, n_p = pts2d.shape[:2]
    seen = np.isfinite(pts2d).all(-1)  # (F, P)
    w_pts = seen * (1.0 if weights is None else np.asarray(weights, np.float64)[None])
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
        rho = rho * w_pts[seen]
        eye = 10.0 * (np.linalg.norm(shape[a] - shape[b]) - distance)
        return rho.sum() + 0.5 * eye**2 + 0.5 * shape_prior**2 * ((shape - shape0) ** 2).sum()

    shape, t = shape0.copy(), t0.astype(float).copy()
    rmat = Rotation.from_rotvec(rvec0).as_matrix()
    r, rx, cam = residual(shape, rmat, t)
    c = cost(r, shape)
    mu = 1e-3
    for _ in range(iterations):
        a_mat, g_s, h_pp, h_sp, g_p = _normal_equations(
            r, rx, cam, rmat, K, seen=w_pts, huber_px=huber_px
        )
        _add_gauge(a_mat, g_s, shape, shape0, eyes=eyes, distance=distance, prior=shape_prior)
        diag_a = np.diag(a_mat).copy() + 1e-9
        diag_c = np.diagonal(h_pp, axis1=1, axis2=2).copy() + 1e-9
        while True:
            a_mat[np.arange(n_s), np.arange(n_s)] = diag_a * (1.0 + mu)
            h_pp[:, np.arange(6), np.arange(6)] = diag_c * (1.0 + mu)
            step = _schur_step(a_mat, g_s, h_pp, h_sp, g_p)
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


def _normal_equations(
    r: np.ndarray,
    rx: np.ndarray,
    cam: np.ndarray,
    rmat: np.ndarray,
    K: np.ndarray,
    *,
    seen: np.ndarray,
    huber_px: float,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """The Huber-weighted normal equations of the reprojection residuals ``r`` (F, P, 2),
    block by block (shapes couple only through poses): the shape block (3P, 3P) and its
    gradient (3P,), the per-frame pose blocks (F, 6, 6), the shape-pose block (3P, 6F)
    and the pose gradients (F, 6). ``rx`` (F, P, 3) are the rotated shape points, ``cam``
    the camera points; ``seen`` (F, P) weights each observation (0 where missing)."""
    n_f, n_p = r.shape[:2]
    n_s = 3 * n_p
    du = projection_jacobian(cam, K)
    j_rot = -(du @ skew(rx))  # (F, P, 2, 3)
    j_pose = np.concatenate([j_rot, du], axis=-1)  # (F, P, 2, 6)
    j_shape = du @ rmat[:, None]  # (F, P, 2, 3)
    norm = np.linalg.norm(r, axis=-1)
    w = np.where(norm <= huber_px, 1.0, huber_px / np.maximum(norm, 1e-9)) * seen
    jw_shape = j_shape * w[..., None, None]
    jw_pose = j_pose * w[..., None, None]
    jw_rows = jw_shape.transpose(1, 3, 0, 2).reshape(n_p, 3, -1)
    h_ss = jw_rows @ j_shape.transpose(1, 0, 2, 3).reshape(n_p, -1, 3)
    h_pp = jw_pose.transpose(0, 3, 1, 2).reshape(n_f, 6, -1) @ j_pose.reshape(n_f, -1, 6)
    h_sp = (jw_shape.swapaxes(-1, -2) @ j_pose).transpose(1, 2, 0, 3).reshape(n_s, 6 * n_f)
    # the shape block: its 3x3 diagonal blocks (poses are eliminated later, by Schur)
    i3 = np.arange(3)
    rows = 3 * np.arange(n_p)[:, None, None] + i3[:, None]
    cols = 3 * np.arange(n_p)[:, None, None] + i3
    blk_s = (np.broadcast_to(rows, (n_p, 3, 3)).ravel(), np.broadcast_to(cols, (n_p, 3, 3)).ravel())
    a_mat = np.zeros((n_s, n_s))
    a_mat[blk_s] = h_ss.ravel()
    g_s = (jw_shape.swapaxes(-1, -2) @ r[..., None])[..., 0].sum(0).ravel()
    g_p = (jw_pose.swapaxes(-1, -2) @ r[..., None])[..., 0].sum(1)  # (F, 6)
    return a_mat, g_s, h_pp, h_sp, g_p


def _add_gauge(
    a_mat: np.ndarray,
    g_s: np.ndarray,
    shape: np.ndarray,
    shape0: np.ndarray,
    *,
    eyes: tuple[int, int],
    distance: float,
    prior: float,
) -> None:
    """Add the gauge terms to the shape block and gradient, in place: points ``eyes`` held
    ``distance`` apart, and a weak pull (weight ``prior``) towards ``shape0``."""
    a, b = eyes
    i3 = np.arange(3)
    gauge_idx = np.r_[3 * a + i3, 3 * b + i3]
    d = shape[a] - shape[b]
    dist = np.linalg.norm(d)
    je = np.r_[d, -d] / dist
    a_mat[np.ix_(gauge_idx, gauge_idx)] += 100.0 * np.outer(je, je)
    g_s[gauge_idx] += 100.0 * je * (dist - distance)
    n_s = len(g_s)
    a_mat[np.arange(n_s), np.arange(n_s)] += prior**2
    g_s += prior**2 * (shape - shape0).ravel()


def _schur_step(
    a_mat: np.ndarray, g_s: np.ndarray, h_pp: np.ndarray, h_sp: np.ndarray, g_p: np.ndarray
) -> np.ndarray:
    """The (damped) Gauss-Newton step (3P + 6F,), shape then poses: the per-frame pose
    blocks eliminated (Schur complement), the dense shape system solved by Cholesky."""
    n_s, n_f = len(g_s), len(g_p)
    b_mat = h_sp.reshape(n_s, n_f, 6)
    c_inv = np.linalg.inv(h_pp)  # (F, 6, 6) blocks of the pose part
    bc = (b_mat.transpose(1, 0, 2) @ c_inv).transpose(1, 0, 2).reshape(n_s, 6 * n_f)
    schur = a_mat - bc @ h_sp.T
    rhs = g_s - bc @ g_p.ravel()
    try:  # the damped system is positive definite: Cholesky
        x_s = cho_solve(cho_factor(schur, check_finite=False), rhs, check_finite=False)
    except np.linalg.LinAlgError:
        x_s = np.linalg.lstsq(schur, rhs, rcond=None)[0]
    x_p = np.einsum("fij,fj->fi", c_inv, g_p - (h_sp.T @ x_s).reshape(n_f, 6))
    return -np.concatenate([x_s, x_p.ravel()])
