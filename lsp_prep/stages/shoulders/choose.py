"""Choosing the upper-body points on frame 0: MediaPipe Pose, the face outline, texture."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import cv2
import numpy as np

from lsp_prep.errors import InputError
from lsp_prep.stages.shoulders.config import ShoulderConfig
from lsp_prep.stages.shoulders.image import texture_map, to_gray
from lsp_prep.stages.shoulders.place import clear_around, inside_mask, line_points, pick
from lsp_prep.stages.shoulders.pose import (
    POSE_LEFT_SHOULDER,
    POSE_RIGHT_SHOULDER,
    Face,
    exclusion,
    face_from_lsp,
    face_from_pose,
    run_pose,
)

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
        return _user_points(config.points, (w, h))
    warnings: list[str] = []
    lm, seg = run_pose(frame_rgb)
    face, shoulders, source = _shoulders(lm, face_points2d, config=config)
    if source == "face_guess":
        seg = None
        warnings.append(
            "MediaPipe Pose found no shoulders on the first frame: the upper-body region is "
            "guessed below the face; check the points or set shoulders.points"
        )
    scene = _scene(frame_rgb, face, shoulders, seg, config=config)
    neck_x = face.chin[0]
    counts = ((config.n_points + 1) // 2, config.n_points // 2)
    all_points: list[np.ndarray] = []
    kinds: list[PointKind] = []
    for side, shoulder, k in zip(
        (scene.xx < neck_x, scene.xx >= neck_x), shoulders, counts, strict=True
    ):
        pts, side_kinds = _fill_side(scene, side, shoulder, k, face=face, config=config)
        order = np.argsort(pts[:, 0], kind="stable")
        all_points.append(pts[order])
        kinds += [side_kinds[i] for i in order]
    points = np.vstack(all_points).astype(np.float32)
    warnings += _placement_warnings(kinds, config.n_points)
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
        region=scene.region,
        warnings=tuple(warnings),
    )


def _user_points(points: list[list[float]] | tuple, size: tuple[int, int]) -> ShoulderPoints:
    """``shoulders.points`` checked against an image of ``size`` (W, H)."""
    w, h = size
    pts = np.array(points, np.float64)
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


def _shoulders(
    lm: np.ndarray | None, face_points2d: np.ndarray | None, *, config: ShoulderConfig
) -> tuple[Face, np.ndarray, PointSource]:
    """The face, the two shoulders (2, 2) image-left first, and where they came from:
    Pose's shoulder landmarks when both are visible enough, else a guess from the face."""
    found = lm is not None and min(lm[POSE_LEFT_SHOULDER, 2], lm[POSE_RIGHT_SHOULDER, 2]) >= (
        config.min_visibility
    )
    if face_points2d is not None:
        face = face_from_lsp(face_points2d)
    elif lm is not None:
        face = face_from_pose(lm[:, :2])
    else:
        raise InputError(
            "MediaPipe Pose found no body on the first frame and no face points were given: "
            "pass face_points2d, or set shoulders.points by hand"
        )
    source: PointSource
    if found:
        assert lm is not None
        pair = lm[[POSE_RIGHT_SHOULDER, POSE_LEFT_SHOULDER], :2]
        source = "pose"
    else:
        # Typical proportions: shoulders about 2.2 face widths apart, half a face below the chin.
        side = np.array([-face.down[1], face.down[0]])
        base = face.chin + 0.5 * face.height * face.down
        pair = np.stack([base - 1.1 * face.height * side, base + 1.1 * face.height * side])
        source = "face_guess"
    return face, pair[np.argsort(pair[:, 0])], source


@dataclass(frozen=True, eq=False)
class _Scene:
    """The first frame as the point placement sees it; masks are (H, W) bool."""

    quality: np.ndarray
    """(H, W) float32 texture (:func:`texture_map`)."""
    region: np.ndarray
    """The upper-body region: below the chin, beside and below the shoulders, on the body."""
    excluded: np.ndarray
    """The face swept down over the neck."""
    body: np.ndarray | None
    """Pose's person mask, eroded; None without segmentation."""
    inside: np.ndarray
    """Far enough from the image border for the LK window."""
    below: np.ndarray
    """Below the chin."""
    bottom: np.ndarray
    """The bottom rows of the image."""
    xx: np.ndarray
    """(H, W) column of every pixel."""
    neck: np.ndarray
    """(2,) the bottom of the neck."""
    min_dist: float
    """Least distance between points."""


def _scene(
    frame_rgb: np.ndarray,
    face: Face,
    shoulders: np.ndarray,
    seg: np.ndarray | None,
    *,
    config: ShoulderConfig,
) -> _Scene:
    """Texture, region and masks of the first frame for shoulders (2, 2)."""
    h, w = frame_rgb.shape[:2]
    width = max(float(np.linalg.norm(shoulders[1] - shoulders[0])), face.height)
    quality = texture_map(to_gray(frame_rgb), window=config.window)
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
    excluded = exclusion(face, (w, h), config)
    region &= ~excluded
    body: np.ndarray | None = None
    if config.use_segmentation and seg is not None:
        body = (seg > config.segmentation_threshold).astype(np.uint8)
        m = config.body_margin_px
        if m > 0:
            body = cv2.erode(body, cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * m + 1,) * 2))
        region &= body.astype(bool)
    return _Scene(
        quality=quality,
        region=region,
        excluded=excluded,
        body=None if body is None else body.astype(bool),
        inside=inside_mask((w, h), pad),
        below=yy > face.chin[1],
        bottom=yy >= h - 1 - pad - config.window,
        xx=xx,
        neck=face.chin + config.neck_length * face.height * face.down,
        min_dist=max(config.spread * width, config.window / 2),
    )


def _fill_side(
    scene: _Scene,
    side: np.ndarray,
    shoulder: np.ndarray,
    k: int,
    *,
    face: Face,
    config: ShoulderConfig,
) -> tuple[np.ndarray, list[PointKind]]:
    """``k`` points (k, 2) on one ``side`` (H, W) of the neck, best kind first: texture in
    the region, the shoulder outline, texture below the face, the image's bottom rows."""
    pts = pick(
        scene.quality,
        scene.region & side,
        k=k,
        min_dist=scene.min_dist,
        least_dist=config.window / 2,
        floor=config.min_quality,
    )
    kinds: list[PointKind] = ["texture"] * len(pts)
    if len(pts) < k:
        # Beside the neck the shoulder outline may rise a little above the chin's level:
        # look for it from there down (the face and neck stay excluded).
        start = scene.neck.copy()
        start[0] += np.sign(shoulder[0] - scene.neck[0]) * 0.3 * face.height
        allowed = scene.inside & ~scene.excluded
        if scene.body is None:
            allowed &= scene.below  # the straight line between guessed shoulders
        line = line_points(
            k=k - len(pts),
            shoulder=shoulder,
            neck=start,
            body=scene.body,
            allowed=allowed,
            top=float(face.chin[1] - 0.15 * face.height),
            taken=pts,
            min_dist=scene.min_dist,
        )
        pts = np.vstack([pts, line])
        kinds += ["shoulder_line"] * len(line)
    # No room on the body (a close-up): the best texture left below the chin, outside
    # the face and neck; failing that, the bottom rows of the image.
    stages: tuple[tuple[PointKind, np.ndarray], ...] = (
        ("below_face", scene.inside & ~scene.excluded & scene.below & side),
        ("image_bottom", scene.inside & scene.bottom & side),
    )
    for kind, mask in stages:
        if len(pts) < k:
            free = clear_around(mask, pts, radius=scene.min_dist / 2)
            more = pick(
                scene.quality,
                free,
                k=k - len(pts),
                min_dist=scene.min_dist,
                least_dist=config.window / 2,
                floor=0.0,
            )
            pts = np.vstack([pts, more])
            kinds += [kind] * len(more)
    return pts, kinds


def _placement_warnings(kinds: list[PointKind], n_points: int) -> list[str]:
    """What to tell the user about points that are not on upper-body texture."""
    placed = {kind: kinds.count(kind) for kind in ("shoulder_line", "below_face", "image_bottom")}
    warnings = []
    if placed["shoulder_line"]:
        warnings.append(
            f"{placed['shoulder_line']} of {n_points} shoulder points placed on the "
            "shoulder outline: the clothing has little texture to track"
        )
    if placed["below_face"] or placed["image_bottom"]:
        where = " (some on the bottom rows of the image)" if placed["image_bottom"] else ""
        warnings.append(
            f"no room on the upper body for {placed['below_face'] + placed['image_bottom']} of "
            f"{n_points} shoulder points, placed below the face instead{where}: the "
            "shoulders are hardly visible in the crop (a close-up?) and those points may move "
            "with the head; widen the crop (crop.scale) or set shoulders.points"
        )
    return warnings
