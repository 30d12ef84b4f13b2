"""The rasteriser of the 3D renders: paint a posed :class:`~lsp_synth.mesh.FaceModel`.

A painter's algorithm: triangles are culled when they face away, sorted far to near and
rasterised into a triangle-index buffer (``cv2.fillConvexPoly``, sub-pixel vertices), then
every covered pixel reads the texture through its own triangle's affine map in one
``cv2.remap``. That is the same per-triangle affine texture mapping as warping each
triangle's patch with ``cv2.warpAffine``, without seams between triangles or a copy per
triangle: about 5 ms for a head in a 640x360 frame. Behind the face surface lie the mouth
cavity (a flat dark polygon inside the moving inner lips) and the photo's teeth at the rest
pose; around it the model's skirt carries the photo's hair, ears and neck.
"""

from __future__ import annotations

import numpy as np

from lsp_prep.errors import InputError
from lsp_synth.mesh import LIPS_INNER, FaceModel, twice_signed_area
from lsp_synth.pinhole import Camera, rotation_matrices

MOUTH_COLOUR = (62, 22, 26)
"""RGB of the mouth cavity revealed when the jaw opens."""


def render_head_frame(
    frame: np.ndarray,
    *,
    model: FaceModel,
    camera: Camera,
    rotation: np.ndarray,
    translation: np.ndarray,
    points_obj: np.ndarray,
) -> np.ndarray:
    """Paint the head into ``frame`` (H, W, 3) RGB uint8 in place; return ``frame``.

    ``rotation`` (3,) rotation vector (radians), ``translation`` (3,) cm, ``points_obj``
    (478, 3) the deformed vertices in object cm. Painted in order: the mouth cavity (the
    inner-lip polygon of ``points_obj``, flat :data:`MOUTH_COLOUR`), the teeth (the mouth
    triangles at the rest pose), then the face triangles far to near, back faces culled.
    """
    import cv2

    h, w = frame.shape[:2]
    if (w, h) != tuple(camera.size):
        raise InputError(f"frame is {w}x{h} but the camera is {camera.size[0]}x{camera.size[1]}")
    r = rotation_matrices(rotation)[0]
    t = np.asarray(translation, np.float64).reshape(3)
    cam = model.with_skirt(points_obj) @ r.T + t  # (478 + S, 3)
    if (cam[:, 2] <= 1e-3).any():
        raise InputError("the head reaches behind the camera")
    p = camera.project(cam)  # (478 + S, 2)
    p_rest = camera.project(model.vertices @ r.T + t)  # (478, 2)
    uv = np.concatenate([model.uv, model.skirt_uv])

    # Every triangle to paint, in painting order: (K, 3, 2) screen, (K, 3, 2) texture.
    teeth = model.mouth_triangles
    surface = np.concatenate([model.triangles, model.skirt_triangles])
    surface = surface[twice_signed_area(p[surface]) > 1e-3]  # back faces and edge-on triangles go
    surface = surface[np.argsort(-cam[surface, 2].mean(axis=1), kind="stable")]
    teeth = teeth[twice_signed_area(p_rest[teeth]) > 1e-3]
    screen = np.concatenate([p_rest[teeth], p[surface]])  # (K, 3, 2)
    tex = np.concatenate([uv[teeth], uv[surface]])  # (K, 3, 2)
    if len(screen) == 0:
        return frame

    lips = p[list(LIPS_INNER)]
    allp = np.concatenate([p, p_rest])
    x0, y0 = np.maximum(np.floor(allp.min(axis=0)).astype(int) - 1, 0)
    x1 = min(w, int(np.ceil(allp[:, 0].max())) + 2)
    y1 = min(h, int(np.ceil(allp[:, 1].max())) + 2)
    if x1 <= x0 or y1 <= y0:
        return frame

    ids = np.full((y1 - y0, x1 - x0), -1, np.int32)
    cavity = len(screen)  # painted first, with its own id
    fixed = np.round((lips - (x0, y0)) * 16).astype(np.int32)
    cv2.fillPoly(ids, [fixed], (cavity,), lineType=cv2.LINE_8, shift=4)
    fixed = np.round((screen - (x0, y0)) * 16).astype(np.int32)
    for k in range(len(fixed)):
        cv2.fillConvexPoly(ids, fixed[k], (k,), lineType=cv2.LINE_8, shift=4)

    # Per triangle, the affine screen (x, y, 1) -> texture (u, v): A = inv(M) @ uv.
    m = np.concatenate([screen, np.ones((len(screen), 3, 1))], axis=2)  # (K, 3, 3)
    affine = np.linalg.solve(m, tex)  # (K, 3, 2)
    yy, xx = np.nonzero((ids >= 0) & (ids < cavity))
    a = affine[ids[yy, xx]]  # (n, 3, 2)
    gx, gy = xx + x0, yy + y0
    map_x = np.full(ids.shape, -1.0, np.float32)
    map_y = np.full(ids.shape, -1.0, np.float32)
    map_x[yy, xx] = a[:, 0, 0] * gx + a[:, 1, 0] * gy + a[:, 2, 0]
    map_y[yy, xx] = a[:, 0, 1] * gx + a[:, 1, 1] * gy + a[:, 2, 1]
    colours = cv2.remap(
        model.texture, map_x, map_y, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE
    )
    roi = frame[y0:y1, x0:x1]
    roi[yy, xx] = colours[yy, xx]
    roi[ids == cavity] = MOUTH_COLOUR
    return frame
