"""The geometry stage's config sections: ``camera`` (focal-length calibration, also used
by the features stage's second calibration) and ``geometry`` (per-frame head pose fitting)."""

from __future__ import annotations

from dataclasses import dataclass

from lsp_prep.errors import InputError
from lsp_prep.stages.geometry.mouth import PoseTerms


@dataclass(frozen=True)
class CameraConfig:
    """Focal-length calibration."""

    default_fov_deg: float = 55.0
    """Horizontal field of view used when the clip cannot identify f (a phone or webcam's
    main camera is 50-65 degrees)."""
    min_fov_deg: float = 8.0
    """Narrowest horizontal field of view searched (longest focal length)."""
    max_fov_deg: float = 120.0
    """Widest horizontal field of view searched (shortest focal length)."""
    n_frames: int = 60
    """Frames used for calibration, chosen for pose variety."""
    rel_tolerance: float = 0.005
    """The search stops when the bracket is narrower than this fraction of f."""
    min_rotation_deg: float = 6.0
    """Below this spread of head rotation the focal length is not identifiable."""
    min_contrast: float = 0.03
    """Focal lengths whose error is within this fraction of the curve's minimum are what
    the data allow: a focal length they do not identify (the default field of view) is kept
    among them. Whether the data bound f at all is their interval's business
    (``Calibration.bounded``: it must lie inside the searched range)."""
    interval_level: float = 0.95
    """Confidence level of the focal length's interval (a bootstrap over frames and
    points of the error curve's minimum)."""
    max_interval: float = 0.45
    """The data's focal length is used when its interval is narrower than this fraction
    of f (and inside the searched range); otherwise the default field of view. Set between
    what the renders of benchmarks/accuracy_track3d.py measure: features that move with
    the skull give 11 % (5 s, f = 500) and 35-37 % (8 s turning +-20 degrees, f = 1100,
    whose minimum is 2.3 % off), features on an expressive face 56-62 % (its minimum 23 %
    off: expressions pull it, the interval widens). The narrow render's margin is thin:
    grouping the features in 8 or 10 instead of 12 gives it 36-38 %."""
    n_boot: int = 2000
    """Bootstrap resamples of the interval (its ends move by up to 4 % between seeds)."""
    feature_groups: int = 12
    """The texture features are resampled in this many groups of neighbours (their 3D
    points, each with the nearest of this many seeds spread over them): features on one
    brow or cheek move together."""

    def __post_init__(self) -> None:
        if not 0 < self.min_fov_deg < self.default_fov_deg < self.max_fov_deg < 179:
            raise InputError("camera needs 0 < min_fov_deg < default_fov_deg < max_fov_deg < 179")
        if self.n_frames < 8:
            raise InputError(f"camera.n_frames must be >= 8, got {self.n_frames}")
        if not 0 < self.interval_level < 1 or self.max_interval <= 0:
            raise InputError("camera needs 0 < interval_level < 1 and max_interval > 0")
        if self.n_boot < 100 or self.feature_groups < 4:
            raise InputError("camera needs n_boot >= 100 and feature_groups >= 4")


@dataclass(frozen=True)
class GeometryConfig:
    """Per-frame head pose fitting."""

    huber_px: float = 2.0
    """Residuals beyond this many pixels get Huber (linear) weight."""
    iterations: int = 12
    """Gauss-Newton iterations over all frames."""
    smooth_frames: float = 1.5
    """Gaussian sigma (frames) of the temporal prior the poses are pulled towards."""
    prior_weight: float = 1.0
    """Weight of that prior: a deviation of 1 degree (or 1 cm) costs this many squared
    pixels per visible landmark."""
    mouth_pose_terms: PoseTerms = "quadratic"
    """What of head pose is taken out of ``track/mouth_displacement`` (the mouth model's
    targets): ``"off"`` keeps the plain displacements; ``"linear"`` removes their
    least-squares fit on the centred Euler angles and translation; ``"quadratic"`` adds the
    angles' products and squares (see :mod:`lsp_prep.stages.geometry.mouth`)."""

    def __post_init__(self) -> None:
        if self.huber_px <= 0 or self.iterations < 1:
            raise InputError("geometry.huber_px must be > 0 and geometry.iterations >= 1")
        if self.smooth_frames < 0 or self.prior_weight < 0:
            raise InputError("geometry.smooth_frames and geometry.prior_weight must be >= 0")
