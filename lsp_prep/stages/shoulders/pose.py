"""MediaPipe Pose on the first frame, and the face outline the upper-body region avoids."""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from lsp_prep.errors import InputError
from lsp_prep.layout import load_layout
from lsp_prep.stages.shoulders.config import ShoulderConfig
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


@dataclass(frozen=True)
class Face:
    """Face outline for the exclusion region: points (K, 2), chin, unit down axis, height."""

    points: np.ndarray
    chin: np.ndarray
    down: np.ndarray
    height: float


def face_from_lsp(face_points2d: np.ndarray) -> Face:
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
    return Face(pts, chin, unit(chin - eyes), float((pts.max(axis=0) - pts.min(axis=0)).max()))


def face_from_pose(pose: np.ndarray) -> Face:
    """Face outline guessed from Pose's face landmarks (K, 2): chin below the mouth."""
    eyes = pose[list(POSE_EYES)].mean(axis=0)
    mouth = pose[list(POSE_MOUTH)].mean(axis=0)
    down = unit(mouth - eyes)
    chin = mouth + 0.8 * (mouth - eyes)
    ear_span = float(np.linalg.norm(pose[POSE_EARS[0]] - pose[POSE_EARS[1]]))
    side = np.array([-down[1], down[0]])
    jaw = [chin + side * ear_span / 3, chin - side * ear_span / 3]
    top = eyes - 1.0 * (chin - eyes)
    pts = np.vstack([pose[list(POSE_FACE)], chin, *jaw, top])
    return Face(pts, chin, down, max(float(np.linalg.norm(chin - top)), ear_span))


def unit(v: np.ndarray) -> np.ndarray:
    """``v`` (2,) scaled to length 1; straight down for a (near) zero vector."""
    n = float(np.linalg.norm(v))
    return np.array([0.0, 1.0]) if n < 1e-6 else v / n


def run_pose(frame_rgb: np.ndarray) -> tuple[np.ndarray | None, np.ndarray | None]:
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


def exclusion(face: Face, size: tuple[int, int], config: ShoulderConfig) -> np.ndarray:
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
