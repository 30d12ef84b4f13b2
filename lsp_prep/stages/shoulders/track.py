"""The upper-body model: shoulder feature points, tracked with LK optical flow, on a billboard.

The paper models the upper body as a plane ("billboard") at the mean face depth carrying a
few feature points chosen on the first frame and tracked through the clip with pyramidal
Lucas-Kanade optical flow. Three pure functions do that, each on arrays:

* :func:`choose_points` picks the points on frame 0: MediaPipe Pose (shoulder landmarks 11
  and 12 plus its person segmentation) and the face outline define the upper-body region
  below the chin, away from the face and neck (which move with the head); in it the most
  trackable spots (largest minimum eigenvalue of the LK window's structure tensor) are
  taken, half on each side of the neck. Where the clothing has too little texture the
  remaining points go on the shoulder outline; in a close-up without shoulders, below the
  face (with a warning, never an error). ``ShoulderConfig.points`` overrides all this.
* :func:`track_points` follows them frame to frame with a forward-backward checked LK;
  a point that fails the checks is invalid on that frame and is re-seeded later by a direct
  LK from the last frame where it was valid, started at the position the other points'
  motion predicts.
* :func:`billboard` back-projects the points to the plane ``z = depth`` through the camera.

Coordinates are pixel centres of the image given (the 512x512 crop in the dataset), ``x``
to the right and ``y`` down; "left" and "right" below are the image's, not the subject's.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Literal

import cv2
import numpy as np

from lsp_prep.errors import InputError

ProgressFn = Callable[[str, int, "int | None"], None]
"""Called as ``progress(stage, done, total)``; ``total`` is None when the length is unknown."""

POSE_LEFT_SHOULDER = 11
"""MediaPipe Pose landmark of the subject's left shoulder (usually on the image's right)."""
POSE_RIGHT_SHOULDER = 12
"""MediaPipe Pose landmark of the subject's right shoulder (usually on the image's left)."""
POSE_FACE = tuple(range(11))
"""MediaPipe Pose face landmarks: nose 0, eyes 1-6 (2 and 5 the centres), ears 7-8, mouth 9-10."""
POSE_EYES = (2, 5)
POSE_MOUTH = (9, 10)
POSE_EARS = (7, 8)

LSP_CHIN = 7
"""LSP-73 index of the chin (the middle of the contour group 0-14)."""
LSP_EYE_CORNERS = tuple(range(27, 35))
"""LSP-73 indices of the eye corners and lid points 27-34 (both eyes)."""

PointSource = Literal["user", "pose", "face_guess"]
PointKind = Literal["texture", "shoulder_line", "below_face", "image_bottom", "user"]


@dataclass(frozen=True)
class ShoulderConfig:
    """Choice and tracking of the upper-body feature points."""

    n_points: int = 8
    """Points chosen automatically on frame 0: ``ceil(n/2)`` on the image's left side of the
    neck, then ``n // 2`` on its right (two halves, as the paper draws two shoulder lines)."""
    points: tuple[tuple[float, float], ...] | None = None
    """User override: the points (x, y) on frame 0 in crop pixels; replaces the automatic
    choice (and ``n_points``). Each must lie inside the image."""
    window: int = 21
    """Side of the square LK window (pixels, odd); also the window of the texture measure."""
    max_level: int = 3
    """LK pyramid: OpenCV's ``maxLevel`` (3 = the image plus three halvings), for motions up
    to about ``window / 2 * 2**max_level`` pixels per frame."""
    max_iter: int = 30
    """LK termination: at most this many iterations per pyramid level ..."""
    epsilon: float = 0.01
    """... or until the update is smaller than this (pixels)."""
    min_eig_threshold: float = 1e-4
    """OpenCV LK ``minEigThreshold``: a window whose spatial gradient matrix has a smaller
    minimum eigenvalue (per pixel) is reported lost (flat, texture-less patch)."""
    fb_max_px: float = 1.0
    """Forward-backward check: a point tracked t -> t+1 and back must land within this many
    pixels of where it started, else it is invalid on t+1."""
    min_ncc: float = 0.95
    """Appearance check: normalised cross-correlation of the window at the tracked position
    with the window on the previous frame (for a re-seeded point: on the frame where it was
    last valid, warped by the motion since); below this the point is invalid (something
    covers part of it). A tracked point's windows on consecutive frames correlate above
    0.98 in clean video. 0 switches the check off."""
    edge_margin_px: float = 2.0
    """A point closer than this to the image border (or outside it) is invalid on that
    frame; positions are never clamped into the image."""
    reseed: bool = True
    """Re-acquire lost points: each later frame, LK straight from the last frame where the
    point was valid, started at the position predicted from the valid points' motion."""
    reseed_every: int = 6
    """A lost point is retried on every this many frames (0.1 s at 60 FPS), not every
    frame: retrying costs an LK call per point, and points hidden by hair or a hand stay
    hidden for a while."""
    track_scale: float = 1.0
    """prep tracks on crops decoded at this scale (1, 0.5 or 0.25; JPEG decodes them for
    free). 0.5 makes LK ~4x cheaper but drifted to 2.6 px median on the 3D renders, against
    under 1 px at full scale. Pixel settings here are at full resolution and scaled with it."""
    reseed_max_px: float = 4.0
    """A re-acquired point must land within this many pixels of the predicted position
    (when other points give a prediction): along a plain edge (a shoulder outline) the
    window looks alike everywhere, so a far landing is more likely the wrong place."""
    min_quality: float = 5e-5
    """Texture needed for an automatic point: minimum eigenvalue of the window's structure
    tensor, intensities in [0, 1], per pixel ((intensity / pixel)^2). Fewer textured spots
    than needed on a side -> the rest go on the shoulder line."""
    spread: float = 0.12
    """Automatic points keep at least this fraction of the shoulder width apart (halved,
    down to ``window / 2``, while a side has too few candidates)."""
    min_visibility: float = 0.5
    """Pose shoulder landmarks with a lower visibility score count as not found."""
    use_segmentation: bool = True
    """Restrict automatic points to MediaPipe Pose's person segmentation (not background)."""
    segmentation_threshold: float = 0.5
    """Person probability above which a pixel is body."""
    body_margin_px: int = 3
    """Automatic points lie at least this far inside the person segmentation. Small on
    purpose: on plain clothing the only texture is where the outline crosses the window."""
    neck_length: float = 0.35
    """The excluded face region is swept down (along the face's chin direction) by this many
    face heights to cover the neck, which moves with the head."""
    face_margin: float = 0.08
    """The excluded face-and-neck region is grown by this many face heights."""
    region_margin: float = 0.25
    """The upper-body region reaches this many shoulder widths beyond each shoulder ..."""
    region_depth: float = 0.35
    """... and this many shoulder widths below the lower shoulder landmark."""

    def __post_init__(self) -> None:
        if self.n_points < 1:
            raise InputError(f"shoulders.n_points must be >= 1, got {self.n_points}")
        if self.points is not None:
            try:
                pts = tuple((float(x), float(y)) for x, y in self.points)
            except (TypeError, ValueError):
                raise InputError(
                    f"shoulders.points must be a list of (x, y) pairs, got {self.points!r}"
                ) from None
            if not pts:
                raise InputError("shoulders.points must hold at least one (x, y) pair")
            bad = [i for i, p in enumerate(pts) if not np.all(np.isfinite(p))]
            if bad:
                raise InputError(f"shoulders.points {bad} are not finite: {self.points!r}")
            object.__setattr__(self, "points", pts)  # lists (from JSON) -> hashable tuples
        if self.window < 5 or self.window % 2 == 0:
            raise InputError(f"shoulders.window must be odd and >= 5, got {self.window}")
        if not 0 <= self.max_level <= 6:
            raise InputError(f"shoulders.max_level must be in [0, 6], got {self.max_level}")
        if self.max_iter < 1 or not self.epsilon > 0:
            raise InputError("shoulders.max_iter must be >= 1 and shoulders.epsilon > 0")
        if self.reseed_every < 1:
            raise InputError(f"shoulders.reseed_every must be >= 1, got {self.reseed_every}")
        if self.track_scale not in (0.25, 0.5, 1.0):
            raise InputError("shoulders.track_scale must be 1, 0.5 or 0.25 (JPEG's scales)")
        for name in ("min_eig_threshold", "min_quality", "edge_margin_px", "reseed_max_px"):
            if not (np.isfinite(getattr(self, name)) and getattr(self, name) >= 0):
                raise InputError(f"shoulders.{name} must be >= 0, got {getattr(self, name)}")
        if not (np.isfinite(self.fb_max_px) and self.fb_max_px > 0):
            raise InputError(f"shoulders.fb_max_px must be > 0, got {self.fb_max_px}")
        for name in ("min_ncc", "min_visibility", "segmentation_threshold"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise InputError(f"shoulders.{name} must be in [0, 1], got {getattr(self, name)}")
        if self.body_margin_px < 0:
            raise InputError(f"shoulders.body_margin_px must be >= 0, got {self.body_margin_px}")
        if not 0 < self.spread < 1:
            raise InputError(f"shoulders.spread must be in (0, 1), got {self.spread}")
        for name in ("neck_length", "face_margin", "region_margin", "region_depth"):
            if not (np.isfinite(getattr(self, name)) and getattr(self, name) >= 0):
                raise InputError(f"shoulders.{name} must be >= 0, got {getattr(self, name)}")

    def lk_params(self) -> dict:
        """Keyword arguments of ``cv2.calcOpticalFlowPyrLK`` for this configuration."""
        return {
            "winSize": (self.window, self.window),
            "maxLevel": self.max_level,
            "criteria": (
                cv2.TERM_CRITERIA_COUNT | cv2.TERM_CRITERIA_EPS,
                self.max_iter,
                self.epsilon,
            ),
            "minEigThreshold": self.min_eig_threshold,
        }


@dataclass(frozen=True, eq=False)
class ShoulderPoints:
    """The points chosen on frame 0 and how they were found."""

    points: np.ndarray
    """(P, 2) float32 crop pixels. Automatic points: the image-left half first, then the
    image-right half, each ordered by x (left to right)."""
    source: PointSource
    """``"user"`` (``ShoulderConfig.points``), ``"pose"`` (MediaPipe Pose found the body), or
    ``"face_guess"`` (no body found: a region guessed below the face)."""
    kind: tuple[PointKind, ...]
    """How each point was placed, best first: ``"texture"`` (trackable spot in the
    upper-body region), ``"shoulder_line"`` (on the shoulder outline: plain clothing),
    ``"below_face"`` (no room on the body: best texture left below the chin, outside face
    and neck), ``"image_bottom"`` (last resort for close-ups without shoulders: the bottom
    rows of the image, which may move with the head), ``"user"``."""
    shoulders: np.ndarray | None
    """(2, 2) shoulder positions (image-left first) used for the region: Pose landmarks 12
    and 11, or the guess from the face; None for user points."""
    region: np.ndarray | None
    """(H, W) bool: the upper-body region searched for texture; None for user points."""
    warnings: tuple[str, ...] = ()
    """What did not go as planned (no body found, too little texture), for the user."""

    @property
    def body_found(self) -> bool:
        """False when Pose found no body and the region is only a guess below the face."""
        return self.source != "face_guess"

    @property
    def textured(self) -> np.ndarray:
        """(P,) bool: placed on texture in the upper-body region (or given by the user)."""
        return np.array([k in ("texture", "user") for k in self.kind], bool)


@dataclass(frozen=True, eq=False)
class ShoulderTracks:
    """The tracked points of a clip."""

    points2d: np.ndarray
    """(N, P, 2) float32 crop pixels; NaN where not valid."""
    valid: np.ndarray
    """(N, P) bool: tracked and passed every check on that frame."""
    init: np.ndarray
    """(P, 2) float32: the starting points on frame 0."""
    predicted: np.ndarray
    """(N, P, 2) float32: ``points2d`` where valid, elsewhere the position the valid points'
    motion (a similarity transform since the point was last valid) predicts, or its last
    valid position when no point is valid; may lie outside the image."""

    @property
    def n_frames(self) -> int:
        return int(self.valid.shape[0])


# --------------------------------------------------------------------------- image helpers


def to_gray(frame: np.ndarray, *, bgr: bool = False) -> np.ndarray:
    """(H, W, 3) RGB (or BGR with ``bgr``) or (H, W) uint8 -> (H, W) uint8 grayscale."""
    frame = np.asarray(frame)
    if frame.dtype != np.uint8:
        raise InputError(f"frames must be uint8, got {frame.dtype}")
    if frame.ndim == 2:
        return frame
    if frame.ndim == 3 and frame.shape[2] == 3:
        return cv2.cvtColor(frame, cv2.COLOR_BGR2GRAY if bgr else cv2.COLOR_RGB2GRAY)
    raise InputError(f"frames must be (H, W, 3) or (H, W), got shape {frame.shape}")


def texture_map(gray: np.ndarray, *, window: int) -> np.ndarray:
    """(H, W) float32 minimum eigenvalue of each pixel's ``window`` structure tensor.

    Intensities are scaled to [0, 1] and derivatives are per pixel (Sobel / 8), and the
    tensor is averaged over the window, so the value is in (intensity / pixel)^2 and does
    not depend on the window size for a uniform texture.
    """
    g = gray.astype(np.float32) / 255.0
    ix = cv2.Sobel(g, cv2.CV_32F, 1, 0, ksize=3) / 8.0
    iy = cv2.Sobel(g, cv2.CV_32F, 0, 1, ksize=3) / 8.0
    k = (window, window)
    a = cv2.boxFilter(ix * ix, -1, k)
    b = cv2.boxFilter(ix * iy, -1, k)
    c = cv2.boxFilter(iy * iy, -1, k)
    return (a + c) / 2 - np.sqrt(((a - c) / 2) ** 2 + b * b)


def _inside(points: np.ndarray, size: tuple[int, int], margin: float) -> np.ndarray:
    """(K,) bool: (K, 2) points at least ``margin`` inside an image of ``size`` (W, H)."""
    w, h = size
    x, y = points[:, 0], points[:, 1]
    return (x >= margin) & (y >= margin) & (x <= w - 1 - margin) & (y <= h - 1 - margin)


def _patches(gray: np.ndarray, points: np.ndarray, window: int) -> np.ndarray:
    """(K, window, window) float32 sub-pixel windows of ``gray`` centred on (K, 2) points
    (zeros for a point that is not finite or lies far outside the image)."""
    out = np.zeros((len(points), window, window), np.float32)
    h, w = gray.shape
    for k, (x, y) in enumerate(points):
        # getRectSubPix crashes on NaN centres: callers pass tracked (finite, inside) points
        if (
            np.isfinite(x)
            and np.isfinite(y)
            and -window < x < w + window
            and -window < y < h + window
        ):
            out[k] = cv2.getRectSubPix(
                gray, (window, window), (float(x), float(y)), None, cv2.CV_32F
            )
    return out


def _ncc(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """(K,) normalised cross-correlation of matching (K, w, w) windows; 1 where both flat."""
    a = a.reshape(len(a), -1)
    b = b.reshape(len(b), -1)
    a = a - a.mean(axis=1, keepdims=True)
    b = b - b.mean(axis=1, keepdims=True)
    na, nb = np.linalg.norm(a, axis=1), np.linalg.norm(b, axis=1)
    out = np.ones(len(a), np.float32)
    ok = (na > 1e-3) & (nb > 1e-3)
    out[ok] = (a[ok] * b[ok]).sum(axis=1) / (na[ok] * nb[ok])
    # a flat window against a textured one (or the other way) does not match
    out[(na > 1e-3) != (nb > 1e-3)] = 0.0
    return out


# --------------------------------------------------------------------------- choosing points


@dataclass(frozen=True)
class _Face:
    """Face outline for the exclusion region: points (K, 2), chin, unit down axis, height."""

    points: np.ndarray
    chin: np.ndarray
    down: np.ndarray
    height: float


def _face_from_lsp(face_points2d: np.ndarray) -> _Face:
    pts = np.asarray(face_points2d, np.float64)
    if pts.ndim != 2 or pts.shape[1] != 2 or pts.shape[0] <= max(LSP_EYE_CORNERS):
        raise InputError(f"face_points2d must be (73, 2) LSP-73 points, got {pts.shape}")
    if not np.isfinite(pts).all():
        raise InputError("face_points2d has non-finite values (no face on the first frame?)")
    chin = pts[LSP_CHIN]
    eyes = pts[list(LSP_EYE_CORNERS)].mean(axis=0)
    return _Face(pts, chin, _unit(chin - eyes), float((pts.max(axis=0) - pts.min(axis=0)).max()))


def _face_from_pose(pose: np.ndarray) -> _Face:
    """Face outline guessed from Pose's face landmarks (K, 2): chin below the mouth."""
    eyes = pose[list(POSE_EYES)].mean(axis=0)
    mouth = pose[list(POSE_MOUTH)].mean(axis=0)
    down = _unit(mouth - eyes)
    chin = mouth + 0.8 * (mouth - eyes)
    ear_span = float(np.linalg.norm(pose[POSE_EARS[0]] - pose[POSE_EARS[1]]))
    side = np.array([-down[1], down[0]])
    jaw = [chin + side * ear_span / 3, chin - side * ear_span / 3]
    top = eyes - 1.0 * (chin - eyes)
    pts = np.vstack([pose[list(POSE_FACE)], chin, *jaw, top])
    return _Face(pts, chin, down, max(float(np.linalg.norm(chin - top)), ear_span))


def _unit(v: np.ndarray) -> np.ndarray:
    n = float(np.linalg.norm(v))
    return np.array([0.0, 1.0]) if n < 1e-6 else v / n


def _run_pose(frame_rgb: np.ndarray) -> tuple[np.ndarray | None, np.ndarray | None]:
    """MediaPipe Pose on one RGB image: landmarks (33, 3) as x, y pixels and visibility, and
    the person probability (H, W) float32; (None, None) when it finds nobody."""
    import mediapipe as mp

    from lsp_prep.stages.track import quiet_native_stderr

    h, w = frame_rgb.shape[:2]
    # model_complexity 1 ships in the wheel; 0 and 2 would download a model (fails offline).
    with (
        quiet_native_stderr(),
        mp.solutions.pose.Pose(
            static_image_mode=True, model_complexity=1, enable_segmentation=True
        ) as pose,
    ):
        res = pose.process(np.ascontiguousarray(frame_rgb))
    if res.pose_landmarks is None:
        return None, None
    lm = np.array(
        [(p.x * w - 0.5, p.y * h - 0.5, p.visibility) for p in res.pose_landmarks.landmark]
    )
    seg = None if res.segmentation_mask is None else np.asarray(res.segmentation_mask, np.float32)
    return lm, seg


def _exclusion(face: _Face, size: tuple[int, int], config: ShoulderConfig) -> np.ndarray:
    """(H, W) bool: the face swept down over the neck, grown by ``face_margin``."""
    w, h = size
    swept = np.vstack([face.points, face.points + face.down * config.neck_length * face.height])
    hull = cv2.convexHull(np.round(swept).astype(np.int32))
    mask = np.zeros((h, w), np.uint8)
    cv2.fillConvexPoly(mask, hull, (1,))
    grow = int(round(config.face_margin * face.height))
    if grow > 0:
        cv2.polylines(mask, [hull], True, (1,), thickness=2 * grow + 1)
    return mask.astype(bool)


def _pick(
    quality: np.ndarray,
    mask: np.ndarray,
    *,
    k: int,
    min_dist: float,
    least_dist: float,
    floor: float,
) -> np.ndarray:
    """Up to ``k`` (K, 2) pixels of ``mask`` with the highest ``quality`` >= ``floor``, local
    maxima first, each ``min_dist`` from the others (halved while too few, down to
    ``least_dist``)."""
    if k <= 0:
        return np.zeros((0, 2))
    peaks = quality >= cv2.dilate(quality, np.ones((3, 3), np.uint8))
    ys, xs = np.nonzero(mask & peaks & (quality >= floor))
    order = np.argsort(-quality[ys, xs], kind="stable")
    cand = np.stack([xs[order], ys[order]], axis=1).astype(np.float64)
    d = min_dist
    while True:
        chosen: list[np.ndarray] = []
        for c in cand:
            if all(np.hypot(*(c - q)) >= d for q in chosen):
                chosen.append(c)
                if len(chosen) == k:
                    break
        if len(chosen) == k or d <= least_dist:
            return np.array(chosen).reshape(-1, 2)
        d = max(d / 2, least_dist)


def _line_points(
    *,
    k: int,
    shoulder: np.ndarray,
    neck: np.ndarray,
    body: np.ndarray | None,
    allowed: np.ndarray,
    top: float,
    taken: np.ndarray,
    min_dist: float,
) -> np.ndarray:
    """``k`` fallback points on one shoulder line (K <= k, 2), from the neck out.

    Columns are sampled from ``neck`` to ``shoulder``. With a body mask (H, W) the point of
    a column is the top of the silhouette below row ``top`` (the shoulder outline, where
    even plain clothing has an edge to track), kept only where ``allowed`` (so a column
    whose silhouette starts at the excluded neck gives nothing); without, the straight
    segment from ``neck`` to ``shoulder``. Points keep ``min_dist / 2`` from ``taken``.
    """
    h, w = allowed.shape
    first = int(np.clip(np.floor(top) + 1, 0, h))
    out: list[np.ndarray] = []
    for f in np.linspace(0.15, 1.0, 4 * k + 4):
        p = neck + f * (shoulder - neck)
        x = int(np.clip(round(p[0]), 0, w - 1))
        if body is not None:
            rows = np.flatnonzero(body[first:, x])
            if len(rows) == 0:
                continue
            y = first + int(rows[0])
        else:
            y = int(np.clip(round(p[1]), 0, h - 1))
        if not allowed[y, x]:
            continue
        p = np.array([x, y], np.float64)
        if all(np.hypot(*(p - q)) >= min_dist / 2 for q in [*taken, *out]):
            out.append(p)
    if len(out) > k:  # spread the k evenly over the candidates found
        out = [out[i] for i in np.linspace(0, len(out) - 1, k).round().astype(int)]
    return np.array(out).reshape(-1, 2)


def choose_points(
    frame_rgb: np.ndarray,
    *,
    config: ShoulderConfig = ShoulderConfig(),
    face_points2d: np.ndarray | None = None,
) -> ShoulderPoints:
    """Pick the upper-body feature points on the first frame.

    ``frame_rgb`` is (H, W, 3) uint8 RGB; ``face_points2d`` (73, 2) the LSP-73 landmarks of
    that frame in the same pixels (optional: without them the face comes from Pose's face
    landmarks). With ``config.points`` those points are checked (InputError naming the
    first point outside the image) and returned as given. Otherwise MediaPipe Pose
    (``model_complexity=1``) finds the shoulders (landmarks 11, 12) and the person; the
    region is the band from the chin down to ``region_depth`` shoulder widths below the
    shoulders, ``region_margin`` shoulder widths beyond them, on the person, minus the face
    and neck. If Pose finds no body, shoulders are guessed from the face (``source ==
    "face_guess"``, with a warning); with neither a body nor face points, InputError.
    Returns (P, 2) points in :class:`ShoulderPoints`.
    """
    frame_rgb = np.asarray(frame_rgb)
    if frame_rgb.ndim != 3 or frame_rgb.shape[2] != 3 or frame_rgb.dtype != np.uint8:
        raise InputError(
            f"frame_rgb must be (H, W, 3) uint8 RGB, got {frame_rgb.shape} {frame_rgb.dtype}"
        )
    h, w = frame_rgb.shape[:2]
    if config.points is not None:
        pts = np.array(config.points, np.float64)
        for i, (x, y) in enumerate(pts):
            if not (0 <= x <= w - 1 and 0 <= y <= h - 1):
                raise InputError(
                    f"shoulders.points[{i}] = ({x:g}, {y:g}) lies outside the {w}x{h} image "
                    f"(x must be in [0, {w - 1}], y in [0, {h - 1}], crop pixels)"
                )
        return ShoulderPoints(
            points=pts.astype(np.float32),
            source="user",
            kind=tuple("user" for _ in pts),
            shoulders=None,
            region=None,
        )

    warnings: list[str] = []
    lm, seg = _run_pose(frame_rgb)
    found = lm is not None and min(lm[POSE_LEFT_SHOULDER, 2], lm[POSE_RIGHT_SHOULDER, 2]) >= (
        config.min_visibility
    )
    if face_points2d is not None:
        face = _face_from_lsp(face_points2d)
    elif lm is not None:
        face = _face_from_pose(lm[:, :2])
    else:
        raise InputError(
            "MediaPipe Pose found no body on the first frame and no face points were given: "
            "pass face_points2d, or set shoulders.points by hand"
        )
    if found:
        assert lm is not None
        pair = lm[[POSE_RIGHT_SHOULDER, POSE_LEFT_SHOULDER], :2]
        source: PointSource = "pose"
    else:
        # Typical proportions: shoulders about 2.2 face widths apart, half a face below the chin.
        side = np.array([-face.down[1], face.down[0]])
        base = face.chin + 0.5 * face.height * face.down
        pair = np.stack([base - 1.1 * face.height * side, base + 1.1 * face.height * side])
        source = "face_guess"
        seg = None
        warnings.append(
            "MediaPipe Pose found no shoulders on the first frame: the upper-body region is "
            "guessed below the face; check the points or set shoulders.points"
        )
    shoulders = pair[np.argsort(pair[:, 0])]
    width = max(float(np.linalg.norm(shoulders[1] - shoulders[0])), face.height)

    gray = to_gray(frame_rgb)
    quality = texture_map(gray, window=config.window)
    yy, xx = np.mgrid[0:h, 0:w]
    pad = config.window // 2 + config.edge_margin_px
    region = (
        (xx >= shoulders[:, 0].min() - config.region_margin * width)
        & (xx <= shoulders[:, 0].max() + config.region_margin * width)
        & (yy > face.chin[1])
        & (yy <= shoulders[:, 1].max() + config.region_depth * width)
        & (xx >= pad)
        & (yy >= pad)
        & (xx <= w - 1 - pad)
        & (yy <= h - 1 - pad)
    )
    excluded = _exclusion(face, (w, h), config)
    region &= ~excluded
    body: np.ndarray | None = None
    if config.use_segmentation and seg is not None:
        body = (seg > config.segmentation_threshold).astype(np.uint8)
        m = config.body_margin_px
        if m > 0:
            body = cv2.erode(body, cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * m + 1,) * 2))
        region &= body.astype(bool)

    neck_x = face.chin[0]
    min_dist = max(config.spread * width, config.window / 2)
    inside = _inside_mask((w, h), pad)
    below = yy > face.chin[1]
    neck = face.chin + config.neck_length * face.height * face.down
    counts = ((config.n_points + 1) // 2, config.n_points // 2)
    bottom = yy >= h - 1 - pad - config.window
    all_points: list[np.ndarray] = []
    kinds: list[PointKind] = []
    for side, shoulder, k in zip((xx < neck_x, xx >= neck_x), shoulders, counts, strict=True):
        pts = _pick(
            quality,
            region & side,
            k=k,
            min_dist=min_dist,
            least_dist=config.window / 2,
            floor=config.min_quality,
        )
        side_kinds: list[PointKind] = ["texture"] * len(pts)
        if len(pts) < k:
            # Beside the neck the shoulder outline may rise a little above the chin's level:
            # look for it from there down (the face and neck stay excluded).
            start = neck.copy()
            start[0] += np.sign(shoulder[0] - neck[0]) * 0.3 * face.height
            allowed = inside & ~excluded
            if body is None:
                allowed &= below  # the straight line between guessed shoulders
            line = _line_points(
                k=k - len(pts),
                shoulder=shoulder,
                neck=start,
                body=None if body is None else body.astype(bool),
                allowed=allowed,
                top=float(face.chin[1] - 0.15 * face.height),
                taken=pts,
                min_dist=min_dist,
            )
            pts = np.vstack([pts, line])
            side_kinds += ["shoulder_line"] * len(line)
        # No room on the body (a close-up): the best texture left below the chin, outside
        # the face and neck; failing that, the bottom rows of the image.
        stages: tuple[tuple[PointKind, np.ndarray], ...] = (
            ("below_face", inside & ~excluded & below & side),
            ("image_bottom", inside & bottom & side),
        )
        for kind, mask in stages:
            if len(pts) < k:
                free = _clear_around(mask, pts, radius=min_dist / 2)
                more = _pick(
                    quality,
                    free,
                    k=k - len(pts),
                    min_dist=min_dist,
                    least_dist=config.window / 2,
                    floor=0.0,
                )
                pts = np.vstack([pts, more])
                side_kinds += [kind] * len(more)
        order = np.argsort(pts[:, 0], kind="stable")
        all_points.append(pts[order])
        kinds += [side_kinds[i] for i in order]
    placed = {kind: kinds.count(kind) for kind in ("shoulder_line", "below_face", "image_bottom")}
    points = np.vstack(all_points).astype(np.float32)
    if placed["shoulder_line"]:
        warnings.append(
            f"{placed['shoulder_line']} of {config.n_points} shoulder points placed on the "
            "shoulder outline: the clothing has little texture to track"
        )
    if placed["below_face"] or placed["image_bottom"]:
        where = " (some on the bottom rows of the image)" if placed["image_bottom"] else ""
        warnings.append(
            f"no room on the upper body for {placed['below_face'] + placed['image_bottom']} of "
            f"{config.n_points} shoulder points, placed below the face instead{where}: the "
            "shoulders are hardly visible in the crop (a close-up?) and those points may move "
            "with the head; widen the crop (crop.scale) or set shoulders.points"
        )
    if len(points) < config.n_points:
        raise InputError(
            f"could place only {len(points)} of {config.n_points} shoulder points on the first "
            f"frame ({w}x{h}): the image is too small for the LK window; set shoulders.points"
        )
    return ShoulderPoints(
        points=points,
        source=source,
        kind=tuple(kinds),
        shoulders=shoulders.astype(np.float32),
        region=region,
        warnings=tuple(warnings),
    )


def _clear_around(mask: np.ndarray, points: np.ndarray, *, radius: float) -> np.ndarray:
    """Copy of the (H, W) bool ``mask`` without discs of ``radius`` around (K, 2) points."""
    out = mask.astype(np.uint8)
    for x, y in points:
        cv2.circle(out, (int(round(x)), int(round(y))), int(round(radius)), (0,), -1)
    return out.astype(bool)


def _inside_mask(size: tuple[int, int], margin: float) -> np.ndarray:
    w, h = size
    yy, xx = np.mgrid[0:h, 0:w]
    return (xx >= margin) & (yy >= margin) & (xx <= w - 1 - margin) & (yy <= h - 1 - margin)


# --------------------------------------------------------------------------- tracking


def _similarity(src: np.ndarray, dst: np.ndarray) -> np.ndarray | None:
    """2x3 similarity taking (K, 2) ``src`` to ``dst``: fitted (LMedS) for K >= 3, the
    median translation for K = 1 or 2, None for K = 0."""
    if len(src) == 0:
        return None
    if len(src) >= 3:
        m, _ = cv2.estimateAffinePartial2D(
            src.astype(np.float32), dst.astype(np.float32), method=cv2.LMEDS
        )
        if m is not None:
            return m.astype(np.float64)
    t = np.median(dst - src, axis=0)
    return np.array([[1.0, 0.0, t[0]], [0.0, 1.0, t[1]]])


def _apply(m: np.ndarray, p: np.ndarray) -> np.ndarray:
    return p @ m[:, :2].T + m[:, 2]


def _lk(
    prev: np.ndarray, cur: np.ndarray, p0: np.ndarray, guess: np.ndarray | None, params: dict
) -> tuple[np.ndarray, np.ndarray]:
    """One LK call on (K, 2) points, started at ``guess`` (K, 2) if given, else at ``p0``;
    returns positions (K, 2) and status (K,) bool."""
    start = p0 if guess is None else guess
    p0 = p0.astype(np.float32).reshape(-1, 1, 2)
    init = start.astype(np.float32).reshape(-1, 1, 2).copy()
    flags = 0 if guess is None else cv2.OPTFLOW_USE_INITIAL_FLOW
    p1, st, _ = cv2.calcOpticalFlowPyrLK(prev, cur, p0, init, flags=flags, **params)
    return np.asarray(p1).reshape(-1, 2).astype(np.float64), np.asarray(st).reshape(-1) > 0


@dataclass(frozen=True, eq=False)
class _Frame:
    """A frame kept for LK: its index and grayscale image (H, W) uint8.

    (OpenCV's Python binding cannot take prebuilt pyramids, so LK builds them per call;
    at 512x512 a call costs about half a millisecond.)
    """

    index: int
    gray: np.ndarray


def track_points(
    frames: Iterable[np.ndarray],
    init: np.ndarray,
    *,
    config: ShoulderConfig = ShoulderConfig(),
    bgr: bool = False,
    total: int | None = None,
    progress: ProgressFn | None = None,
) -> ShoulderTracks:
    """Track ``init`` (P, 2) points of frame 0 through ``frames`` with pyramidal LK.

    ``frames`` is any iterable of (H, W, 3) uint8 images (RGB, or BGR with ``bgr``) or
    (H, W) grayscale, all the same size: a list, or a generator decoding JPEG frames from
    a dataset. Only the current frame, the previous one and, per lost point, the frame
    where it was last valid are kept, so memory does not grow with the clip.

    Each frame every valid point is tracked forward from the previous frame and back; it
    stays valid if both LK calls converge (status 1), the round trip ends within
    ``fb_max_px``, its window still matches the previous frame's (NCC >= ``min_ncc``) and
    it is at least ``edge_margin_px`` inside the image. A point that fails is invalid (NaN
    in ``points2d``) until, with ``reseed``, a direct LK from the frame where it was last
    valid, started at the position predicted by the other points' motion since then (a
    similarity fitted to the points valid on both frames), passes the same checks (its
    window compared with the old one warped by that similarity) and lands within
    ``reseed_max_px`` of the prediction.
    ``total`` (the number of frames, if known; else ``len(frames)`` when it has one) only
    feeds ``progress("shoulders", done, total)``. Returns :class:`ShoulderTracks` with
    ``points2d`` (N, P, 2), ``valid`` (N, P), ``init`` (P, 2) and ``predicted`` (N, P, 2).
    A lost point is retried every ``reseed_every`` frames.
    """
    init = np.asarray(init, np.float64)
    if init.ndim != 2 or init.shape[1] != 2 or len(init) == 0:
        raise InputError(f"init must be (P, 2) points with P >= 1, got shape {init.shape}")
    if not np.isfinite(init).all():
        raise InputError("init points must be finite")
    if total is None and hasattr(frames, "__len__"):
        total = len(frames)  # type: ignore[arg-type]
    n_pts = len(init)
    win = config.window

    rows: list[np.ndarray] = []  # (P, 2) float32 per frame, NaN where invalid
    pred_rows: list[np.ndarray] = []
    valid_rows: list[np.ndarray] = []
    size = (0, 0)
    prev: _Frame | None = None
    # Per point: the frame it was last valid on (kept alive only while someone needs it)
    # and its position there.
    last: list[_Frame | None] = [None] * n_pts
    last_pos = init.copy()
    for t, frame in enumerate(frames):
        gray = to_gray(frame, bgr=bgr)
        cur = _Frame(t, gray)
        if t == 0:
            size = (gray.shape[1], gray.shape[0])
            outside = np.flatnonzero(~_inside(init, size, 0.0))
            if len(outside):
                i = int(outside[0])
                raise InputError(
                    f"init point {i} ({init[i, 0]:g}, {init[i, 1]:g}) lies outside the first "
                    f"frame ({size[0]}x{size[1]})"
                )
            pos = init.copy()
            ok = _inside(init, size, config.edge_margin_px)
            last = [cur] * n_pts
        else:
            if (gray.shape[1], gray.shape[0]) != size:
                raise InputError(
                    f"frame {t} is {gray.shape[1]}x{gray.shape[0]}, frame 0 was "
                    f"{size[0]}x{size[1]}: all frames must have the same size"
                )
            assert prev is not None
            pos = np.full((n_pts, 2), np.nan)
            ok = np.zeros(n_pts, bool)
            alive = np.flatnonzero(valid_rows[-1])
            if len(alive):
                p0 = rows[-1][alive].astype(np.float64)
                template = _patches(prev.gray, p0, win)
                p1, ok1 = _check(prev, cur, p0, None, template, config=config, size=size)
                pos[alive[ok1]] = p1[ok1]
                ok[alive[ok1]] = True
        # predictions and re-seeding of the points not valid on this frame
        pred = pos.copy()
        motions: dict[int, np.ndarray | None] = {}
        for i in np.flatnonzero(~ok):
            ref = last[i]
            assert ref is not None
            if ref.index not in motions:
                both = ok & valid_rows[ref.index] if ref.index < t else np.zeros(n_pts, bool)
                motions[ref.index] = _similarity(
                    rows[ref.index][both].astype(np.float64), pos[both]
                )
            m = motions[ref.index]
            guess = last_pos[i] if m is None else _apply(m, last_pos[i][None])[0]
            pred[i] = guess
            if config.reseed and ref.index < t and (t - ref.index) % config.reseed_every == 0:
                linear = np.eye(2) if m is None else m[:, :2]
                template = _warped_patch(ref.gray, last_pos[i], linear, win)
                p1, good = _check(
                    ref, cur, last_pos[i][None], guess[None], template, config=config, size=size
                )
                near = m is None or np.hypot(*(p1[0] - guess)) <= config.reseed_max_px
                if good[0] and near:
                    pos[i] = pred[i] = p1[0]
                    ok[i] = True
        for i in np.flatnonzero(ok):
            last[i] = cur
            last_pos[i] = pos[i]
        pos[~ok] = np.nan
        rows.append(pos.astype(np.float32))
        pred_rows.append(pred.astype(np.float32))
        valid_rows.append(ok)
        prev = cur
        if progress is not None and (t + 1) % 30 == 0:
            progress("shoulders", t + 1, total)
    if not rows:
        raise InputError("no frames to track shoulder points on")
    if progress is not None:
        progress("shoulders", len(rows), len(rows))
    return ShoulderTracks(
        points2d=np.stack(rows),
        valid=np.stack(valid_rows),
        init=init.astype(np.float32),
        predicted=np.stack(pred_rows),
    )


def _warped_patch(gray: np.ndarray, centre: np.ndarray, linear: np.ndarray, window: int):
    """(1, window, window) float32 window of ``gray`` around ``centre`` (2,) as it looks
    after the 2x2 ``linear`` map (rotation and scale of the motion since): the window a
    re-seeded point is compared with."""
    c = (window - 1) / 2
    inv = np.linalg.inv(linear)
    m = np.hstack([inv, (centre - inv @ [c, c])[:, None]])
    out = cv2.warpAffine(
        gray,
        m,
        (window, window),
        flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP,
        borderMode=cv2.BORDER_REPLICATE,
    )
    return out.astype(np.float32)[None]


def _check(
    src: _Frame,
    dst: _Frame,
    p0: np.ndarray,
    guess: np.ndarray | None,
    template: np.ndarray,
    *,
    config: ShoulderConfig,
    size: tuple[int, int],
) -> tuple[np.ndarray, np.ndarray]:
    """Forward-backward checked LK of (K, 2) points from ``src`` to ``dst``.

    Returns the positions (K, 2) in ``dst`` and (K,) bool: both LK calls converged, the
    round trip ends within ``fb_max_px`` of ``p0``, the point is inside the image, and its
    window in ``dst`` correlates with ``template`` (K, w, w) at least ``min_ncc``.
    """
    params = config.lk_params()
    p1, st1 = _lk(src.gray, dst.gray, p0, guess, params)
    back_guess = None if guess is None else p1 - (guess - p0)
    pb, st2 = _lk(dst.gray, src.gray, p1, back_guess, params)
    fb = np.linalg.norm(pb - p0, axis=1)
    ok = st1 & st2 & (fb <= config.fb_max_px) & np.isfinite(p1).all(axis=1)
    ok &= _inside(np.nan_to_num(p1, nan=-1e9), size, config.edge_margin_px)
    if config.min_ncc > 0 and ok.any():
        ncc = _ncc(_patches(dst.gray, p1[ok], config.window), template[ok])
        ok[np.flatnonzero(ok)[ncc < config.min_ncc]] = False
    return p1, ok


# --------------------------------------------------------------------------- billboard


def billboard(
    points2d: np.ndarray,
    valid: np.ndarray,
    *,
    intrinsics: np.ndarray,
    depth: float,
    reference: Literal["first", "median"] = "first",
) -> np.ndarray:
    """Lift tracked points onto the billboard plane ``z = depth``: (P, 3) camera coordinates.

    ``points2d`` (N, P, 2) and ``valid`` (N, P) as :func:`track_points` returns them;
    ``intrinsics`` the crop's camera matrix K, (3, 3) or per frame (N, 3, 3); ``depth`` the
    mean face depth in camera units. Each point is back-projected ``X = depth * K^-1 (u, v,
    1)`` from ``reference="first"``: its position on the first frame where it is valid (with
    that frame's K), so ``K @ X / depth`` gives that position back exactly; or
    ``"median"``: the per-axis median of the back-projections over all its valid frames
    (robust to a bad first frame, no longer exact on any single frame). A point valid on no
    frame gets NaN.
    """
    pts = np.asarray(points2d, np.float64)
    valid = np.asarray(valid, bool)
    if pts.ndim != 3 or pts.shape[2] != 2:
        raise InputError(f"points2d must be (N, P, 2), got shape {pts.shape}")
    n, p = pts.shape[:2]
    if valid.shape != (n, p):
        raise InputError(f"valid must be (N, P) = ({n}, {p}), got shape {valid.shape}")
    k = np.asarray(intrinsics, np.float64)
    if k.shape == (3, 3):
        k = np.broadcast_to(k, (n, 3, 3))
    if k.shape != (n, 3, 3):
        raise InputError(f"intrinsics must be (3, 3) or (N, 3, 3) = ({n}, 3, 3), got {k.shape}")
    if not np.isfinite(k).all() or np.any(np.abs(np.linalg.det(k)) < 1e-12):
        raise InputError("intrinsics must be finite, invertible camera matrices")
    if not (np.isfinite(depth) and depth > 0):
        raise InputError(f"depth must be a positive distance, got {depth}")
    if reference not in ("first", "median"):
        raise InputError(f"reference must be 'first' or 'median', got {reference!r}")
    valid = valid & np.isfinite(pts).all(axis=2)
    out = np.full((p, 3), np.nan)
    k_inv = np.linalg.inv(k)  # (N, 3, 3)
    for j in range(p):
        frames = np.flatnonzero(valid[:, j])
        if len(frames) == 0:
            continue
        if reference == "first":
            frames = frames[:1]
        uv1 = np.concatenate([pts[frames, j], np.ones((len(frames), 1))], axis=1)  # (F, 3)
        rays = np.einsum("fij,fj->fi", k_inv[frames], uv1)  # (F, 3)
        xyz = depth * rays / rays[:, 2:3]
        out[j] = np.median(xyz, axis=0)
    return out


def scaled_config(config: ShoulderConfig, scale: float) -> ShoulderConfig:
    """The config for tracking frames resampled by ``scale``: windows and pixel thresholds
    shrink with the image (the window stays odd and at least 7 pixels)."""
    if scale == 1.0:
        return config
    window = max(7, int(round(config.window * scale)) | 1)
    return dataclasses.replace(
        config,
        window=window,
        fb_max_px=config.fb_max_px * scale,
        edge_margin_px=config.edge_margin_px * scale,
        reseed_max_px=config.reseed_max_px * scale,
        max_level=max(1, config.max_level - int(round(np.log2(1 / scale)))),
    )
