"""Synthetic 3D head clips with known camera, head pose and 3D landmarks.

A real face photo becomes a textured 3D mesh (:func:`face_model`): MediaPipe Face Mesh gives
478 points with depth, Delaunay triangulation gives the surface, the photo is its texture.
:func:`render_head_clip` moves that mesh by a known rigid pose every frame
(:class:`HeadMotion`), opens its mouth by a known amount driven by a speech envelope
(:func:`speech_envelope`), projects it with a known pinhole :class:`Camera` and paints it
over a shoulder "billboard" (the torso of the same photo, a plane facing the camera that
follows half of the head's translation). :class:`Truth3D` holds what was rendered.

Conventions (the ones a calibration or tracking test compares against):

* **Object coordinates** of the head, in centimetres: x to image-right (the subject's
  left), y down, z away from the camera; the origin is the mean of the 468 face points of
  the rest mesh; outer eye corners (MediaPipe 33 and 263) are
  :data:`~lsp_prep.constants.EYE_DISTANCE_CM` apart.
* **Camera coordinates** are OpenCV's (x right, y down, z forward, centimetres):
  ``X_cam = R @ X_obj + T`` with ``R`` from the rotation vector (scipy
  ``Rotation.from_rotvec``), ``T`` in cm. With ``R = I`` the face looks into the camera
  as it looked into the photographer's.
* **Euler angles** (:func:`lsp_prep.camera.euler_yxz_to_rotvec`):
  ``R = Ry(yaw) @ Rx(pitch) @ Rz(roll)`` (scipy intrinsic ``"YXZ"``), about the object axes.
  Positive yaw turns the nose towards
  image-left (the subject's right), positive pitch tilts the nose down, positive roll turns
  the face clockwise as displayed.
* **Image coordinates** are pixel centres at integers (OpenCV). The principal point is the
  image centre ``((w - 1) / 2, (h - 1) / 2)``; pixels are square.

Rendering is a painter's algorithm: triangles are culled when they face away, sorted far to
near and rasterised into a triangle-index buffer (``cv2.fillConvexPoly``, sub-pixel
vertices), then every covered pixel reads the texture through its own triangle's affine map
in one ``cv2.remap``. That is the same per-triangle affine texture mapping as warping each
triangle's patch with ``cv2.warpAffine``, without seams between triangles or a copy per
triangle: about 5 ms for a head in a 640x360 frame. Behind the face surface lie the mouth
cavity (a flat dark polygon inside the moving inner lips) and the photo's teeth at the rest
pose; around it a "skirt" ring carries the photo's hair, ears and neck.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from lsp_prep.camera import euler_yxz_to_rotvec
from lsp_prep.constants import EYE_DISTANCE_CM, N_FACE_POINTS, N_MESH_POINTS, SAMPLE_RATE
from lsp_prep.errors import InputError
from lsp_synth.render2d import (
    Background,
    _composite,
    _Layer,
    _soft_rgba,
    frame_times,
    make_background,
    write_clip,
)

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

SHOULDER_GAP_CM = 2.0
"""The shoulder plane lies this far behind the head's base depth."""

SHOULDER_FOLLOW = 0.5
"""Fraction of the head's x/y translation (from its base position) the shoulders follow."""

MOUTH_COLOUR = (62, 22, 26)
"""RGB of the mouth cavity revealed when the jaw opens."""


# ----------------------------------------------------------------------------- face model


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

    image = _check_rgb(image)

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
    from scipy.spatial import Delaunay

    if not (np.isfinite(skirt) and 0 <= skirt <= 1):
        raise InputError(f"skirt must be in [0, 1], got {skirt}")
    image = _check_rgb(image)
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
    tri = Delaunay(uv[:N_FACE_POINTS]).simplices.astype(np.int64)
    tri = _orient(tri, uv)
    inner = uv[list(LIPS_INNER)].astype(np.float32)
    centroids = uv[tri].mean(axis=1)
    in_mouth = np.array([_inside(inner, c) for c in centroids], dtype=bool)  # ~900 tests, cheap
    mouth = tri[in_mouth]
    oval = uv[list(FACE_OVAL)].astype(np.float32)
    outside = np.array([not _inside(oval, c) for c in centroids], dtype=bool)
    tri = tri[~in_mouth & ~outside]

    ring = np.asarray(FACE_OVAL)
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
        skirt_parent=ring[:n_ring].copy(),
        skirt_triangles=skirt_tri.astype(np.int32),
    )


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


def _check_rgb(image: np.ndarray) -> np.ndarray:
    image = np.asarray(image)
    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        raise InputError(f"expected an RGB image (H, W, 3) uint8, got {image.shape} {image.dtype}")
    return np.ascontiguousarray(image)


def _cross(tri_pts: np.ndarray) -> np.ndarray:
    """Twice the signed area (y down) of triangles (..., 3, 2) -> (...)."""
    a, b, c = tri_pts[..., 0, :], tri_pts[..., 1, :], tri_pts[..., 2, :]
    return (b[..., 0] - a[..., 0]) * (c[..., 1] - a[..., 1]) - (b[..., 1] - a[..., 1]) * (
        c[..., 0] - a[..., 0]
    )


def _orient(tri: np.ndarray, uv: np.ndarray) -> np.ndarray:
    """Reorder triangles (T, 3) so that their signed area in ``uv`` is positive."""
    tri = tri.copy()
    flip = _cross(uv[tri]) < 0
    tri[flip] = tri[flip][:, [0, 2, 1]]
    return tri


def _inside(polygon: np.ndarray, point: np.ndarray) -> bool:
    import cv2

    return cv2.pointPolygonTest(polygon, (float(point[0]), float(point[1])), False) > 0


# ----------------------------------------------------------------------------- camera, pose


@dataclass(frozen=True)
class Camera:
    """A pinhole camera with square pixels and its principal point at the image centre."""

    focal: float
    """Focal length in pixels."""
    size: tuple[int, int]
    """Image (width, height) in pixels."""

    def __post_init__(self) -> None:
        if not (np.isfinite(self.focal) and self.focal > 0):
            raise InputError(f"Camera.focal must be positive, got {self.focal}")
        if len(self.size) != 2 or min(self.size) < 2:
            raise InputError(f"Camera.size must be (width, height) >= 2, got {self.size}")

    @property
    def principal_point(self) -> np.ndarray:
        """(2,) ``((w - 1) / 2, (h - 1) / 2)``: the image centre in pixel-centre coordinates."""
        w, h = self.size
        return np.array([(w - 1) / 2.0, (h - 1) / 2.0])

    @property
    def K(self) -> np.ndarray:
        """Intrinsic matrix (3, 3)."""
        cx, cy = self.principal_point
        return np.array([[self.focal, 0.0, cx], [0.0, self.focal, cy], [0.0, 0.0, 1.0]])

    def project(self, points: np.ndarray) -> np.ndarray:
        """Camera points (..., 3) (any length unit, z > 0 in front) -> pixels (..., 2)."""
        x = np.asarray(points, dtype=np.float64)
        return self.focal * x[..., :2] / x[..., 2:3] + self.principal_point


def rotation_matrices(rotvec: np.ndarray) -> np.ndarray:
    """Rotation vectors (N, 3) radians -> rotation matrices (N, 3, 3)."""
    from scipy.spatial.transform import Rotation

    return Rotation.from_rotvec(np.asarray(rotvec, dtype=np.float64).reshape(-1, 3)).as_matrix()


@dataclass(frozen=True)
class HeadMotion:
    """Rigid head motion as sinusoids; every component has its own random phase.

    At time ``t``: yaw, pitch, roll are ``amplitude * sin(2 pi f t + phase)`` degrees, and
    the translation is ``(base_xy_cm[0] + dx, base_xy_cm[1] + dy, distance_cm + dz)`` cm
    with ``dx, dy, dz`` sinusoids of ``shift_cm`` amplitude. Zero amplitudes hold still.
    """

    yaw_deg: float = 30.0
    """Amplitude of the rotation about the object y axis (degrees)."""
    pitch_deg: float = 20.0
    """Amplitude of the rotation about the object x axis (degrees)."""
    roll_deg: float = 8.0
    """Amplitude of the rotation about the object z axis (degrees)."""
    rotation_hz: tuple[float, float, float] = (0.33, 0.43, 0.19)
    """Frequencies of yaw, pitch and roll (Hz)."""
    shift_cm: tuple[float, float, float] = (3.0, 2.0, 4.0)
    """Amplitudes of the x, y, z translation (cm)."""
    shift_hz: tuple[float, float, float] = (0.23, 0.37, 0.13)
    """Frequencies of the x, y, z translation (Hz)."""
    distance_cm: float = 60.0
    """Base distance of the object origin from the camera along the optical axis (cm)."""
    base_xy_cm: tuple[float, float] = (0.0, 0.0)
    """Base x, y position of the object origin in camera coordinates (cm)."""
    seed: int = 0
    """Seed of the random phases."""

    def __post_init__(self) -> None:
        if len(self.rotation_hz) != 3 or len(self.shift_cm) != 3 or len(self.shift_hz) != 3:
            raise InputError("HeadMotion.rotation_hz, shift_cm and shift_hz take three values")
        if len(self.base_xy_cm) != 2:
            raise InputError("HeadMotion.base_xy_cm takes two values (x, y)")
        amps = (self.yaw_deg, self.pitch_deg, self.roll_deg, *self.shift_cm)
        if any(not np.isfinite(v) or v < 0 for v in (*amps, *self.rotation_hz, *self.shift_hz)):
            raise InputError(f"HeadMotion amplitudes and frequencies must be >= 0, got {self}")
        if max(self.yaw_deg, self.pitch_deg, self.roll_deg) >= 90:
            raise InputError("HeadMotion rotation amplitudes must be below 90 degrees")
        if not self.distance_cm > self.shift_cm[2] + 10.0:
            raise InputError(
                f"HeadMotion.distance_cm ({self.distance_cm}) must exceed the z amplitude "
                f"({self.shift_cm[2]}) by more than 10 cm, or the face reaches the camera"
            )

    @classmethod
    def still(cls, *, distance_cm: float = 60.0) -> HeadMotion:
        """A frontal head that does not move."""
        return cls(
            yaw_deg=0.0,
            pitch_deg=0.0,
            roll_deg=0.0,
            shift_cm=(0.0, 0.0, 0.0),
            distance_cm=distance_cm,
        )

    def euler_deg(self, times: np.ndarray) -> np.ndarray:
        """(yaw, pitch, roll) in degrees (N, 3) at ``times`` (N,) seconds."""
        t = np.asarray(times, dtype=np.float64).reshape(-1, 1)
        phase = np.random.default_rng(self.seed).uniform(0.0, 2 * np.pi, size=6)
        amp = np.array([self.yaw_deg, self.pitch_deg, self.roll_deg])
        return amp * np.sin(2 * np.pi * np.asarray(self.rotation_hz) * t + phase[:3])

    def poses(self, times: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """``(rotvec (N, 3) radians, translation (N, 3) cm)`` at ``times`` (N,) seconds.

        ``X_cam = R(rotvec) @ X_obj + translation``; see
        :func:`lsp_prep.camera.euler_yxz_to_rotvec`.
        """
        t = np.asarray(times, dtype=np.float64).reshape(-1, 1)
        phase = np.random.default_rng(self.seed).uniform(0.0, 2 * np.pi, size=6)
        e = self.euler_deg(times)
        rotvec = euler_yxz_to_rotvec(e[:, 0], e[:, 1], e[:, 2], degrees=True)
        shift = np.asarray(self.shift_cm) * np.sin(
            2 * np.pi * np.asarray(self.shift_hz) * t + phase[3:]
        )
        base = np.array([self.base_xy_cm[0], self.base_xy_cm[1], self.distance_cm])
        return rotvec.reshape(-1, 3), base + shift


# ----------------------------------------------------------------------------- audio


def speech_envelope(
    y: np.ndarray | None,
    *,
    sr: int = SAMPLE_RATE,
    fps: float,
    n_frames: int,
    smooth_s: float = 0.05,
) -> np.ndarray:
    """Mouth-opening envelope (N,) in [0, 1] of mono audio ``y`` (S,) at video frames.

    Frame ``i`` (time ``i / fps``) takes the RMS of the samples within one frame period
    either side, smoothed by a Gaussian of ``smooth_s`` seconds; the result minus its 5th
    percentile is divided by the 95th-minus-5th percentile range and clipped to [0, 1].
    Missing samples count as silence; audio whose level never changes (silence) and
    ``y=None`` give zeros.
    """
    from scipy.ndimage import gaussian_filter1d

    if n_frames < 1:
        raise InputError(f"n_frames must be >= 1, got {n_frames}")
    if y is None:
        return np.zeros(n_frames)
    y = np.asarray(y, dtype=np.float64)
    if y.ndim != 1:
        raise InputError(f"audio must be mono (S,), got shape {y.shape}")
    half = max(1, round(sr / fps))
    centres = np.round(np.arange(n_frames) * sr / fps).astype(np.int64)
    power = np.concatenate([[0.0], np.cumsum(y**2)])
    lo = np.clip(centres - half, 0, len(y))
    hi = np.clip(centres + half, 0, len(y))
    rms = np.sqrt((power[hi] - power[lo]) / (2 * half))
    if smooth_s > 0:
        rms = gaussian_filter1d(rms, sigma=smooth_s * fps, mode="nearest")
    floor, peak = np.percentile(rms, [5, 95])
    if peak - floor <= 1e-6:
        return np.zeros(n_frames)
    return np.clip((rms - floor) / (peak - floor), 0.0, 1.0)


# ----------------------------------------------------------------------------- shoulders


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
    rgba = _soft_rgba(crop, feather=feather)
    face_uv = np.concatenate([model.uv[:N_FACE_POINTS], model.skirt_uv])
    hull = cv2.convexHull(np.round((face_uv - (0, y0)) * 16).astype(np.int32))
    hole = np.zeros(crop.shape[:2], np.uint8)
    cv2.fillConvexPoly(hole, hull, (255,), lineType=cv2.LINE_AA, shift=4)
    rgba[:, :, 3] = np.minimum(rgba[:, :, 3], 255 - hole)
    return ShoulderBoard(rgba=rgba, top_left_px=(0, y0))


def shoulder_placement(
    *, model: FaceModel, camera: Camera, translation: np.ndarray, motion: HeadMotion
) -> tuple[np.ndarray, np.ndarray]:
    """Plane placement per frame: ``(offset_cm (N, 3), scale px per photo px (N,))``.

    Photo pixel ``(u, v)`` of the torso lies at camera point
    ``((u - origin_x) * cm_per_px, (v - origin_y) * cm_per_px, 0) + offset_cm`` where
    ``offset = (bx + 0.5 (Tx - bx), by + 0.5 (Ty - by), distance_cm + 2)`` follows
    :data:`SHOULDER_FOLLOW` of the head's translation ``T`` (N, 3) from its base ``b``.
    """
    base = np.array([*motion.base_xy_cm])
    off = np.empty((len(translation), 3))
    off[:, :2] = base + SHOULDER_FOLLOW * (translation[:, :2] - base)
    off[:, 2] = motion.distance_cm + SHOULDER_GAP_CM
    return off, camera.focal * model.cm_per_px / off[:, 2]


def _photo_to_camera(model: FaceModel, points_px: np.ndarray, offset: np.ndarray) -> np.ndarray:
    """Torso photo points (P, 2) -> camera points (N, P, 3) for plane offsets (N, 3)."""
    rel = (np.asarray(points_px, np.float64) - model.origin_px[:2]) * model.cm_per_px
    out = np.zeros((len(offset), len(rel), 3))
    out[:, :, :2] = rel[None]
    return out + offset[:, None, :]


def _pick_shoulder_points(
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
    q = camera.project(_photo_to_camera(model, cand, offsets))  # (N, C, 2)
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


# ----------------------------------------------------------------------------- rendering


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
    surface = surface[_cross(p[surface]) > 1e-3]  # back faces and edge-on triangles go
    surface = surface[np.argsort(-cam[surface, 2].mean(axis=1), kind="stable")]
    teeth = teeth[_cross(p_rest[teeth]) > 1e-3]
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


@dataclass(frozen=True, eq=False)
class Truth3D:
    """Ground truth of :func:`render_head_clip`, one entry per encoded frame."""

    fps: float
    """Frame rate of the clip."""
    size: tuple[int, int]
    """(width, height) of the clip in pixels."""
    K: np.ndarray
    """Intrinsic matrix (3, 3); principal point ``((w - 1) / 2, (h - 1) / 2)``."""
    focal: float
    """Focal length in pixels."""
    times: np.ndarray
    """Frame times (N,) in seconds: ``i / fps``."""
    rotation: np.ndarray
    """Head rotation vectors (N, 3) in radians: ``X_cam = R @ X_obj + T``."""
    translation: np.ndarray
    """Head translation (N, 3) in cm, camera coordinates."""
    euler_deg: np.ndarray
    """(yaw, pitch, roll) (N, 3) in degrees; see :func:`lsp_prep.camera.euler_yxz_to_rotvec`."""
    points_obj: np.ndarray
    """Deformed vertices (N, 478, 3) in object cm; index = MediaPipe index."""
    mouth_open: np.ndarray
    """Mouth opening envelope (N,) in [0, 1]; the jaw moved ``mouth_open_cm`` times this."""
    mouth_open_cm: float
    """Jaw displacement at ``mouth_open == 1`` (cm)."""
    shoulder_points2d: np.ndarray
    """Shoulder feature points (N, P, 2) in pixels, exact projections."""
    shoulder_points3d: np.ndarray
    """Shoulder feature points (N, P, 3) in camera cm."""
    shoulder_photo_px: np.ndarray
    """The shoulder feature points (P, 2) in photo pixels (the plane's texture)."""
    shoulder_affine: np.ndarray
    """Photo pixel -> frame pixel (N, 2, 3) of the shoulder plane, for any torso point:
    ``q = A[:, :2] @ p + A[:, 2]`` (NaN without shoulders)."""

    def __post_init__(self) -> None:
        n = len(self.times)
        shapes = {
            "rotation": (self.rotation.shape, (n, 3)),
            "translation": (self.translation.shape, (n, 3)),
            "points_obj": (self.points_obj.shape, (n, N_MESH_POINTS, 3)),
            "mouth_open": (self.mouth_open.shape, (n,)),
        }
        for name, (got, want) in shapes.items():
            if got != want:
                raise ValueError(f"{name} must be {want}, got {got}")

    @property
    def n_frames(self) -> int:
        """Number of frames N."""
        return len(self.times)

    @property
    def camera(self) -> Camera:
        """The :class:`Camera` of the clip."""
        return Camera(focal=self.focal, size=self.size)

    def points_cam(self) -> np.ndarray:
        """Deformed vertices in camera coordinates (N, 478, 3), cm."""
        r = rotation_matrices(self.rotation)  # (N, 3, 3)
        return np.einsum("nij,npj->npi", r, self.points_obj) + self.translation[:, None, :]

    def project_landmarks(self) -> np.ndarray:
        """Projected vertices (N, 478, 2) in pixels (pixel centres), visible or not."""
        return self.camera.project(self.points_cam())


def render_head_clip(
    path: Path,
    *,
    model: FaceModel,
    camera: Camera,
    duration_s: float,
    fps: float,
    motion: HeadMotion,
    audio: np.ndarray | None = None,
    sr: int = SAMPLE_RATE,
    mouth_open_cm: float = 1.2,
    background: Background | np.ndarray = "texture",
    shoulders: bool = True,
    n_shoulder_points: int = 6,
    crf: int = 18,
    preset: str = "veryfast",
    progress: Callable[[int], None] | None = None,
) -> Truth3D:
    """Render ``model`` moving by ``motion`` under ``camera`` to an mp4; return its truth.

    The clip holds ``round(duration_s * fps)`` frames of ``camera.size``. ``audio`` (S,)
    mono float at ``sr`` drives the mouth through :func:`speech_envelope` and is muxed as
    AAC, cut or zero-padded to the clip's length; without it the mouth stays at rest.
    ``background`` is a :func:`~lsp_synth.render2d.make_background` kind or an RGB image
    (H, W, 3). With ``shoulders`` the torso plane (see :func:`shoulder_placement`) is drawn
    first and ``n_shoulder_points`` of its corners are reported; otherwise the shoulder
    arrays are (N, 0, 2) and (N, 0, 3).
    """
    if not (np.isfinite(mouth_open_cm) and mouth_open_cm >= 0):
        raise InputError(f"mouth_open_cm must be >= 0, got {mouth_open_cm}")
    times = frame_times(duration_s=duration_s, fps=fps)
    n = len(times)
    if isinstance(background, np.ndarray):
        bg = background
        if bg.shape != (camera.size[1], camera.size[0], 3) or bg.dtype != np.uint8:
            raise InputError(
                f"background must be (H, W, 3) uint8 of the camera size, got {bg.shape} {bg.dtype}"
            )
    else:
        bg = make_background(size=camera.size, kind=background, seed=motion.seed)
    if audio is not None:
        audio = np.asarray(audio, dtype=np.float32)
        if audio.ndim != 1:
            raise InputError(f"audio must be mono (S,), got shape {audio.shape}")
        n_samples = round(n / fps * sr)
        audio = np.pad(audio[:n_samples], (0, max(0, n_samples - len(audio))))
    env = speech_envelope(audio, sr=sr, fps=fps, n_frames=n)
    rotvec, trans = motion.poses(times)
    points_obj = model.deform(mouth_open_cm * env)
    r = rotation_matrices(rotvec)

    layer: _Layer | None = None
    pts_px = np.zeros((0, 2))
    sh3d = np.zeros((n, 0, 3))
    sh_affine = np.full((n, 2, 3), np.nan)
    if shoulders:
        board = shoulder_board(model)
        offsets, scale = shoulder_placement(
            model=model, camera=camera, translation=trans, motion=motion
        )
        face_cam = np.einsum("nij,npj->npi", r, model.with_skirt(points_obj)) + trans[:, None]
        pts_px = _pick_shoulder_points(
            model=model,
            board=board,
            camera=camera,
            offsets=offsets,
            face2d=camera.project(face_cam),
            n_points=n_shoulder_points,
        )
        sh3d = _photo_to_camera(model, pts_px, offsets)
        # The plane faces the camera: photo -> frame is a similarity without rotation.
        sh_affine = np.zeros((n, 2, 3))
        sh_affine[:, 0, 0] = sh_affine[:, 1, 1] = scale
        sh_affine[:, :, 2] = camera.project(_photo_to_camera(model, np.zeros((1, 2)), offsets))[
            :, 0
        ]  # where photo pixel (0, 0) lands
        board_affine = sh_affine.copy()  # board pixel (i, j) is photo pixel (i + ox, j + oy)
        board_affine[:, :, 2] += scale[:, None] * np.asarray(board.top_left_px, np.float64)
        layer = _Layer(rgba=board.rgba, affine=board_affine)
    sh2d = camera.project(sh3d) if sh3d.shape[1] else np.zeros((n, 0, 2))

    def frames():
        for i in range(n):
            frame = bg.copy()
            if layer is not None:
                _composite(frame, layer, i)
            yield render_head_frame(
                frame,
                model=model,
                camera=camera,
                rotation=rotvec[i],
                translation=trans[i],
                points_obj=points_obj[i],
            )

    write_clip(
        path,
        frames(),
        fps=fps,
        size=camera.size,
        audio=audio,
        sr=sr,
        crf=crf,
        preset=preset,
        progress=progress,
    )
    return Truth3D(
        fps=float(fps),
        size=(int(camera.size[0]), int(camera.size[1])),
        K=camera.K,
        focal=float(camera.focal),
        times=times,
        rotation=rotvec,
        translation=trans,
        euler_deg=motion.euler_deg(times),
        points_obj=points_obj,
        mouth_open=env,
        mouth_open_cm=float(mouth_open_cm),
        shoulder_points2d=sh2d,
        shoulder_points3d=sh3d,
        shoulder_photo_px=pts_px,
        shoulder_affine=sh_affine,
    )
