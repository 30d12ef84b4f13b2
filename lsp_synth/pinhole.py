"""The pinhole camera of the 3D renders and rotation vectors as matrices.

Camera coordinates are OpenCV's (x right, y down, z forward); pixel centres lie at integers
and the principal point is the image centre (see :mod:`lsp_synth.render3d` for every
convention the renders follow).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from lsp_prep.errors import InputError


@dataclass(frozen=True)
class Camera:
    """A pinhole camera with square pixels and its principal point at the image centre."""

    focal: float
    """Focal length in pixels."""
    size: tuple[int, int]
    """Image (width, height) in pixels."""

    def __post_init__(self) -> None:
        if not (np.isfinite(self.focal) and self.focal > 0):
            raise InputError(f"Camera.focal must be positive, got {self.focal}")
        if len(self.size) != 2 or min(self.size) < 2:
            raise InputError(f"Camera.size must be (width, height) >= 2, got {self.size}")

    @property
    def principal_point(self) -> np.ndarray:
        """(2,) ``((w - 1) / 2, (h - 1) / 2)``: the image centre in pixel-centre coordinates."""
        w, h = self.size
        return np.array([(w - 1) / 2.0, (h - 1) / 2.0])

    @property
    def K(self) -> np.ndarray:
        """Intrinsic matrix (3, 3)."""
        cx, cy = self.principal_point
        return np.array([[self.focal, 0.0, cx], [0.0, self.focal, cy], [0.0, 0.0, 1.0]])

    def project(self, points: np.ndarray) -> np.ndarray:
        """Camera points (..., 3) (any length unit, z > 0 in front) -> pixels (..., 2)."""
        x = np.asarray(points, dtype=np.float64)
        return self.focal * x[..., :2] / x[..., 2:3] + self.principal_point


def rotation_matrices(rotvec: np.ndarray) -> np.ndarray:
    """Rotation vectors (N, 3) radians -> rotation matrices (N, 3, 3)."""
    from scipy.spatial.transform import Rotation

    return Rotation.from_rotvec(np.asarray(rotvec, dtype=np.float64).reshape(-1, 3)).as_matrix()
