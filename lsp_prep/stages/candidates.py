"""Candidate images for the renderer, and the train/val split."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from lsp_prep.errors import InputError
from lsp_prep.layout import load_layout


@dataclass(frozen=True)
class CandidateConfig:
    """How the four candidate images are chosen (the paper's rule)."""

    mouth_rank: int = 100
    """The frames at this rank of smallest and of largest mouth area are candidates 1 and 2
    (clamped to a quarter of the valid frames on short clips)."""

    def __post_init__(self) -> None:
        if self.mouth_rank < 1:
            raise InputError(f"candidates.mouth_rank must be >= 1, got {self.mouth_rank}")


@dataclass(frozen=True)
class SplitConfig:
    """Train/validation split by contiguous time ranges."""

    val_fraction: float = 0.2
    """Share of the clip held out for validation: one contiguous range at its end."""
    gap_s: float = 1.0
    """Frames this close to the boundary belong to neither side, so neighbouring frames
    never leak between train and val (capped at 5 % of the clip on short clips)."""

    def __post_init__(self) -> None:
        if not 0.0 < self.val_fraction < 1.0:
            raise InputError(f"split.val_fraction must be in (0, 1), got {self.val_fraction}")
        if self.gap_s < 0:
            raise InputError("split.gap_s must be >= 0")


def mouth_area(lsp73: np.ndarray) -> np.ndarray:
    """Area (pixels^2) of the mouth opening (the layout's ``inner_mouth`` polygon) per
    frame: (N, 73, 2) -> (N,); NaN stays NaN."""
    poly = lsp73[:, list(load_layout().sets["inner_mouth"])]
    x, y = poly[..., 0], poly[..., 1]
    return 0.5 * np.abs((x * np.roll(y, -1, axis=1) - np.roll(x, -1, axis=1) * y).sum(axis=1))


def choose_candidates(
    area: np.ndarray,
    euler: np.ndarray,
    valid: np.ndarray,
    *,
    config: CandidateConfig = CandidateConfig(),
) -> np.ndarray:
    """Frame indices (4,) of the candidate images, as the paper chooses them.

    1 and 2: the frames at the ``mouth_rank``-th smallest and largest mouth ``area``
    (N,). 3 and 4: head rotation about x (pitch) and y (yaw) from ``euler`` (N, 3) is
    sampled at regular intervals, at 1/3 and 2/3 of its range on both axes, and the
    nearest not-yet-chosen frame is taken. Only ``valid`` frames qualify.
    """
    idx = np.flatnonzero(valid & np.isfinite(area))
    if len(idx) < 4:
        raise InputError(f"need at least 4 valid frames to choose candidate images, got {len(idx)}")
    rank = min(config.mouth_rank, max(len(idx) // 4, 1)) - 1
    order = idx[np.argsort(area[idx], kind="stable")]
    chosen = [int(order[rank]), int(order[-1 - rank])]
    ang = euler[idx][:, :2]
    lo, span = ang.min(0), np.maximum(np.ptp(ang, axis=0), 1e-9)
    for k in (1, 2):
        target = lo + span * k / 3
        dist = np.linalg.norm((ang - target) / span, axis=1)
        dist[np.isin(idx, chosen)] = np.inf
        chosen.append(int(idx[np.argmin(dist)]))
    return np.asarray(chosen, np.int64)


def split_frames(
    n_frames: int, *, fps: float, config: SplitConfig = SplitConfig()
) -> tuple[np.ndarray, np.ndarray]:
    """Train and val frame indices: val is the last ``val_fraction`` of the clip, and a
    gap of ``gap_s`` before it belongs to neither."""
    n_val = max(1, int(round(n_frames * config.val_fraction)))
    gap = min(int(round(config.gap_s * fps)), int(0.05 * n_frames))
    start_val = n_frames - n_val
    if start_val - gap < 1:
        raise InputError(f"clip of {n_frames} frames is too short to split into train and val")
    return np.arange(0, start_val - gap), np.arange(start_val, n_frames)
