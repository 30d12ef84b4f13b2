"""The shoulders stage of prep: points chosen on the first stored crop, tracked through
the crops (:func:`track_shoulders`), lifted to the billboard (:func:`lift_shoulders`;
cached). The tracking reads only the stored crops and the landmarks, so prep runs it beside
the features stage; the lift needs the head the features stage refines."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from concurrent.futures import CancelledError
from dataclasses import dataclass
from pathlib import Path

import cv2
import h5py
import numpy as np

from lsp_prep.camera import rescale_points
from lsp_prep.progress import ProgressFn, no_progress
from lsp_prep.stages.frames import GREY_AT_SCALE, decode_rgb
from lsp_prep.stages.geometry.head import HeadTrack
from lsp_prep.stages.shoulders.billboard import billboard
from lsp_prep.stages.shoulders.choose import ShoulderPoints, choose_points
from lsp_prep.stages.shoulders.config import ShoulderConfig, scaled_config
from lsp_prep.stages.shoulders.lk import ShoulderTracks, track_points


@dataclass(frozen=True, eq=False)
class TrackedShoulders:
    """What :func:`track_shoulders` found: the points chosen on frame 0 and their tracks."""

    chosen: ShoulderPoints
    tracks: ShoulderTracks
    """Tracked at ``small`` (the config's ``track_scale``)."""
    full: tuple[int, int]
    """(width, height) of the stored crops."""
    small: tuple[int, int]
    """(width, height) the crops were tracked at."""


def track_shoulders(
    partial: Path,
    lsp73: np.ndarray,
    valid: np.ndarray,
    n: int,
    *,
    config: ShoulderConfig,
    progress: ProgressFn = no_progress,
    stop: threading.Event | None = None,
) -> TrackedShoulders:
    """Choose upper-body points on frame 0 of the ``n`` crops stored in ``partial`` and
    track them through the crops; ``lsp73`` (N, 73, 2) the landmarks in crop pixels.
    Raises CancelledError at the next frame once ``stop`` is set."""
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
                if stop is not None and stop.is_set():
                    raise CancelledError("shoulder tracking stopped")
                yield cv2.imdecode(frames[i], flag)

        tracks = track_points(
            stream(),
            rescale_points(chosen.points, full, small),
            config=scaled_config(config, scale),
            total=n,
            progress=progress,
        )
    return TrackedShoulders(chosen, tracks, full, small)


def lift_shoulders(
    tracked: TrackedShoulders, *, head: HeadTrack, valid: np.ndarray, k_crop: np.ndarray
) -> dict[str, np.ndarray]:
    """The stage's arrays: the tracked points in crop pixels and their billboard at the
    head's mean depth (``k_crop`` (N, 3, 3) the crops' intrinsics)."""
    tracks = tracked.tracks
    predicted = rescale_points(tracks.predicted, tracked.small, tracked.full)
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
        "source": np.array(tracked.chosen.source),
        "warnings": np.array(tracked.chosen.warnings, dtype=str),
    }
