"""Choosing the upper-body points on frame 0: MediaPipe Pose, the face outline, texture."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import cv2
import numpy as np

from lsp_prep.errors import InputError
from lsp_prep.layout import load_layout
from lsp_prep.stages.shoulders.config import ShoulderConfig
from lsp_prep.stages.shoulders.image import texture_map, to_gray
from lsp_prep.stages.track import quiet_native_stderr

POSE_LEFT_SHOULDER = 11
"""MediaPipe Pose landmark of the subject's left shoulder (usually on the image's right)."""
POSE_RIGHT_SHOULDER = 12
"""MediaPipe Pose landmark of the subject's right shoulder (usually on the image's left)."""
POSE_FACE = tuple(range(11))
"""MediaPipe Pose face landmarks: nose 0, eyes 1-6 (2 and 5 the centres), ears 7-8, mouth 9-10."""
POSE_EYES = (2, 5)
POSE_MOUTH = (9, 10)
POSE_EARS = (7, 8)


PointSource = Literal["user", "pose", "face_guess"]
PointKind = Literal["texture", "shoulder_line", "below_face", "image_bottom", "user"]


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


@dataclass(frozen=True)
class _Face:
    """Face outline for the exclusion region: points (K, 2), chin, unit down axis, height."""

    points: np.ndarray
    chin: np.ndarray
    down: np.ndarray
    height: float


def _face_from_lsp(face_points2d: np.ndarray) -> _Face:
    """Face outline from the LSP-73 points (73, 2): the chin is the middle of the layout's
    contour, the eyes the mean of its eye corner and lid points."""
    groups = load_layout().groups
    contour, eye_points = groups["contour"], list(groups["eye_corners"])
    pts = np.asarray(face_points2d, np.float64)
    if pts.ndim != 2 or pts.shape[1] != 2 or pts.shape[0] <= max(eye_points):
        raise InputError(f"face_points2d must be (73, 2) LSP-73 points, got {pts.shape}")
    if not np.isfinite(pts).all():
        raise InputError("face_points2d has non-finite values (no face on the first frame?)")
    chin = pts[contour[len(contour) // 2]]
    eyes = pts[eye_points].mean(axis=0)
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
