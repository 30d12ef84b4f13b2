"""The renderer's conditional feature map: landmarks and shoulders drawn as lines.

Training and animation draw it with the same function: the LSP-73 face points projected
with the camera (:func:`face_points2d`), drawn as the layout's polylines in its painting
order, then the shoulder points as two polylines (the image-left half of the points, then
the image-right half, each ordered left to right as :mod:`lsp_prep.stages.shoulders.choose`
stores them).
One channel, white anti-aliased lines on black, ``uint8``.
"""

from __future__ import annotations

import cv2
import numpy as np

from lsp_prep.camera import project, project_object
from lsp_prep.constants import IMAGE_SIZE
from lsp_prep.errors import InputError
from lsp_prep.layout import Layout, load_layout

SUBPIXEL_BITS = 4
"""cv2 fixed-point shift: coordinates are drawn to 1/16 pixel."""


def line_thickness(size: int) -> int:
    """Line width in pixels for a ``size`` x ``size`` map (2 at 512, at least 1)."""
    return max(1, round(2 * size / IMAGE_SIZE))


def face_points2d(
    points3d: np.ndarray, rotation: np.ndarray, translation: np.ndarray, intrinsics: np.ndarray
) -> np.ndarray:
    """Object-space landmarks to crop pixels: ``K (R X + T)`` dehomogenised.

    ``points3d`` (..., P, 3) object coordinates; ``rotation`` (..., 3) Rodrigues radians;
    ``translation`` (..., 3); ``intrinsics`` (..., 3, 3). Leading dimensions broadcast
    (one frame or N frames). Returns (..., P, 2) pixels.
    """
    return project_object(points3d, rotation, translation, np.asarray(intrinsics, np.float64))


def billboard_points2d(
    billboard3d: np.ndarray, intrinsics: np.ndarray, shift: np.ndarray | None = None
) -> np.ndarray:
    """Shoulder billboard (P, 3) camera coordinates, moved by ``shift`` (3,), to pixels (P, 2)."""
    pts = np.asarray(billboard3d, np.float64)
    if shift is not None:
        pts = pts + np.asarray(shift, np.float64)
    return project(pts, np.asarray(intrinsics, np.float64))


def _polyline(canvas: np.ndarray, pts: np.ndarray, closed: bool, thickness: int) -> None:
    pts = pts[np.isfinite(pts).all(axis=1)]
    if len(pts) < 2:
        return
    # keep far-off points from overflowing cv2's fixed-point coordinates
    lim = 8 * max(canvas.shape)
    fixed = np.round(np.clip(pts, -lim, lim) * (1 << SUBPIXEL_BITS)).astype(np.int32)
    cv2.polylines(
        canvas, [fixed], closed, (255,), thickness, lineType=cv2.LINE_AA, shift=SUBPIXEL_BITS
    )


_PARTS: dict[int, tuple[list[np.ndarray], list[np.ndarray]]] = {}


def _parts(layout: Layout) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """The layout's open and closed polylines as index arrays (cached per layout)."""
    key = id(layout)
    if key not in _PARTS:
        open_ = [np.array(p.points) for p in layout.draw if not p.closed]
        closed = [np.array(p.points) for p in layout.draw if p.closed]
        _PARTS[key] = (open_, closed)
    return _PARTS[key]


def draw_feature_map(
    face2d: np.ndarray,
    shoulders2d: np.ndarray | None = None,
    *,
    size: int = IMAGE_SIZE,
    layout: Layout | None = None,
    thickness: int | None = None,
) -> np.ndarray:
    """Draw one frame's conditional feature map: (size, size) uint8, lines 255 on 0.

    ``face2d`` (73, 2) LSP-73 points in pixels of the ``size`` x ``size`` crop; drawn as
    the layout's polylines. ``shoulders2d`` (P, 2) optional shoulder points, drawn as two
    polylines (first half, second half). Non-finite points are skipped; points off the
    image are clipped by the drawing, never an error. Every line has the same value, so
    the order the polylines are painted in does not matter; they are drawn in two calls
    (open, closed) when every point is finite.
    """
    layout = layout or load_layout()
    face2d = np.asarray(face2d, np.float64)
    if face2d.shape != (layout.n_points, 2):
        raise InputError(f"face2d must be ({layout.n_points}, 2), got {face2d.shape}")
    thickness = thickness or line_thickness(size)
    canvas = np.zeros((size, size), np.uint8)
    open_, closed = _parts(layout)
    if np.isfinite(face2d).all():
        lim = 8 * size  # keep far-off points from overflowing cv2's fixed-point coordinates
        fixed = np.round(np.clip(face2d, -lim, lim) * (1 << SUBPIXEL_BITS)).astype(np.int32)
        for parts, is_closed in ((open_, False), (closed, True)):
            cv2.polylines(
                canvas,
                [fixed[idx] for idx in parts],
                is_closed,
                (255,),
                thickness,
                lineType=cv2.LINE_AA,
                shift=SUBPIXEL_BITS,
            )
    else:
        for parts, is_closed in ((open_, False), (closed, True)):
            for idx in parts:
                _polyline(canvas, face2d[idx], is_closed, thickness)
    if shoulders2d is not None:
        sh = np.asarray(shoulders2d, np.float64)
        if sh.ndim != 2 or sh.shape[1] != 2:
            raise InputError(f"shoulders2d must be (P, 2), got {sh.shape}")
        half = (len(sh) + 1) // 2
        _polyline(canvas, sh[:half], False, thickness)
        _polyline(canvas, sh[half:], False, thickness)
    return canvas
