"""The shoulders stage of prep: points chosen on the first stored crop, tracked through
the crops, lifted to the billboard (cached)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import cv2
import h5py
import numpy as np

from lsp_prep.camera import rescale_points
from lsp_prep.progress import ProgressFn, no_progress
from lsp_prep.stages.frames import GREY_AT_SCALE, decode_rgb
from lsp_prep.stages.geometry.head import HeadTrack
from lsp_prep.stages.shoulders.billboard import billboard
from lsp_prep.stages.shoulders.choose import choose_points
from lsp_prep.stages.shoulders.config import ShoulderConfig, scaled_config
from lsp_prep.stages.shoulders.lk import track_points


def shoulder_stage(
    partial: Path,
    lsp73: np.ndarray,
    valid: np.ndarray,
    k_crop: np.ndarray,
    head: HeadTrack,
    n: int,
    *,
    config: ShoulderConfig,
    progress: ProgressFn = no_progress,
) -> dict[str, np.ndarray]:
    """Choose upper-body points on frame 0 of the crops, track them, lift the billboard."""
    with h5py.File(partial, "r") as f:
        frames = f["frames"]
        first = decode_rgb(frames[0])
        face = lsp73[0] if valid[0] else None
        chosen = choose_points(first, config=config, face_points2d=face)

        scale = config.track_scale
        flag = GREY_AT_SCALE[scale]
        full = (first.shape[1], first.shape[0])
        small = (round(full[0] * scale), round(full[1] * scale))

        def stream() -> Iterator[np.ndarray]:
            for i in range(n):
                yield cv2.imdecode(frames[i], flag)

        tracks = track_points(
            stream(),
            rescale_points(chosen.points, full, small),
            config=scaled_config(config, scale),
            total=n,
            progress=progress,
        )
    predicted = rescale_points(tracks.predicted, small, full)
    depth = float(np.mean(head.translation[valid, 2]))
    board = billboard(
        np.where(tracks.valid[..., None], predicted, np.nan),
        tracks.valid,
        intrinsics=k_crop,
        depth=depth,
    )
    return {
        "points2d": tracks.points2d,
        "valid": tracks.valid,
        "billboard3d": board,
        "source": np.array(chosen.source),
        "warnings": np.array(chosen.warnings, dtype=str),
    }
