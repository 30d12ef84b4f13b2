"""The one camera model every stage uses: pinhole projection, intrinsics, Euler
conventions and the crop transforms.

Conventions (OpenCV's): camera x right, y down, z forward; pixel centres at integer
coordinates; ``X_cam = R @ X_obj + T`` with ``R`` a Rodrigues vector (radians) and ``T``
in the object unit (nominal centimetres, see :data:`lsp_prep.constants.EYE_DISTANCE_CM`).
Intrinsics ``K`` are (3, 3) without skew: ``[[fx, 0, cx], [0, fy, cy], [0, 0, 1]]``.

A crop box is ``(x0, y0, x1, y1)`` in original-video pixels with ``x1 - x0 == y1 - y0``;
a point ``p`` maps to the ``size`` x ``size`` crop as ``(p - (x0, y0)) * size / side``
(:func:`to_crop`, inverse :func:`to_original`); :func:`crop_intrinsics` is the same map
applied to ``K``.

Two Euler conventions are in use, each with its own pair of functions:

* ``xyz`` (radians): intrinsic x-y-z, pitch about the object's x axis (nodding), yaw
  about y (shaking), roll about z (tilting). The models' head-pose features use it.
* ``YXZ`` (degrees): ``R = Ry(yaw) @ Rx(pitch) @ Rz(roll)`` as (yaw, pitch, roll). The
  test renderers (:mod:`lsp_synth.render3d`) describe their motion with it.
"""

from __future__ import annotations

import numpy as np
from scipy.spatial.transform import Rotation

# ----------------------------------------------------------------- intrinsics


def intrinsics(focal: float, size: tuple[int, int]) -> np.ndarray:
    """(3, 3) pinhole intrinsics with the principal point at the image centre."""
    w, h = size
    return np.array([[focal, 0.0, (w - 1) / 2], [0.0, focal, (h - 1) / 2], [0.0, 0.0, 1.0]])


def focal_from_fov(fov_deg: float, width: int) -> float:
    """Focal length (pixels) of a horizontal field of view over ``width`` pixels."""
    return width / (2.0 * np.tan(np.radians(fov_deg) / 2.0))


def crop_intrinsics(K: np.ndarray, boxes: np.ndarray, size: int) -> np.ndarray:
    """(N, 3, 3) intrinsics of each frame's crop from the original's (3, 3) and the boxes
    (N, 4)."""
    s = size / (boxes[:, 2] - boxes[:, 0])
    out = np.zeros((len(boxes), 3, 3))
    out[:, 0, 0] = K[0, 0] * s
    out[:, 1, 1] = K[1, 1] * s
    out[:, 0, 2] = (K[0, 2] - boxes[:, 0]) * s
    out[:, 1, 2] = (K[1, 2] - boxes[:, 1]) * s
    out[:, 2, 2] = 1.0
    return out


def scale_intrinsics(K: np.ndarray, src: tuple[int, int], dst: tuple[int, int]) -> np.ndarray:
    """Intrinsics (..., 3, 3) of an image resized from ``src`` to ``dst`` (width, height),
    pixel centres aligned."""
    out = np.array(K, dtype=np.float64, copy=True)
    for axis in (0, 1):
        k = dst[axis] / src[axis]
        out[..., axis, :2] *= k
        out[..., axis, 2] = (out[..., axis, 2] + 0.5) * k - 0.5
    return out


def refocus(trans: np.ndarray, ratio: float) -> np.ndarray:
    """Translations (..., 3) that keep a face's image (to first order) when f is
    multiplied by ``ratio``: the depth scales with f, the offset across the optical axis
    stays."""
    out = np.array(trans, dtype=np.float64, copy=True)
    out[..., 2] *= ratio
    return out


def rescale_points(points: np.ndarray, src: tuple[int, int], dst: tuple[int, int]) -> np.ndarray:
    """Pixel-centre coordinates in a ``src``-sized frame -> a ``dst``-sized frame; (..., D).

    A third coordinate (depth in pixel units) scales with x. The points' counterpart of
    :func:`scale_intrinsics`.
    """
    kx, ky = dst[0] / src[0], dst[1] / src[1]
    out = np.array(points, dtype=np.float64, copy=True)
    out[..., 0] = (out[..., 0] + 0.5) * kx - 0.5
    out[..., 1] = (out[..., 1] + 0.5) * ky - 0.5
    if out.shape[-1] > 2:
        out[..., 2] *= kx
    return out


# ----------------------------------------------------------------- projection


def project(points: np.ndarray, K: np.ndarray) -> np.ndarray:
    """Camera-space points (..., P, 3) -> pixels (..., P, 2).

    ``K`` is (3, 3), or (..., 3, 3) with the points' leading dimensions (one per frame).
    """
    K = np.asarray(K)
    focal = np.stack([K[..., 0, 0], K[..., 1, 1]], -1)[..., None, :]
    centre = K[..., :2, 2][..., None, :]
    return points[..., :2] / points[..., 2:3] * focal + centre


def projection_jacobian(points: np.ndarray, K: np.ndarray) -> np.ndarray:
    """Derivative (..., 2, 3) of :func:`project` (pixels) with respect to the camera-space
    points (..., 3), for one ``K`` (3, 3)."""
    fx, fy = K[0, 0], K[1, 1]
    z = points[..., 2]
    du = np.zeros((*points.shape[:-1], 2, 3))
    du[..., 0, 0] = fx / z
    du[..., 0, 2] = -fx * points[..., 0] / z**2
    du[..., 1, 1] = fy / z
    du[..., 1, 2] = -fy * points[..., 1] / z**2
    return du


def to_camera(points: np.ndarray, rotation: np.ndarray, translation: np.ndarray) -> np.ndarray:
    """Object points (..., P, 3) -> camera space ``R X + T`` for poses ``rotation``
    (..., 3) Rodrigues radians and ``translation`` (..., 3); leading dimensions broadcast
    (one pose or N poses)."""
    pts = np.asarray(points, np.float64)
    rot = np.asarray(rotation, np.float64)
    if rot.ndim == 1:  # one pose: scipy rotates (the rounding prep's datasets were made with)
        cam = Rotation.from_rotvec(rot).apply(pts.reshape(-1, 3)) + np.asarray(translation)
        return cam.reshape(pts.shape)
    lead = rot.shape[:-1]
    mats = Rotation.from_rotvec(rot.reshape(-1, 3)).as_matrix().reshape(*lead, 3, 3)
    return np.einsum("...ij,...pj->...pi", mats, pts) + np.asarray(translation)[..., None, :]


def project_object(
    points: np.ndarray, rotation: np.ndarray, translation: np.ndarray, K: np.ndarray
) -> np.ndarray:
    """Object points (..., P, 3) seen at poses (..., 3), (..., 3) through ``K`` -> pixels
    (..., P, 2): :func:`project` of :func:`to_camera`."""
    return project(to_camera(points, rotation, translation), K)


# ----------------------------------------------------------------- Euler angles


def rotvec_to_euler_xyz(rotvec: np.ndarray) -> np.ndarray:
    """Rodrigues vectors (N, 3) -> (N, 3) pitch, yaw, roll in radians, intrinsic x-y-z."""
    return Rotation.from_rotvec(rotvec).as_euler("xyz")


def euler_xyz_to_rotvec(euler: np.ndarray) -> np.ndarray:
    """(N, 3) pitch, yaw, roll (intrinsic x-y-z, radians) -> Rodrigues (N, 3); inverse of
    :func:`rotvec_to_euler_xyz`."""
    return Rotation.from_euler("xyz", np.asarray(euler, np.float64)).as_rotvec()


def euler_yxz_to_rotvec(
    yaw: np.ndarray, pitch: np.ndarray, roll: np.ndarray, *, degrees: bool = True
) -> np.ndarray:
    """Rotation vectors (N, 3) in radians of ``R = Ry(yaw) @ Rx(pitch) @ Rz(roll)``.

    Angles (N,) or scalars about the object axes (x right, y down, z away).
    """
    angles = np.stack(np.broadcast_arrays(*(np.atleast_1d(a) for a in (yaw, pitch, roll))), -1)
    return Rotation.from_euler("YXZ", angles, degrees=degrees).as_rotvec()


def rotvec_to_euler_yxz(rotvec: np.ndarray, *, degrees: bool = True) -> np.ndarray:
    """Inverse of :func:`euler_yxz_to_rotvec`: rotation vectors (N, 3) -> (yaw, pitch,
    roll) (N, 3)."""
    r = Rotation.from_rotvec(np.asarray(rotvec, dtype=np.float64).reshape(-1, 3))
    return r.as_euler("YXZ", degrees=degrees)


# ----------------------------------------------------------------- crop transforms


def crop_scale(boxes: np.ndarray, size: int) -> np.ndarray:
    """Original -> crop pixel scale (...,) of boxes (..., 4) for a ``size`` crop."""
    return size / (boxes[..., 2] - boxes[..., 0])


def to_crop(points: np.ndarray, boxes: np.ndarray, size: int) -> np.ndarray:
    """Original-pixel points (N, P, D>=2) -> crop pixels; a 3rd coordinate scales like x."""
    s = crop_scale(boxes, size)[:, None, None]
    out = points * s
    out[..., 0] -= boxes[:, None, 0] * s[..., 0]
    out[..., 1] -= boxes[:, None, 1] * s[..., 0]
    return out


def to_original(points: np.ndarray, boxes: np.ndarray, size: int) -> np.ndarray:
    """Inverse of :func:`to_crop`."""
    s = crop_scale(boxes, size)[:, None, None]
    out = points / s
    out[..., 0] += boxes[:, None, 0]
    out[..., 1] += boxes[:, None, 1]
    return out


def keep_inside(centres: np.ndarray, side: float, frame_size: tuple[int, int]) -> np.ndarray:
    """Box centres (N, 2) moved so boxes of ``side`` stay inside a frame of ``frame_size``
    (width, height); centred on an axis the box is larger than. Modifies ``centres``."""
    for k, extent in enumerate(frame_size):
        if side <= extent:
            centres[:, k] = np.clip(centres[:, k], side / 2, extent - side / 2)
        else:
            centres[:, k] = extent / 2
    return centres


def boxes_at(centres: np.ndarray, side: float) -> np.ndarray:
    """Square boxes (N, 4) of ``side`` centred on ``centres`` (N, 2)."""
    return np.concatenate([centres - side / 2, centres + side / 2], axis=1)
