"""The features stage of prep: measure the upper face's texture features on the stored
crops (cached), then calibrate and track the head again on them
(:func:`lsp_prep.stages.geometry.head.refine_head`)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import cv2
import h5py
import numpy as np
from threadpoolctl import threadpool_limits

from lsp_prep.camera import rescale_points, scale_intrinsics, to_original
from lsp_prep.constants import N_FACE_POINTS
from lsp_prep.errors import InputError
from lsp_prep.layout import Layout
from lsp_prep.progress import ProgressFn, no_progress
from lsp_prep.stages.features.measure import (
    FeatureConfig,
    build_reference,
    measure_frame,
    reference_frame,
)
from lsp_prep.stages.frames import GREY_AT_SCALE
from lsp_prep.stages.geometry.config import CameraConfig, GeometryConfig
from lsp_prep.stages.geometry.head import HeadTrack, refine_head
from lsp_prep.stages.geometry.quality import GateConfig
from lsp_prep.stages.geometry.rigidity import RigidityConfig

BLOCK = 64
"""Frames read per step: the frames' HDF5 chunk, so each is read once."""


def measure_clip(
    partial: Path,
    head: HeadTrack,
    mesh_crop: np.ndarray,
    valid: np.ndarray,
    k_crop: np.ndarray,
    boxes: np.ndarray,
    layout: Layout,
    *,
    size: int,
    config: FeatureConfig,
    progress: ProgressFn = no_progress,
) -> dict[str, np.ndarray]:
    """Measure the upper face's texture features on every ``config.every``-th frame of
    the ``size`` x ``size`` crops stored in ``partial``.

    Returns their positions (N, P, 2) in original pixels (NaN where not measured), their
    3D points (P, 3) in the landmark track's object frame, and the reference frame; or
    empty arrays and a warning when the reference shows too little texture.
    """
    fc = config
    n = len(valid)
    flag = GREY_AT_SCALE[fc.scale]
    full = (size, size)
    small = (round(size * fc.scale), round(size * fc.scale))
    k_work = scale_intrinsics(k_crop, full, small)
    ref = reference_frame(head.rotation, valid)
    # the reference's Face Mesh in the landmark track's object frame: one affine map on
    # the stable points takes its (x, y, depth) onto their object coordinates
    stable = np.asarray(layout.sets["stable"])
    mesh_ref = mesh_crop[ref, :N_FACE_POINTS].astype(np.float64)
    src = np.c_[mesh_ref[layout.mediapipe_index[stable]], np.ones(len(stable))]
    affine, *_ = np.linalg.lstsq(src, head.points3d[ref][stable], rcond=None)
    surface = np.c_[mesh_ref, np.ones(len(mesh_ref))] @ affine
    lsp_ref = rescale_points(layout.from_mesh(mesh_crop[ref])[:, :2], full, small)
    which = valid & (np.arange(n) % fc.every == 0)
    which[ref] = True
    todo = np.flatnonzero(which)
    with h5py.File(partial, "r") as f:
        frames = f["frames"]
        ref_pose = (head.rotation[ref], head.translation[ref], k_work[ref])
        try:
            image = cv2.imdecode(frames[ref], flag)
            reference = build_reference(
                ref, image, surface, *ref_pose, lsp_ref, layout=layout, config=fc
            )
        except InputError as exc:
            return {
                "points2d": np.zeros((n, 0, 2)),
                "points3d": np.zeros((0, 3)),
                "reference": np.array(ref),
                "warning": np.array(f"{exc}; head poses come from the landmarks alone"),
            }
        out = np.full((n, len(reference.points2d), 2), np.nan)
        for start in range(0, n, BLOCK):
            chunk = todo[(todo >= start) & (todo < start + BLOCK)]
            if len(chunk) == 0:
                continue
            jpegs = frames[start : start + BLOCK]
            for i in chunk:
                pose = (head.rotation[i], head.translation[i], k_work[i])
                image = cv2.imdecode(jpegs[i - start], flag)
                out[i] = measure_frame(image, reference, ref_pose, pose, fc)
            progress("features", int(chunk[-1]) + 1, n)
    progress("features", n, n)
    points = to_original(rescale_points(out, small, full), boxes, size)
    return {
        "points2d": points,
        "points3d": reference.points3d,
        "reference": np.array(ref),
        "warning": np.array(""),
    }


@dataclass(frozen=True)
class Refined:
    """The head after the features stage and what it says about it."""

    head: HeadTrack
    n_features: np.ndarray
    """(N,) features each frame's pose was fitted to (0: the landmark pose)."""
    source: np.ndarray
    """(N,) int8 where each frame's pose comes from (the dataset's ``track/source``)."""
    warnings: list[str]


def refine_clip(
    head: HeadTrack,
    feats: dict[str, np.ndarray],
    lsp3d: np.ndarray,
    valid: np.ndarray,
    *,
    frame_size: tuple[int, int],
    layout: Layout,
    camera: CameraConfig,
    geometry: GeometryConfig,
    config: FeatureConfig,
) -> Refined:
    """Calibrate and track ``head`` again on the measured features ``feats`` (as
    :func:`measure_clip` returns them); ``lsp3d`` (N, 73, 3) the landmarks in original
    pixels. Keeps the landmark track, with a warning, when there are no features."""
    n = len(valid)
    if not feats["points3d"].size:
        warning = str(feats["warning"]) or (
            f"no texture features found on the upper face of reference frame "
            f"{int(feats['reference'])}; head poses come from the landmarks alone (a face "
            "with little texture, or a blurred or dark clip: better light helps)"
        )
        return Refined(head, np.zeros(n, np.int64), np.zeros(n, np.int8), [warning])
    with threadpool_limits(1):
        refined, refinement = refine_head(
            head,
            feats["points2d"],
            feats["points3d"],
            lsp3d,
            valid,
            image_size=frame_size,
            layout=layout,
            camera=camera,
            geometry=geometry,
            min_features=config.min_features,
            calib_frames=config.calib_frames,
            calib_features=config.calib_features,
            gate=GateConfig(
                margin=config.gate_margin,
                margin_px=config.gate_margin_px,
                max_turn_deg=config.gate_turn_deg,
                min_accepted=config.gate_min_accepted,
                require_focal=config.gate_require_focal,
                trust_features=config.gate_trust_features,
                trust_rms=config.gate_trust_rms,
                max_spread=config.gate_max_spread,
                max_gap=2 * config.every,
                ramp=config.blend_frames,
            ),
            rigidity=RigidityConfig(
                rounds=config.rigidity_rounds,
                scale=config.rigidity_scale,
                huber_px=config.huber_px,
            ),
        )
    warnings = [refinement.warning] if refinement.warning else []
    return Refined(refined, refinement.n_features, refinement.source, warnings)
