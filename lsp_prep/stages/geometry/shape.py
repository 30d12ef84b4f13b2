"""Rigid face shapes and 3D points: Procrustes means, first poses, object-space landmarks,
triangulation and back-projection.

Conventions are :mod:`lsp_prep.camera`'s. Object coordinates are those of the person's mean
shape, scaled so that the outer eye corners are :data:`~lsp_prep.constants.EYE_DISTANCE_CM`
apart: one camera cannot see a face's absolute scale, so translations are in this nominal
unit.
"""

from __future__ import annotations

import numpy as np
from scipy.spatial.transform import Rotation

from lsp_prep.constants import EYE_DISTANCE_CM
from lsp_prep.errors import InputError
from lsp_prep.layout import load_layout


def procrustes(src: np.ndarray, ref: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
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


def mean_shape(points3d: np.ndarray, *, eye_corners: tuple[int, int] | None = None) -> np.ndarray:
    """Robust rigid mean (P, 3) of per-frame shapes (N, P, 3), scaled to centimetres.

    Generalised Procrustes: align every shape to the running median, three rounds.
    """
    ref = np.median(points3d, axis=0)
    for _ in range(3):
        rot, scale, t = procrustes(points3d, ref)
        aligned = scale[:, None, None] * np.einsum("nij,npj->npi", rot, points3d) + t[:, None]
        ref = np.median(aligned, axis=0)
    ref = ref - ref.mean(0)
    a, b = eye_corners or load_layout().outer_eye_corners
    return ref * (EYE_DISTANCE_CM / np.linalg.norm(ref[a] - ref[b]))


def initial_poses(
    mesh3d: np.ndarray, shape: np.ndarray, *, focal: float, principal: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Weak-perspective poses from MediaPipe's per-frame 3D points (N, P, 3) in pixels.

    MediaPipe's (x, y) are image pixels and z is depth in the same pixel scale, so a
    similarity fit of the object shape onto them gives the rotation, and its scale
    (pixels per cm) gives the depth ``focal / scale``. Returns rotvec (N, 3), T (N, 3).
    """
    rot, scale, t = procrustes(np.broadcast_to(shape, mesh3d.shape), mesh3d)
    # mesh ~ scale * R @ shape + t  ->  camera: X = R @ shape + T with T_z = f / scale
    centred = shape - shape.mean(0)
    t = t + scale[:, None] * np.einsum("nij,j->ni", rot, shape.mean(0) - centred.mean(0))
    tz = focal / scale
    txy = (t[:, :2] - principal) * (tz / focal)[:, None]
    return Rotation.from_matrix(rot).as_rotvec(), np.concatenate([txy, tz[:, None]], axis=1)


def eye_pair(stable: np.ndarray) -> tuple[int, int]:
    pos = {int(s): i for i, s in enumerate(stable)}
    try:
        a, b = load_layout().outer_eye_corners
        return pos[a], pos[b]
    except KeyError:
        raise InputError("the stable point set must contain the outer eye corners") from None


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
    ref = mean_shape(points3d[:, stable], eye_corners=eye_pair(stable))
    rot, scale, t = procrustes(points3d[:, stable], ref)
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
