"""Stage ``shoulders``: its config section, ``shoulders``."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import cv2
import numpy as np

from lsp_prep.errors import InputError


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
