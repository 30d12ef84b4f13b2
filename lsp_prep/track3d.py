"""The geometry stage of prep: calibrate, track the head in 3D, derive what models need."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.spatial.transform import Rotation, Slerp

from .errors import InputError
from .geometry import (
    Calibration,
    CameraConfig,
    TrackConfig,
    calibrate_focal,
    initial_poses,
    object_points,
    track_poses,
)
from .layout import Layout


@dataclass
class HeadTrack:
    """Per-frame 3D head motion of one clip (see the schema for units and frames)."""

    calibration: Calibration
    rotation: np.ndarray  # (N, 3) Rodrigues, radians
    translation: np.ndarray  # (N, 3) cm
    points3d: np.ndarray  # (N, 73, 3) object coordinates, NaN where not valid
    mean_shape: np.ndarray  # (73, 3)
    mouth_displacement: np.ndarray  # (N, 25, 3), NaN where not valid
    reprojection_error: np.ndarray  # (N,) pixels, NaN where not valid


def fill_poses(
    rotvec: np.ndarray, trans: np.ndarray, valid: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Poses for frames without landmarks: slerp / lerp between valid neighbours, held at ends."""
    good = np.flatnonzero(valid)
    if len(good) == len(valid):
        return rotvec, trans
    t = np.arange(len(valid))
    tq = np.clip(t, good[0], good[-1])
    rv = Slerp(good, Rotation.from_rotvec(rotvec[good]))(tq).as_rotvec() if len(good) > 1 else (
        np.repeat(rotvec[good], len(valid), axis=0))  # fmt: skip
    tr = np.stack([np.interp(t, good, trans[good, k]) for k in range(3)], axis=1)
    return rv, tr


def track_head(
    lsp3d: np.ndarray,
    valid: np.ndarray,
    *,
    image_size: tuple[int, int],
    layout: Layout,
    camera: CameraConfig = CameraConfig(),
    track: TrackConfig = TrackConfig(),
) -> HeadTrack:
    """Calibrate and track from LSP-73 landmarks (N, 73, 3) in original pixels (x, y; z is
    MediaPipe's relative depth in the same pixel scale). ``valid`` (N,) marks usable frames."""
    if not valid.any():
        raise InputError("no valid landmarks to track the head with")
    stable = np.asarray(layout.sets["stable"])
    cal = calibrate_focal(lsp3d[..., :2], lsp3d, valid, image_size=image_size, stable=stable,
                          config=camera)  # fmt: skip
    idx = np.flatnonzero(valid)
    principal = cal.K[:2, 2]
    rv0, t0 = initial_poses(lsp3d[idx][:, stable], cal.shape, focal=cal.focal, principal=principal)
    rv, tr, rms = track_poses(lsp3d[idx][:, stable, :2], cal.shape, rv0, t0, cal.K, config=track)
    n = len(valid)
    rot, trans = np.zeros((n, 3)), np.zeros((n, 3))
    rot[idx], trans[idx] = rv, tr
    rot, trans = fill_poses(rot, trans, valid)
    err = np.full(n, np.nan)
    err[idx] = rms
    pts = np.full((n, lsp3d.shape[1], 3), np.nan)
    pts[idx] = object_points(lsp3d[idx], cal.shape, stable)
    mean = pts[idx].mean(axis=0)
    mouth = layout.mouth
    dv = pts[:, mouth] - mean[mouth]
    return HeadTrack(cal, rot, trans, pts, mean, dv, err)
