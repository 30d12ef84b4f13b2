"""Camera calibration and 3D head tracking on the LSP-73 landmarks.

Conventions (OpenCV's): camera x right, y down, z forward; pixel centres at integer
coordinates; ``X_cam = R @ X_obj + T`` with ``R`` stored as a Rodrigues vector (radians)
and ``T`` in centimetres. Object coordinates are those of the person's mean shape, which
is scaled so that the outer eye corners (LSP 27 and 33) are
:data:`~lsp_prep.constants.EYE_DISTANCE_CM` apart;
the absolute scale of a face cannot be seen by one camera, so translations are in this
nominal unit.

Calibration follows the paper: the focal length ``f`` is found by a bracketing search on
the reprojection error of a rigid fit (a shared 3D shape, bundle-adjusted with per-frame
poses) over frames chosen for pose variety; the principal point is the image centre.
Tracking then solves every frame's pose in one batched Gauss-Newton over all frames, with
Huber weights on the stable points and a light temporal prior.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.linalg import cho_factor, cho_solve
from scipy.ndimage import gaussian_filter1d
from scipy.spatial.transform import Rotation

from lsp_prep.camera import focal_from_fov, intrinsics, project, refocus, rotvec_to_euler_xyz
from lsp_prep.constants import EYE_DISTANCE_CM
from lsp_prep.errors import InputError

EYE_CORNERS = (27, 33)
"""LSP indices of the right and left outer eye corners."""


@dataclass(frozen=True)
class CameraConfig:
    """Focal-length calibration."""

    default_fov_deg: float = 55.0
    """Horizontal field of view used when the clip cannot identify f (a phone or webcam's
    main camera is 50-65 degrees)."""
    min_fov_deg: float = 8.0
    """Narrowest horizontal field of view searched (longest focal length)."""
    max_fov_deg: float = 120.0
    """Widest horizontal field of view searched (shortest focal length)."""
    n_frames: int = 60
    """Frames used for calibration, chosen for pose variety."""
    rel_tolerance: float = 0.005
    """The search stops when the bracket is narrower than this fraction of f."""
    min_rotation_deg: float = 6.0
    """Below this spread of head rotation the focal length is not identifiable."""
    min_contrast: float = 0.03
    """The error curve must rise by this fraction above its minimum within the searched
    range, or the clip does not identify f."""

    def __post_init__(self) -> None:
        if not 0 < self.min_fov_deg < self.default_fov_deg < self.max_fov_deg < 179:
            raise InputError("camera needs 0 < min_fov_deg < default_fov_deg < max_fov_deg < 179")
        if self.n_frames < 8:
            raise InputError(f"camera.n_frames must be >= 8, got {self.n_frames}")


@dataclass(frozen=True)
class GeometryConfig:
    """Per-frame head pose fitting."""

    huber_px: float = 2.0
    """Residuals beyond this many pixels get Huber (linear) weight."""
    iterations: int = 12
    """Gauss-Newton iterations over all frames."""
    smooth_frames: float = 1.5
    """Gaussian sigma (frames) of the temporal prior the poses are pulled towards."""
    prior_weight: float = 1.0
    """Weight of that prior: a deviation of 1 degree (or 1 cm) costs this many squared
    pixels per visible landmark."""

    def __post_init__(self) -> None:
        if self.huber_px <= 0 or self.iterations < 1:
            raise InputError("geometry.huber_px must be > 0 and geometry.iterations >= 1")
        if self.smooth_frames < 0 or self.prior_weight < 0:
            raise InputError("geometry.smooth_frames and geometry.prior_weight must be >= 0")


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


# ----------------------------------------------------------------- rigid shape


def _procrustes(src: np.ndarray, ref: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Similarity fits of shapes ``src`` (N, P, 3) onto ``ref`` (P, 3), batched.

    ``ref`` may also be (N, P, 3), one target per shape. Returns rotation (N, 3, 3),
    scale (N,), translation (N, 3) with ``ref ~ scale * src @ R.T + t``.
    """
    ref = np.broadcast_to(ref, src.shape)
    mu_s, mu_r = src.mean(1, keepdims=True), ref.mean(1)
    a, b = src - mu_s, ref - mu_r[:, None]
    cov = np.einsum("npi,npj->nji", a, b)  # (N, 3, 3) = b^T a
    u, sv, vt = np.linalg.svd(cov)
    d = np.sign(np.linalg.det(u @ vt))
    sv[:, -1] *= d
    u[:, :, -1] *= d[:, None]
    rot = u @ vt
    scale = sv.sum(1) / (a**2).sum((1, 2))
    t = mu_r - scale[:, None] * np.einsum("nij,nj->ni", rot, mu_s[:, 0])
    return rot, scale, t


def mean_shape(points3d: np.ndarray, *, eye_corners: tuple[int, int] = EYE_CORNERS) -> np.ndarray:
    """Robust rigid mean (P, 3) of per-frame shapes (N, P, 3), scaled to centimetres.

    Generalised Procrustes: align every shape to the running median, three rounds.
    """
    ref = np.median(points3d, axis=0)
    for _ in range(3):
        rot, scale, t = _procrustes(points3d, ref)
        aligned = scale[:, None, None] * np.einsum("nij,npj->npi", rot, points3d) + t[:, None]
        ref = np.median(aligned, axis=0)
    ref = ref - ref.mean(0)
    a, b = eye_corners
    return ref * (EYE_DISTANCE_CM / np.linalg.norm(ref[a] - ref[b]))


def initial_poses(
    mesh3d: np.ndarray, shape: np.ndarray, *, focal: float, principal: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Weak-perspective poses from MediaPipe's per-frame 3D points (N, P, 3) in pixels.

    MediaPipe's (x, y) are image pixels and z is depth in the same pixel scale, so a
    similarity fit of the object shape onto them gives the rotation, and its scale
    (pixels per cm) gives the depth ``focal / scale``. Returns rotvec (N, 3), T (N, 3).
    """
    rot, scale, t = _procrustes(np.broadcast_to(shape, mesh3d.shape), mesh3d)
    # mesh ~ scale * R @ shape + t  ->  camera: X = R @ shape + T with T_z = f / scale
    centred = shape - shape.mean(0)
    t = t + scale[:, None] * np.einsum("nij,j->ni", rot, shape.mean(0) - centred.mean(0))
    tz = focal / scale
    txy = (t[:, :2] - principal) * (tz / focal)[:, None]
    return Rotation.from_matrix(rot).as_rotvec(), np.concatenate([txy, tz[:, None]], axis=1)


# ----------------------------------------------------------------- bundle adjustment


def _bundle_adjust(
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
        j_rot = -(du @ _skew(rx))  # (F, P, 2, 3)
        j_pose = np.concatenate([j_rot, du], axis=-1)  # (F, P, 2, 6)
        j_shape = du @ rmat[:, None]  # (F, P, 2, 3)
        norm = np.linalg.norm(r, axis=-1)
        w = np.where(norm <= huber_px, 1.0, huber_px / np.maximum(norm, 1e-9)) * seen
        # normal equations assembled block by block: shapes couple only through poses
        jw_shape = j_shape * w[..., None, None]
        jw_pose = j_pose * w[..., None, None]
        h_ss = (jw_shape.transpose(1, 3, 0, 2).reshape(n_p, 3, -1)
                @ j_shape.transpose(1, 0, 2, 3).reshape(n_p, -1, 3))  # fmt: skip
        h_pp = (jw_pose.transpose(0, 3, 1, 2).reshape(n_f, 6, -1)
                @ j_pose.reshape(n_f, -1, 6))  # fmt: skip
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
    eyes = _eye_pair(stable)
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
            shape, rv, t, rms = _bundle_adjust(
                points2d, shape_i, rv_i, t_i, intrinsics(f, image_size), eyes=(a_g, b_g),
                huber_px=2.0, distance=dist_g, iterations=iterations,
            )  # fmt: skip
            solved[logf] = (rms, shape, rv, t)
        return solved[logf][0]

    lo = np.log(focal_from_fov(config.max_fov_deg, w))
    hi = np.log(focal_from_fov(config.min_fov_deg, w))
    grid = np.linspace(hi, lo, 10)  # long to short: weak perspective first, then warm starts
    # the grid only has to bracket the minimum: fewer iterations than near it
    errs = np.array([error(float(g), iterations=15) for g in grid])
    k = int(np.argmin(errs))
    a, b = sorted((grid[max(k - 1, 0)], grid[min(k + 1, len(grid) - 1)]))
    gr = (np.sqrt(5) - 1) / 2
    c, d = b - gr * (b - a), a + gr * (b - a)
    # a minimum at either end of the range brackets nothing: f is not identified there
    while 0 < k < len(grid) - 1 and b - a > np.log1p(config.rel_tolerance):
        if error(float(c)) < error(float(d)):
            b, d = d, c
            c = b - gr * (b - a)
        else:
            a, c = c, d
            d = a + gr * (b - a)
    keys = np.array(sorted(solved))
    curve_err = np.array([solved[key][0] for key in keys])
    best = float(keys[np.argmin(curve_err)])
    e_min = solved[best][0]
    ok = keys[curve_err <= (1 + config.min_contrast) * e_min]
    rise_short = curve_err[0] / e_min - 1  # shortest focal length tried
    rise_long = curve_err[-1] / e_min - 1  # longest
    reason = ""
    if spread < config.min_rotation_deg:
        reason = f"the head turns only {spread:.1f} degrees (needs {config.min_rotation_deg:g})"
    elif min(rise_short, rise_long) < config.min_contrast:
        side = "long" if rise_long < rise_short else "short"
        reason = (
            f"the reprojection error is flat towards {side} focal lengths "
            f"(rises {min(rise_short, rise_long):.1%})"
        )
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
        focal, intrinsics(focal, image_size), curve, not reason, reason, solved[chosen][1],
        np.asarray(frames),
    )  # fmt: skip


def _eye_pair(stable: np.ndarray) -> tuple[int, int]:
    pos = {int(s): i for i, s in enumerate(stable)}
    try:
        return pos[EYE_CORNERS[0]], pos[EYE_CORNERS[1]]
    except KeyError:
        raise InputError("the stable point set must contain the outer eye corners") from None


# ----------------------------------------------------------------- batched tracking


def _skew(v: np.ndarray) -> np.ndarray:
    """(..., 3) -> (..., 3, 3) cross-product matrices."""
    z = np.zeros(v.shape[:-1])
    return np.stack(
        [np.stack([z, -v[..., 2], v[..., 1]], -1),
         np.stack([v[..., 2], z, -v[..., 0]], -1),
         np.stack([-v[..., 1], v[..., 0], z], -1)], -2)  # fmt: skip


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
    n, p = points2d.shape[:2]
    seen = np.isfinite(points2d).all(-1)
    obs = np.where(seen[..., None], points2d, 0.0)
    w_pts = seen.astype(float) if weights is None else seen * weights
    fx, fy = K[0, 0], K[1, 1]
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
        z = cam[..., 2]
        du = np.zeros((n, p, 2, 3))
        du[..., 0, 0] = fx / z
        du[..., 0, 2] = -fx * cam[..., 0] / z**2
        du[..., 1, 1] = fy / z
        du[..., 1, 2] = -fy * cam[..., 1] / z**2
        jac = np.concatenate([-(du @ _skew(rx)), du], axis=-1)  # (N, P, 2, 6)
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


def object_points(points3d: np.ndarray, shape: np.ndarray, stable: np.ndarray) -> np.ndarray:
    """Per-frame landmarks in object coordinates (N, L, 3) from MediaPipe's per-frame 3D
    points (N, L, 3, pixels), given the calibrated rigid ``shape`` (P, 3) of the ``stable``
    subset.

    Each frame is aligned (similarity, on the stable points) to MediaPipe's own mean shape,
    which removes head motion and keeps expression (mouth, eyes, brows). One affine map,
    fitted on the stable points, then takes MediaPipe's mean shape onto ``shape``: it
    corrects MediaPipe's depth scale, which the bundle adjustment measured and MediaPipe
    only guesses. Units are those of ``shape`` (cm).
    """
    ref = mean_shape(points3d[:, stable], eye_corners=_eye_pair(stable))
    rot, scale, t = _procrustes(points3d[:, stable], ref)
    aligned = scale[:, None, None] * np.einsum("nij,npj->npi", rot, points3d) + t[:, None]
    src = np.concatenate([ref, np.ones((len(ref), 1))], axis=1)  # (P, 4)
    affine, *_ = np.linalg.lstsq(src, shape, rcond=None)  # (4, 3)
    return aligned @ affine[:3] + affine[3]


def triangulate(
    points2d: np.ndarray, rvec: np.ndarray, trans: np.ndarray, K: np.ndarray
) -> np.ndarray:
    """Object points (P, 3) seen at ``points2d`` (F, P, 2; NaN where missing) from known
    poses (F, 3) and intrinsics ``K``: linear least squares over every frame per point.

    Each view gives two equations linear in X, ``(u - cx) / fx * (r3 X + t3) = r1 X + t1``
    and the same in y. Points seen in fewer than two frames are NaN.
    """
    rmat = Rotation.from_rotvec(rvec).as_matrix()  # (F, 3, 3)
    seen = np.isfinite(points2d).all(-1)  # (F, P)
    a = (points2d[..., 0] - K[0, 2]) / K[0, 0]
    b = (points2d[..., 1] - K[1, 2]) / K[1, 1]
    lhs, rhs = [], []
    for c, row in ((a, 0), (b, 1)):
        c = np.where(seen, c, 0.0)
        lhs.append((rmat[:, None, row] - c[..., None] * rmat[:, None, 2]) * seen[..., None])
        rhs.append((c * trans[:, None, 2] - trans[:, None, row]) * seen)
    m = np.concatenate(lhs)  # (2F, P, 3)
    r = np.concatenate(rhs)  # (2F, P)
    ata = np.einsum("fpi,fpj->pij", m, m)
    atb = np.einsum("fpi,fp->pi", m, r)
    out = np.full((points2d.shape[1], 3), np.nan)
    ok = seen.sum(0) >= 2
    out[ok] = np.linalg.solve(ata[ok], atb[ok][..., None])[..., 0]
    return out


def back_project(
    points2d: np.ndarray, points3d: np.ndarray, rvec: np.ndarray, trans: np.ndarray, K: np.ndarray
) -> np.ndarray:
    """Object points (N, L, 3) moved onto the rays of their observations (N, L, 2), each at
    the depth it had: the pose then projects them exactly onto the observed pixels."""
    rmat = Rotation.from_rotvec(rvec).as_matrix()
    cam = np.einsum("nij,nlj->nli", rmat, points3d) + trans[:, None]
    ray = np.stack(
        [(points2d[..., 0] - K[0, 2]) / K[0, 0], (points2d[..., 1] - K[1, 2]) / K[1, 1]], -1
    )
    cam = np.concatenate([ray * cam[..., 2:3], cam[..., 2:3]], -1)
    return np.einsum("nji,nlj->nli", rmat, cam - trans[:, None])
