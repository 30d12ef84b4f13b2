"""The torso of the 3D renders: the photo below the face as a camera-facing plane.

The plane lies :data:`SHOULDER_GAP_CM` behind the head's base depth and follows
:data:`SHOULDER_FOLLOW` of the head's translation; a few textured points on it are the
shoulder truth a shoulder tracker is checked against.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from lsp_prep.constants import N_FACE_POINTS
from lsp_prep.errors import InputError
from lsp_synth.layers import Layer, soft_rgba
from lsp_synth.mesh import LIPS_INNER, FaceModel
from lsp_synth.pinhole import Camera

SHOULDER_GAP_CM = 2.0
"""The shoulder plane lies this far behind the head's base depth."""

SHOULDER_FOLLOW = 0.5
"""Fraction of the head's x/y translation (from its base position) the shoulders follow."""


@dataclass(frozen=True, eq=False)
class ShoulderBoard:
    """The torso of the photo as a camera-facing plane behind the head."""

    rgba: np.ndarray
    """Texture (h, w, 4) uint8: the photo below the mouth, the face cut out, edges feathered."""
    top_left_px: tuple[int, int]
    """Photo pixel (x, y) of the texture's pixel (0, 0)."""


def shoulder_board(model: FaceModel, *, feather: float = 0.06) -> ShoulderBoard:
    """Cut the torso out of ``model.texture``: the rows from the inner lips down.

    The face and its skirt are cut out (they are drawn as the mesh and must not show
    twice); the borders fade out over ``feather`` times the shorter side.
    """
    import cv2

    h = model.texture.shape[0]
    y0 = int(np.floor(model.uv[list(LIPS_INNER), 1].mean()))
    if y0 >= h - 8:
        raise InputError("the photo has no torso below the face to use as shoulders")
    crop = model.texture[y0:, :]
    rgba = soft_rgba(crop, feather=feather)
    face_uv = np.concatenate([model.uv[:N_FACE_POINTS], model.skirt_uv])
    hull = cv2.convexHull(np.round((face_uv - (0, y0)) * 16).astype(np.int32))
    hole = np.zeros(crop.shape[:2], np.uint8)
    cv2.fillConvexPoly(hole, hull, (255,), lineType=cv2.LINE_AA, shift=4)
    rgba[:, :, 3] = np.minimum(rgba[:, :, 3], 255 - hole)
    return ShoulderBoard(rgba=rgba, top_left_px=(0, y0))


def shoulder_placement(
    *,
    model: FaceModel,
    camera: Camera,
    translation: np.ndarray,
    base_xy_cm: tuple[float, float],
    distance_cm: float,
) -> tuple[np.ndarray, np.ndarray]:
    """Plane placement per frame: ``(offset_cm (N, 3), scale px per photo px (N,))``.

    Photo pixel ``(u, v)`` of the torso lies at camera point
    ``((u - origin_x) * cm_per_px, (v - origin_y) * cm_per_px, 0) + offset_cm`` where
    ``offset = (bx + 0.5 (Tx - bx), by + 0.5 (Ty - by), distance_cm + 2)`` follows
    :data:`SHOULDER_FOLLOW` of the head's translation ``T`` (N, 3) from its base
    ``b = base_xy_cm``; ``distance_cm`` is the head's base depth (see
    :class:`~lsp_synth.render3d.HeadMotion`).
    """
    base = np.array([*base_xy_cm])
    off = np.empty((len(translation), 3))
    off[:, :2] = base + SHOULDER_FOLLOW * (translation[:, :2] - base)
    off[:, 2] = distance_cm + SHOULDER_GAP_CM
    return off, camera.focal * model.cm_per_px / off[:, 2]


def photo_to_camera(model: FaceModel, points_px: np.ndarray, offset: np.ndarray) -> np.ndarray:
    """Torso photo points (P, 2) -> camera points (N, P, 3) for plane offsets (N, 3)."""
    rel = (np.asarray(points_px, np.float64) - model.origin_px[:2]) * model.cm_per_px
    out = np.zeros((len(offset), len(rel), 3))
    out[:, :, :2] = rel[None]
    return out + offset[:, None, :]


def pick_shoulder_points(
    *,
    model: FaceModel,
    board: ShoulderBoard,
    camera: Camera,
    offsets: np.ndarray,
    face2d: np.ndarray,
    n_points: int,
    margin_px: float = 12.0,
) -> np.ndarray:
    """Choose ``n_points`` textured torso points (P, 2) photo px, visible in every frame.

    Candidates are Shi-Tomasi corners of the torso texture away from its feathered edges
    and within 1.2 face widths of the face's centre line; a candidate qualifies when in
    every frame its projection stays ``margin_px`` inside the image and outside the
    projected head (convex hull of ``face2d`` (N, V, 2), grown by ``margin_px``). The
    strongest qualifying corner comes first, then farthest-point sampling spreads the rest.
    """
    import cv2

    gray = cv2.cvtColor(np.ascontiguousarray(board.rgba[:, :, :3]), cv2.COLOR_RGB2GRAY)
    mask = (board.rgba[:, :, 3] >= 250).astype(np.uint8) * 255
    lo, hi = model.uv[:N_FACE_POINTS, 0].min(), model.uv[:N_FACE_POINTS, 0].max()
    cols = np.arange(mask.shape[1]) + board.top_left_px[0]
    mask[:, np.abs(cols - (lo + hi) / 2) > 1.2 * (hi - lo)] = 0
    corners = cv2.goodFeaturesToTrack(
        gray, maxCorners=400, qualityLevel=0.01, minDistance=5, mask=mask, blockSize=5
    )
    if corners is None:
        raise InputError("the torso texture has no corners to track")
    cand = corners.reshape(-1, 2).astype(np.float64) + board.top_left_px  # photo px
    q = camera.project(photo_to_camera(model, cand, offsets))  # (N, C, 2)
    w, h = camera.size
    ok = (
        (q[..., 0] >= margin_px)
        & (q[..., 0] <= w - 1 - margin_px)
        & (q[..., 1] >= margin_px)
        & (q[..., 1] <= h - 1 - margin_px)
    ).all(axis=0)
    for n in range(len(offsets)):
        hull = cv2.convexHull(face2d[n].astype(np.float32))
        for c in np.flatnonzero(ok):
            if cv2.pointPolygonTest(hull, (float(q[n, c, 0]), float(q[n, c, 1])), True) > (
                -margin_px
            ):
                ok[c] = False
    cand = cand[ok]
    if len(cand) < n_points:
        raise InputError(
            f"only {len(cand)} torso points stay in view in every frame, {n_points} needed: "
            "use a longer focal length, a larger image or a smaller motion"
        )
    chosen = [0]
    dist = np.linalg.norm(cand - cand[0], axis=1)
    while len(chosen) < n_points:
        i = int(np.argmax(dist))
        chosen.append(i)
        dist = np.minimum(dist, np.linalg.norm(cand - cand[i], axis=1))
    return cand[chosen]


@dataclass(frozen=True, eq=False)
class TorsoPlane:
    """The torso plane of one clip: what to paint and where its points are."""

    layer: Layer
    """The torso texture and its board pixel -> frame pixel affines (N, 2, 3)."""
    photo_px: np.ndarray
    """The chosen shoulder points (P, 2) in photo pixels."""
    points3d: np.ndarray
    """The shoulder points (N, P, 3) in camera cm."""
    affine: np.ndarray
    """Photo pixel -> frame pixel (N, 2, 3) of the plane."""


def torso_plane(
    *,
    model: FaceModel,
    camera: Camera,
    translation: np.ndarray,
    face2d: np.ndarray,
    base_xy_cm: tuple[float, float],
    distance_cm: float,
    n_points: int,
) -> TorsoPlane:
    """Place the torso (:func:`shoulder_board`) behind a head moving by ``translation``.

    ``translation`` (N, 3) cm is the head's per frame, ``face2d`` (N, V, 2) its projected
    vertices (the points stay outside them), ``base_xy_cm`` and ``distance_cm`` its base
    position (see :func:`shoulder_placement`); ``n_points`` shoulder points are chosen by
    :func:`pick_shoulder_points`.
    """
    board = shoulder_board(model)
    offsets, scale = shoulder_placement(
        model=model,
        camera=camera,
        translation=translation,
        base_xy_cm=base_xy_cm,
        distance_cm=distance_cm,
    )
    pts_px = pick_shoulder_points(
        model=model,
        board=board,
        camera=camera,
        offsets=offsets,
        face2d=face2d,
        n_points=n_points,
    )
    # The plane faces the camera: photo -> frame is a similarity without rotation.
    affine = np.zeros((len(offsets), 2, 3))
    affine[:, 0, 0] = affine[:, 1, 1] = scale
    origin = photo_to_camera(model, np.zeros((1, 2)), offsets)
    affine[:, :, 2] = camera.project(origin)[:, 0]  # where photo pixel (0, 0) lands
    board_affine = affine.copy()  # board pixel (i, j) is photo pixel (i + ox, j + oy)
    board_affine[:, :, 2] += scale[:, None] * np.asarray(board.top_left_px, np.float64)
    return TorsoPlane(
        layer=Layer(rgba=board.rgba, affine=board_affine),
        photo_px=pts_px,
        points3d=photo_to_camera(model, pts_px, offsets),
        affine=affine,
    )
