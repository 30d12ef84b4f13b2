"""Texture features: measurement against a reference on exact perspective warps, and the
fallbacks when the texture cannot be used. The whole chain on a 3D render with known
motion is in tests/test_track3d.py."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
from scipy.spatial.transform import Rotation

from lsp_prep.camera import intrinsics
from lsp_prep.errors import InputError
from lsp_prep.layout import load_layout
from lsp_prep.stages.features import measure as ft
from lsp_prep.stages.geometry.focal import Calibration
from lsp_prep.stages.geometry.head import HeadTrack, refine_head

K = np.array([[800.0, 0.0, 255.5], [0.0, 800.0, 255.5], [0.0, 0.0, 1.0]])
REF_T = np.array([0.0, 0.0, 60.0])


def _texture(size: int = 512, seed: int = 0) -> np.ndarray:
    """Smooth random texture: rich in corners, and linear interpolation is nearly exact."""
    noise = np.random.default_rng(seed).uniform(0, 255, (size, size)).astype(np.float32)
    return cv2.normalize(
        cv2.GaussianBlur(noise, (0, 0), 2.5), None, 0, 255, cv2.NORM_MINMAX
    ).astype(np.uint8)


def _plane_reference(image: np.ndarray) -> ft.Reference:
    """Features of ``image`` seen frontally at 60 cm: object plane z = 0 under pose (0, REF_T)."""
    pts = cv2.goodFeaturesToTrack(image, 120, 0.01, 12, mask=None)[:, 0].astype(np.float64)
    pts = pts[(pts > 60).all(1) & (pts < 452).all(1)]
    xy = (pts - K[:2, 2]) * REF_T[2] / K[0, 0]  # plane points under the features
    plane = np.c_[xy, np.zeros(len(xy))]
    tri = plane[:, None] + np.array([[-0.4, -0.3, 0], [0.4, -0.3, 0], [0.0, 0.45, 0]])
    return ft.Reference(index=0, image=image, points2d=pts, points3d=plane, triangles=tri)


def _homography(rotvec: np.ndarray, trans: np.ndarray) -> np.ndarray:
    """Reference image -> image of the plane under pose (rotvec, trans)."""
    r = Rotation.from_rotvec(rotvec).as_matrix()
    to_frame = K @ np.c_[r[:, :2], trans]
    to_ref = K @ np.c_[np.eye(3)[:, :2], REF_T]
    return to_frame @ np.linalg.inv(to_ref)


@pytest.mark.parametrize("error_deg", [0.0, 2.5])
def test_features_are_found_where_the_true_warp_puts_them(error_deg):
    image = _texture()
    ref = _plane_reference(image)
    rv = Rotation.from_euler("yxz", [18, -10, 4], degrees=True).as_rotvec()
    t = np.array([1.0, -0.5, 63.0])
    h = _homography(rv, t)
    frame = cv2.warpPerspective(image, h, (512, 512), flags=cv2.INTER_CUBIC)
    truth = cv2.perspectiveTransform(ref.points2d[None], h)[0]
    # the pose estimate the prediction starts from may be off by a few degrees
    guess = (
        Rotation.from_euler("y", error_deg, degrees=True) * Rotation.from_rotvec(rv)
    ).as_rotvec()
    found = ft.measure_frame(frame, ref, (np.zeros(3), REF_T, K), (guess, t, K))
    ok = np.isfinite(found[:, 0])
    assert ok.mean() > 0.8
    err = np.linalg.norm(found[ok] - truth[ok], axis=1)
    assert np.median(err) < 0.05 and np.percentile(err, 95) < 0.2, np.percentile(err, [50, 95])


def test_features_on_a_surface_turned_away_are_not_measured():
    image = _texture()
    ref = _plane_reference(image)
    away = Rotation.from_euler("y", 120, degrees=True).as_rotvec()
    found = ft.measure_frame(image, ref, (np.zeros(3), REF_T, K), (away, REF_T, K))
    assert np.isnan(found).all()


def test_a_textureless_face_is_refused_with_a_reason():
    layout = load_layout()
    lsp2d = np.random.default_rng(0).uniform(150, 350, (73, 2))
    flat = np.full((512, 512), 128, np.uint8)
    with pytest.raises(InputError, match="texture features on the upper face of frame 7"):
        ft.build_reference(7, flat, np.zeros((468, 3)), np.zeros(3), REF_T, K, lsp2d, layout=layout)


def test_too_few_measured_frames_keep_the_landmark_track():
    n = 40
    cal = Calibration(
        500.0,
        intrinsics(500.0, (640, 360)),
        np.zeros((0, 2)),
        True,
        "",
        np.zeros((14, 3)),
        np.arange(5),
    )
    head = HeadTrack(
        cal,
        np.zeros((n, 3)),
        np.tile(REF_T, (n, 1)),
        np.zeros((n, 73, 3)),
        np.zeros((73, 3)),
        np.zeros((n, 25, 3)),
        np.zeros(n),
    )
    points = np.full((n, 30, 2), np.nan)
    points[:3] = 100.0  # three frames measured
    out, info = refine_head(
        head,
        points,
        np.zeros((30, 3)),
        np.zeros((n, 73, 3)),
        np.ones(n, bool),
        image_size=(640, 360),
        layout=load_layout(),
    )
    assert out is head and (info.n_features == 0).all()
    assert "measured on 3 frames" in info.warning and "landmarks alone" in info.warning


def test_config_refuses_bad_values():
    with pytest.raises(InputError, match=r"features\.scale"):
        ft.FeatureConfig(scale=0.3)
    with pytest.raises(InputError, match=r"features\.window"):
        ft.FeatureConfig(window=14)
    with pytest.raises(InputError, match=r"features\.every"):
        ft.FeatureConfig(every=0)
