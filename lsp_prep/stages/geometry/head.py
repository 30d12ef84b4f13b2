"""The geometry stage of prep: calibrate (:mod:`.focal`), track the head in 3D
(:mod:`.poses`), derive what models need; and the features stage's second pass on texture
features (:func:`refine_head`)."""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np
from scipy.spatial.transform import Rotation, Slerp
from threadpoolctl import threadpool_limits

from lsp_prep.camera import refocus
from lsp_prep.constants import EYE_DISTANCE_CM
from lsp_prep.errors import InputError
from lsp_prep.layout import Layout
from lsp_prep.stages.geometry.config import CameraConfig, GeometryConfig
from lsp_prep.stages.geometry.focal import (
    Calibration,
    calibrate_focal,
    point_groups,
    search_focal,
    select_frames,
)
from lsp_prep.stages.geometry.mouth import mouth_displacement
from lsp_prep.stages.geometry.poses import track_poses
from lsp_prep.stages.geometry.quality import (
    SOURCE_BLEND,
    SOURCE_LANDMARKS,
    SOURCE_REFINED,
    Gate,
    GateConfig,
    corrected_poses,
    gate_poses,
    rigid_misfit,
    spread_ratio,
    well_fitted,
)
from lsp_prep.stages.geometry.rigidity import RigidityConfig, rigid_fit
from lsp_prep.stages.geometry.shape import back_project, initial_poses, object_points, triangulate


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
    rv = (
        Slerp(good, Rotation.from_rotvec(rotvec[good]))(tq).as_rotvec()
        if len(good) > 1
        else (np.repeat(rotvec[good], len(valid), axis=0))
    )
    tr = np.stack([np.interp(t, good, trans[good, k]) for k in range(3)], axis=1)
    return rv, tr


def track_head(
    lsp3d: np.ndarray,
    valid: np.ndarray,
    *,
    image_size: tuple[int, int],
    layout: Layout,
    camera: CameraConfig = CameraConfig(),
    geometry: GeometryConfig = GeometryConfig(),
) -> HeadTrack:
    """Calibrate and track from LSP-73 landmarks (N, 73, 3) in original pixels (x, y; z is
    MediaPipe's relative depth in the same pixel scale). ``valid`` (N,) marks usable frames."""
    if not valid.any():
        raise InputError("no valid landmarks to track the head with")
    stable = np.asarray(layout.sets["stable"])
    cal = calibrate_focal(
        lsp3d[..., :2], lsp3d, valid, image_size=image_size, stable=stable, config=camera
    )
    idx = np.flatnonzero(valid)
    principal = cal.K[:2, 2]
    rv0, t0 = initial_poses(lsp3d[idx][:, stable], cal.shape, focal=cal.focal, principal=principal)
    rv, tr, rms = track_poses(lsp3d[idx][:, stable, :2], cal.shape, rv0, t0, cal.K, config=geometry)
    n = len(valid)
    rot, trans = np.zeros((n, 3)), np.zeros((n, 3))
    rot[idx], trans[idx] = rv, tr
    rot, trans = fill_poses(rot, trans, valid)
    err = np.full(n, np.nan)
    err[idx] = rms
    pts = np.full((n, lsp3d.shape[1], 3), np.nan)
    pts[idx] = object_points(lsp3d[idx], cal.shape, stable)
    mean = pts[idx].mean(axis=0)
    dv = mouth_displacement(pts, rot, trans, valid, layout=layout, terms=geometry.mouth_pose_terms)
    return HeadTrack(cal, rot, trans, pts, mean, dv, err)


@dataclass(frozen=True)
class Refinement:
    """What :func:`refine_head` did, for the dataset and the summary."""

    n_features: np.ndarray
    """(N,) texture features the pose of each frame was fitted to; 0 where the pose comes
    from the landmarks (frame not measured, too few features found, or the refined pose
    refused by the gate)."""
    source: np.ndarray
    """(N,) int8: where each frame's pose comes from (``SOURCE_*`` of
    :mod:`lsp_prep.stages.geometry.quality`)."""
    warning: str
    """Non-empty when the texture could not be used, or its poses were refused, and the
    landmark track was kept."""


def refine_head(
    head: HeadTrack,
    points2d: np.ndarray,
    points3d: np.ndarray,
    lsp3d: np.ndarray,
    valid: np.ndarray,
    *,
    image_size: tuple[int, int],
    layout: Layout,
    camera: CameraConfig = CameraConfig(),
    geometry: GeometryConfig = GeometryConfig(),
    min_features: int = 12,
    calib_frames: int = 120,
    calib_features: int = 120,
    gate: GateConfig = GateConfig(),
    rigidity: RigidityConfig = RigidityConfig(),
) -> tuple[HeadTrack, Refinement]:
    """Calibrate and track again on texture features (see :mod:`lsp_prep.stages.features.measure`).

    ``head`` is the landmark track, ``points2d`` (N, P, 2) the features measured in
    original pixels (NaN where not measured), ``points3d`` (P, 3) their first 3D points in
    ``head``'s object frame, ``lsp3d`` (N, 73, 3) the landmarks as for :func:`track_head`.

    1. The focal length: :func:`~lsp_prep.stages.geometry.focal.search_focal` on up to
       ``calib_features`` features in ``calib_frames`` measured frames chosen for pose
       variety, which also refines their 3D points: the features' focal length where
       their curve identifies it (a narrow interval), else the landmarks' where theirs
       did, else the default field of view; the features' shape is fitted at that focal
       length. When their curve does not bound f (and ``gate.require_focal``), the
       landmark track is kept whole, with a warning.
    2. The pose of every measured frame: a batched robust fit to those features; then
       which features move with the skull (:func:`~lsp_prep.stages.geometry.rigidity.
       rigid_fit`: reweighted bundle adjustments on up to ``calib_frames`` frames chosen
       for pose variety) and the fit repeated on every feature, each weighted by its
       rigidity, with a tight Huber threshold (``rigidity.huber_px``).
    3. The landmark poses again, in the new camera and object frame (the stable landmarks
       triangulated with the feature poses), and the gate (:func:`~lsp_prep.stages.
       geometry.quality.gate_poses`): a measured frame keeps its feature pose only where
       that explains the stable landmarks about as well as the landmark pose does (and
       does not turn far from it once the landmark track's lean is taken out), or where
       its features fit it well whatever the landmarks say (``gate.trust_features``); frames
       between accepted ones take the correction interpolated between them, blended in
       over ``gate.ramp`` frames at the ends of each span; every other frame keeps its
       landmark pose with the lean the accepted frames show taken out (one affine map
       of the Euler angles), so no frame's own correction is extrapolated. When
       fewer than ``gate.min_accepted`` of the measured frames pass, the landmark track
       is kept whole, with a warning.
    4. Object-space landmarks: Face Mesh's per-frame shapes mapped onto the stable points
       triangulated with the new poses, then moved onto the rays of the detected 2D
       landmarks, so that the pose projects them exactly where they were seen.
    """
    n = len(valid)
    count = np.isfinite(points2d[..., 0]).sum(1) * valid
    meas = count >= min_features
    idx = np.flatnonzero(meas)
    need = max(8, camera.n_frames // 4)
    if len(idx) < need:
        warning = (
            f"texture features were measured on {len(idx)} frames (needs {need}); head poses "
            "come from the landmarks alone, whose rotations are too small by up to 20 %"
        )
        return head, Refinement(np.zeros(n, np.int64), np.zeros(n, np.int8), warning)
    cal, sub = _focal_on_features(
        head,
        points2d,
        points3d,
        idx,
        image_size=image_size,
        camera=camera,
        calib_frames=calib_frames,
        calib_features=calib_features,
    )
    if gate.require_focal and not cal.bounded:
        warning = (
            f"the texture features do not fix the focal length ({cal.reason}), so they "
            "determine the head's rotation no better than the landmarks; head poses come "
            "from the landmarks alone"
        )
        return head, Refinement(np.zeros(n, np.int64), np.zeros(n, np.int8), warning)
    t_land = refocus(head.translation, cal.focal / head.calibration.focal)
    step = max(1.0, float(np.median(np.diff(idx))))  # idx has at least 8 frames
    cfg = replace(geometry, smooth_frames=geometry.smooth_frames / step, huber_px=rigidity.huber_px)
    rv, tr, _ = track_poses(
        points2d[idx][:, sub],
        cal.shape,
        head.rotation[idx],
        t_land[idx],
        cal.K,
        config=cfg,
    )
    # every feature's rigid point and rigidity, on frames chosen for pose variety
    pos = select_frames(rv, np.arange(len(idx)), calib_frames)
    fit = rigid_fit(
        points2d[idx[pos]],
        triangulate(points2d[idx], rv, tr, cal.K),
        rv[pos],
        tr[pos],
        cal.K,
        rounds=rigidity.rounds,
        scale=rigidity.scale,
        huber_px=rigidity.huber_px,
    )
    keep = fit.weights > 0
    rv, tr, rms = track_poses(
        points2d[idx][:, keep],
        fit.shape[keep],
        rv,
        tr,
        cal.K,
        weights=fit.weights[keep][None],
        config=cfg,
    )
    stable = np.asarray(layout.sets["stable"])
    v = np.flatnonzero(valid)
    lm2d = np.where(valid[:, None, None], lsp3d[:, stable, :2], np.nan)
    trusted = (
        well_fitted(rms, count[idx], trust_rms=gate.trust_rms) if gate.trust_features else None
    )
    g = _gate(lm2d, valid, head.rotation, t_land, (idx, rv, tr), cal.K, geometry, gate, trusted)
    if g.accepted.sum() < gate.min_accepted * len(idx):
        warning = (
            f"the texture features' poses disagreed with the landmarks on "
            f"{len(idx) - int(g.accepted.sum())} of {len(idx)} measured frames; head poses "
            "come from the landmarks alone"
        )
        return head, Refinement(np.zeros(n, np.int64), np.zeros(n, np.int8), warning)
    rot, trans = g.rotation, g.translation
    spread = spread_ratio(head.rotation[valid], rot[valid])
    if (spread > gate.max_spread).any():
        warning = (
            "the texture features' head turns "
            + ", ".join(f"{k:.1f}x" for k in spread)
            + f" as far as the landmarks' (yaw, pitch, roll; at most {gate.max_spread:g}x "
            "expected): the features do not follow this head; head poses come from the "
            "landmarks alone"
        )
        return head, Refinement(np.zeros(n, np.int64), np.zeros(n, np.int8), warning)

    # landmarks in the new object frame, on the rays of the detected points
    lm_shape = triangulate(lsp3d[v][:, stable, :2], rot[v], trans[v], cal.K)
    pts = np.full((n, lsp3d.shape[1], 3), np.nan)
    pts[v] = back_project(
        lsp3d[v, :, :2], object_points(lsp3d[v], lm_shape, stable), rot[v], trans[v], cal.K
    )
    # the nominal unit: the mean shape's outer eye corners EYE_DISTANCE_CM apart (scaling
    # points and translations together leaves every projection unchanged)
    mean = pts[v].mean(axis=0)
    a, b = layout.outer_eye_corners
    unit = EYE_DISTANCE_CM / float(np.linalg.norm(mean[a] - mean[b]))
    pts, mean, trans, lm_shape = pts * unit, mean * unit, trans * unit, lm_shape * unit
    cal = replace(cal, shape=cal.shape * unit)
    err = rigid_misfit(rot, trans, lm_shape, cal.K, lm2d)  # the landmarks' fit where not measured
    full = g.weight >= 1.0
    err[idx[full[idx]]] = rms[full[idx]]
    dv = mouth_displacement(pts, rot, trans, valid, layout=layout, terms=geometry.mouth_pose_terms)
    refined = HeadTrack(cal, rot, trans, pts, mean, dv, err)
    source = np.where(full, SOURCE_REFINED, np.where(g.weight > 0, SOURCE_BLEND, SOURCE_LANDMARKS))
    used = np.where(g.accepted, count, 0)
    return refined, Refinement(used, source.astype(np.int8), "")


def _gate(
    lm2d: np.ndarray,
    valid: np.ndarray,
    rot_land: np.ndarray,
    t_land: np.ndarray,
    refined: tuple[np.ndarray, np.ndarray, np.ndarray],
    K: np.ndarray,
    geometry: GeometryConfig,
    gate: GateConfig,
    trusted: np.ndarray | None = None,
) -> Gate:
    """The landmark poses fitted again in the refined camera ``K`` and object frame (the
    stable landmarks ``lm2d`` (N, S, 2) triangulated with the refined poses ``refined`` =
    (idx, rv, tr)), then :func:`~lsp_prep.stages.geometry.quality.gate_poses`."""
    n, v = len(valid), np.flatnonzero(valid)
    idx, rv, tr = refined
    lm_shape = triangulate(lm2d[idx], rv, tr, K)
    rot_c, t_c = corrected_poses(rot_land, t_land, idx, rv, tr)  # a start in the new frame
    rot_l, t_l = np.zeros((n, 3)), np.zeros((n, 3))
    rot_l[v], t_l[v], _ = track_poses(lm2d[v], lm_shape, rot_c[v], t_c[v], K, config=geometry)
    rot_l, t_l = fill_poses(rot_l, t_l, valid)
    return gate_poses(
        lm2d,
        lm_shape,
        K,
        (rot_l, t_l),
        refined,
        margin=gate.margin,
        margin_px=gate.margin_px,
        max_turn_deg=gate.max_turn_deg,
        max_gap=gate.max_gap,
        ramp=gate.ramp,
        trusted=trusted,
    )


def _focal_on_features(
    head: HeadTrack,
    points2d: np.ndarray,
    points3d: np.ndarray,
    idx: np.ndarray,
    *,
    image_size: tuple[int, int],
    camera: CameraConfig,
    calib_frames: int,
    calib_features: int,
) -> tuple[Calibration, np.ndarray]:
    """The focal search on up to ``calib_features`` features, spread over the list (which
    is ordered by corner strength, not by place), in up to ``calib_frames`` of the measured
    frames ``idx`` chosen for pose variety; returns it and the features' indices."""
    sub = np.unique(np.linspace(0, len(points3d) - 1, min(len(points3d), calib_features)).round())
    sub = sub.astype(np.int64)
    p_sub = points3d[sub]
    pair = np.unravel_index(
        np.argmax(np.linalg.norm(p_sub[:, None] - p_sub, axis=-1)), (len(sub),) * 2
    )
    a, b = int(pair[0]), int(pair[1])
    frames = select_frames(head.rotation, idx, calib_frames)
    cal = search_focal(
        points2d[frames][:, sub],
        p_sub,
        head.rotation[frames],
        head.translation[frames],
        head.calibration.focal,
        image_size=image_size,
        gauge=(a, b, float(np.linalg.norm(p_sub[a] - p_sub[b]))),
        frames=frames,
        config=camera,
        name="features",
        fallback=head.calibration,
        groups=point_groups(p_sub, camera.feature_groups),
    )
    return cal, sub


# ----------------------------------------------------------------- the stage


def head_to_arrays(head: HeadTrack) -> dict[str, np.ndarray]:
    """The arrays the stage cache stores for ``head``."""
    cal = head.calibration
    return {
        "focal": np.array(cal.focal),
        "K": cal.K,
        "curve": cal.curve,
        "identified": np.array(cal.identified),
        "reason": np.array(cal.reason),
        "shape": cal.shape,
        "frames": cal.frames,
        "interval": np.array(cal.interval),
        "source": np.array(cal.source),
        "landmark_interval": np.array(cal.landmark_interval),
        "bounded": np.array(cal.bounded),
        "rotation": head.rotation,
        "translation": head.translation,
        "points3d": head.points3d,
        "mean_shape": head.mean_shape,
        "mouth_displacement": head.mouth_displacement,
        "reprojection_error": head.reprojection_error,
    }


def head_from_arrays(z: dict[str, np.ndarray]) -> HeadTrack:
    """Inverse of :func:`head_to_arrays`."""
    cal = Calibration(
        float(z["focal"]),
        z["K"],
        z["curve"],
        bool(z["identified"]),
        str(z["reason"]),
        z["shape"],
        z["frames"],
        (float(z["interval"][0]), float(z["interval"][1])),
        str(z["source"]),
        (float(z["landmark_interval"][0]), float(z["landmark_interval"][1])),
        bool(z["bounded"]),
    )
    return HeadTrack(
        cal,
        z["rotation"],
        z["translation"],
        z["points3d"],
        z["mean_shape"],
        z["mouth_displacement"],
        z["reprojection_error"],
    )


def geometry_stage(
    mesh: np.ndarray,
    valid: np.ndarray,
    *,
    frame_size: tuple[int, int],
    layout: Layout,
    camera: CameraConfig,
    geometry: GeometryConfig,
) -> HeadTrack:
    """The geometry stage: :func:`track_head` on a clip's Face Mesh track (N, 478, 3) in
    original pixels, ``valid`` (N,)."""
    with threadpool_limits(1):  # small matrices: BLAS threads only add overhead
        return track_head(
            layout.from_mesh(mesh),
            valid,
            image_size=frame_size,
            layout=layout,
            camera=camera,
            geometry=geometry,
        )
