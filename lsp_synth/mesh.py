"""The textured face mesh: a real photo's MediaPipe Face Mesh points as a 3D surface.

:func:`face_model` turns one photo into a :class:`FaceModel` in object coordinates
(centimetres; x to image-right, y down, z away from the camera; the origin is the mean of
the 468 face points; see :mod:`lsp_synth.render3d` for every convention): Face Mesh gives
478 points with depth, Delaunay triangulation gives the surface, the photo is its texture.
The mouth opening is a hole whose triangles are kept apart (the teeth); a "skirt" ring
around the face oval carries the photo's hair, ears and neck. :meth:`FaceModel.deform`
opens the jaw by a known amount.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from lsp_prep.constants import EYE_DISTANCE_CM, N_FACE_POINTS, N_MESH_POINTS
from lsp_prep.errors import InputError
from lsp_synth.portraits import check_rgb

EYE_OUTER = (33, 263)
"""MediaPipe indices of the outer eye corners (subject's right, left) that fix the scale."""

LIPS_OUTER: tuple[int, ...] = (
    *(61, 185, 40, 39, 37, 0, 267, 269, 270, 409),
    *(291, 375, 321, 405, 314, 17, 84, 181, 91, 146),
)
"""MediaPipe outer lip contour: right corner 61, upper lip to 291, lower lip back."""

LIPS_INNER: tuple[int, ...] = (
    *(78, 191, 80, 81, 82, 13, 312, 311, 310, 415),
    *(308, 324, 318, 402, 317, 14, 87, 178, 88, 95),
)
"""MediaPipe inner lip contour: right corner 78, upper lip to 308, lower lip back."""

UPPER_LIP = LIPS_OUTER[1:10] + LIPS_INNER[1:10]
"""Upper-lip points of both contours, corners excluded; they never move with the jaw."""

LOWER_LIP = LIPS_OUTER[11:] + LIPS_INNER[11:]
"""Lower-lip points of both contours, corners excluded; they move fully with the jaw."""

FACE_OVAL: tuple[int, ...] = (
    *(10, 338, 297, 332, 284, 251, 389, 356, 454, 323, 361, 288, 397, 365, 379, 378),
    *(400, 377, 152, 148, 176, 149, 150, 136, 172, 58, 132, 93, 234, 127, 162, 21),
    *(54, 103, 67, 109),
)
"""MediaPipe face outline, clockwise as displayed from the forehead: the mesh's boundary."""

CHIN = 152
"""MediaPipe index of the chin point."""

DEPTH_SCALE = 0.6
"""Default factor on MediaPipe's depth (z) when building a mesh. Face Mesh run on renders
of a turned head places its landmarks as if the face were shallower than the depth it
reports for the frontal photo: on a 3 s, +-30 degree yaw, +-20 degree pitch clip (640x360,
focal 500 px, 60 cm; decoded H.264) the per-frame median error of the LSP "stable" points
is 2.4 px (worst frame 5.9 px) with the raw depth and 1.6 px (worst 3.0 px) at 0.6. The
renders then agree best with what MediaPipe-based tracking measures. Whatever the factor,
the truth is the mesh."""


@dataclass(frozen=True, eq=False)
class FaceModel:
    """A textured face mesh in object coordinates (cm), built from one photo."""

    vertices: np.ndarray
    """Rest vertices (478, 3) in object coordinates (cm); index = MediaPipe index."""
    triangles: np.ndarray
    """Face surface (T, 3) int vertex indices, each ordered so that its texture-space
    signed area ``(b - a) x (c - a)`` (y down) is positive; the mouth opening is a hole."""
    mouth_triangles: np.ndarray
    """Triangles (M, 3) that filled the mouth opening of the photo (teeth); rendered at the
    rest pose, behind the face surface."""
    uv: np.ndarray
    """Texture coordinates (478, 2): the photo pixel (x, y) of every vertex (pixel centres)."""
    texture: np.ndarray
    """The photo (H, W, 3) RGB uint8."""
    lower_lip_jaw_weights: np.ndarray
    """(478,) in [0, 1]: how far each vertex moves (times the mouth opening) when the mouth
    opens; 1 on the lower lip and the chin, 0 on the upper lip and above."""
    cm_per_px: float
    """Object centimetres per photo pixel."""
    origin_px: np.ndarray
    """(3,) photo point (x, y, depth in pixels) that is the object origin:
    ``vertices = (points_px - origin_px) * cm_per_px`` where ``points_px`` are the photo's
    Face Mesh points with their depth multiplied by :attr:`depth_scale`."""
    depth_scale: float = DEPTH_SCALE
    """Factor applied to MediaPipe's depth (see :data:`DEPTH_SCALE`)."""
    skirt_vertices: np.ndarray = field(default_factory=lambda: np.zeros((0, 3)))
    """Rest vertices (S, 3), object cm, of a ring around the face oval that carries the
    photo's hair, ears and neck, so the face is not a bare mask; not landmarks."""
    skirt_uv: np.ndarray = field(default_factory=lambda: np.zeros((0, 2)))
    """Texture coordinates (S, 2) of :attr:`skirt_vertices`."""
    skirt_parent: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    """(S,) oval vertex (MediaPipe index) each skirt vertex follows when the jaw moves."""
    skirt_triangles: np.ndarray = field(default_factory=lambda: np.zeros((0, 3), np.int32))
    """Triangles (Q, 3) between the face oval and the skirt ring, indexing the 478
    vertices followed by the skirt vertices (index ``478 + s``)."""

    def __post_init__(self) -> None:
        if self.vertices.shape != (N_MESH_POINTS, 3):
            raise ValueError(f"vertices must be ({N_MESH_POINTS}, 3), got {self.vertices.shape}")
        if self.uv.shape != (N_MESH_POINTS, 2):
            raise ValueError(f"uv must be ({N_MESH_POINTS}, 2), got {self.uv.shape}")
        if self.lower_lip_jaw_weights.shape != (N_MESH_POINTS,):
            raise ValueError("lower_lip_jaw_weights must be (478,)")

    def deform(self, mouth_open_cm: np.ndarray) -> np.ndarray:
        """Vertices (N, 478, 3) with the jaw opened by ``mouth_open_cm`` (N,) along +y."""
        d = np.asarray(mouth_open_cm, dtype=np.float64).reshape(-1)
        out = np.repeat(self.vertices[None], len(d), axis=0)
        out[:, :, 1] += d[:, None] * self.lower_lip_jaw_weights[None, :]
        return out

    def with_skirt(self, points_obj: np.ndarray) -> np.ndarray:
        """Deformed vertices (..., 478, 3) -> the same followed by the skirt (..., 478 + S, 3).

        Each skirt vertex moves by the displacement of its :attr:`skirt_parent`.
        """
        p = np.asarray(points_obj, dtype=np.float64)
        moved = p[..., self.skirt_parent, :] - self.vertices[self.skirt_parent]
        return np.concatenate([p, self.skirt_vertices + moved], axis=-2)


def mesh_landmarks(image: np.ndarray, *, min_face_px: int = 300) -> np.ndarray:
    """MediaPipe Face Mesh (static mode, refined) on an RGB photo: (478, 3) pixels.

    x, y are pixel centres of ``image``; z is MediaPipe's depth in the same pixel scale as
    x, positive away from the camera. A face narrower than ``min_face_px`` is measured on
    the photo upscaled (bicubic) until it is that wide, then mapped back.
    """
    import cv2

    image = check_rgb(image)

    def run(img: np.ndarray) -> np.ndarray:
        import mediapipe as mp

        from lsp_prep.stages.track import quiet_native_stderr

        with (
            quiet_native_stderr(),
            mp.solutions.face_mesh.FaceMesh(
                static_image_mode=True, max_num_faces=1, refine_landmarks=True
            ) as fm,
        ):
            res = fm.process(np.ascontiguousarray(img))
        if not res.multi_face_landmarks:
            raise InputError("Face Mesh finds no face in the photo")
        h, w = img.shape[:2]
        lm = res.multi_face_landmarks[0].landmark
        pts = np.array([(p.x * w, p.y * h, p.z * w) for p in lm], np.float64)
        pts[:, :2] -= 0.5  # MediaPipe puts pixel edges at integers, we put centres there
        return pts

    pts = run(image)
    width = float(np.ptp(pts[:N_FACE_POINTS, 0]))
    if width < min_face_px:
        k = int(np.ceil(min_face_px / max(width, 1.0)))
        big = cv2.resize(image, None, fx=k, fy=k, interpolation=cv2.INTER_CUBIC)
        pts = run(big)
        pts[:, :2] = (pts[:, :2] + 0.5) / k - 0.5
        pts[:, 2] /= k
    return pts


def face_model(
    image: np.ndarray,
    *,
    min_face_px: int = 300,
    eye_distance_cm: float = EYE_DISTANCE_CM,
    depth_scale: float = DEPTH_SCALE,
    skirt: float = 0.2,
) -> FaceModel:
    """Build a :class:`FaceModel` from an RGB photo (H, W, 3) uint8 of one face.

    Vertices are the photo's Face Mesh points (see :func:`mesh_landmarks`) with their
    depth multiplied by ``depth_scale`` (see :data:`DEPTH_SCALE`), centred at the mean of
    the 468 face points and scaled so that the outer eye corners are ``eye_distance_cm``
    apart (3D distance). Triangles: Delaunay on the (x, y) of the 468 face points, minus
    those whose centroid lies inside the inner-lip polygon (kept apart as
    :attr:`FaceModel.mouth_triangles`) and minus those whose centroid lies outside the face
    oval (:data:`FACE_OVAL`): the long, thin triangles Delaunay adds in the concave parts
    of the outline.

    With ``skirt`` > 0 a ring of extra vertices lies outside the face oval, ``1 + skirt``
    times as far from the oval's centre (in x, y) and ``skirt`` times that distance
    further back; triangles between the oval and the ring carry the photo around the face
    (hair, ears, neck).
    """
    if not (np.isfinite(skirt) and 0 <= skirt <= 1):
        raise InputError(f"skirt must be in [0, 1], got {skirt}")
    image = check_rgb(image)
    if not eye_distance_cm > 0:
        raise InputError(f"eye_distance_cm must be positive, got {eye_distance_cm}")
    if not (np.isfinite(depth_scale) and depth_scale > 0):
        raise InputError(f"depth_scale must be positive, got {depth_scale}")
    pts = mesh_landmarks(image, min_face_px=min_face_px)
    pts[:, 2] *= depth_scale
    face = pts[:N_FACE_POINTS]
    origin = face.mean(axis=0)
    eye_px = float(np.linalg.norm(pts[EYE_OUTER[0]] - pts[EYE_OUTER[1]]))
    if eye_px < 1.0:
        raise InputError("Face Mesh points are degenerate (outer eye corners coincide)")
    scale = eye_distance_cm / eye_px
    vertices = (pts - origin) * scale

    uv = pts[:, :2].copy()
    tri, mouth = _surface(uv)
    ring = np.asarray(FACE_OVAL)
    skirt_v, skirt_uv, skirt_tri = _skirt(
        vertices, uv, ring, skirt=skirt, scale=scale, origin=origin
    )
    return FaceModel(
        vertices=vertices,
        triangles=tri.astype(np.int32),
        mouth_triangles=mouth.astype(np.int32),
        uv=uv,
        texture=image,
        lower_lip_jaw_weights=jaw_weights(vertices),
        cm_per_px=scale,
        origin_px=origin,
        depth_scale=float(depth_scale),
        skirt_vertices=skirt_v,
        skirt_uv=skirt_uv,
        skirt_parent=ring[: len(skirt_v)].copy(),
        skirt_triangles=skirt_tri.astype(np.int32),
    )


def _surface(uv: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Delaunay triangles of the 468 face points ``uv`` (478, 2): ``(surface, mouth)``.

    Both (T, 3) int64, oriented by :func:`_orient`; mouth triangles have their centroid
    inside the inner lips, and triangles with their centroid outside the face oval go.
    """
    from scipy.spatial import Delaunay

    tri = Delaunay(uv[:N_FACE_POINTS]).simplices.astype(np.int64)
    tri = _orient(tri, uv)
    inner = uv[list(LIPS_INNER)].astype(np.float32)
    centroids = uv[tri].mean(axis=1)
    in_mouth = np.array([_inside(inner, c) for c in centroids], dtype=bool)  # ~900 tests, cheap
    mouth = tri[in_mouth]
    oval = uv[list(FACE_OVAL)].astype(np.float32)
    outside = np.array([not _inside(oval, c) for c in centroids], dtype=bool)
    return tri[~in_mouth & ~outside], mouth


def _skirt(
    vertices: np.ndarray,
    uv: np.ndarray,
    ring: np.ndarray,
    *,
    skirt: float,
    scale: float,
    origin: np.ndarray,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The skirt around the oval ``ring``: ``(vertices (S, 3), uv (S, 2), triangles (Q, 3))``.

    See :func:`face_model` for the geometry; S is 0 when ``skirt`` is 0.
    """
    n_ring = len(ring) if skirt > 0 else 0
    centre = vertices[ring, :2].mean(axis=0)
    rel = vertices[ring, :2] - centre
    skirt_v = np.concatenate(
        [
            centre + (1 + skirt) * rel,
            vertices[ring, 2:] + skirt * np.linalg.norm(rel, axis=1)[:, None],
        ],
        axis=1,
    )[:n_ring]
    skirt_uv = skirt_v[:, :2] / scale + origin[:2]
    quads = []
    for k in range(n_ring):
        a, b = ring[k], ring[(k + 1) % n_ring]
        sa, sb = N_MESH_POINTS + k, N_MESH_POINTS + (k + 1) % n_ring
        quads += [(a, b, sb), (a, sb, sa)]
    skirt_tri = np.asarray(quads, np.int64).reshape(-1, 3)
    skirt_tri = _orient(skirt_tri, np.concatenate([uv, skirt_uv]))
    return skirt_v, skirt_uv, skirt_tri


def jaw_weights(vertices: np.ndarray) -> np.ndarray:
    """Per-vertex jaw weights (478,) in [0, 1] for rest ``vertices`` (478, 3), object cm.

    Vertically a smoothstep from 0 at the mean height of the upper inner lip to 1 at the
    mean height of the lower inner lip (at least 0.4 cm lower), so the chin and the lower
    lip get 1, the lip corners little and everything above nothing; horizontally a
    smoothstep from 1 within 45 % of the half face width from the mouth's centre to 0 at
    85 % (the jaw angles, MediaPipe 58 and 288, stay put). Upper-lip points are then set
    to 0 and lower-lip points to 1.
    """
    v = np.asarray(vertices, dtype=np.float64)
    y_up = v[list(LIPS_INNER[1:10]), 1].mean()
    y_lo = max(v[list(LIPS_INNER[11:]), 1].mean(), y_up + 0.4)
    xc = v[list(LIPS_INNER), 0].mean()
    half = 0.5 * abs(v[454, 0] - v[234, 0])
    wy = _smoothstep((v[:, 1] - y_up) / (y_lo - y_up))
    wx = 1.0 - _smoothstep((np.abs(v[:, 0] - xc) - 0.45 * half) / (0.40 * half))
    w = wy * wx
    w[list(UPPER_LIP)] = 0.0
    w[list(LOWER_LIP)] = 1.0
    return w


def _smoothstep(t: np.ndarray) -> np.ndarray:
    t = np.clip(t, 0.0, 1.0)
    return t * t * (3.0 - 2.0 * t)


def twice_signed_area(tri_pts: np.ndarray) -> np.ndarray:
    """Twice the signed area (y down) of triangles (..., 3, 2) -> (...)."""
    a, b, c = tri_pts[..., 0, :], tri_pts[..., 1, :], tri_pts[..., 2, :]
    return (b[..., 0] - a[..., 0]) * (c[..., 1] - a[..., 1]) - (b[..., 1] - a[..., 1]) * (
        c[..., 0] - a[..., 0]
    )


def _orient(tri: np.ndarray, uv: np.ndarray) -> np.ndarray:
    """Reorder triangles (T, 3) so that their signed area in ``uv`` is positive."""
    tri = tri.copy()
    flip = twice_signed_area(uv[tri]) < 0
    tri[flip] = tri[flip][:, [0, 2, 1]]
    return tri


def _inside(polygon: np.ndarray, point: np.ndarray) -> bool:
    import cv2

    return cv2.pointPolygonTest(polygon, (float(point[0]), float(point[1])), False) > 0
