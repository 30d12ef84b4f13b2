"""Calibration and 3D tracking on exact synthetic projections (the renders test the rest)."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.spatial.transform import Rotation

from lsp_prep import camera
from lsp_prep.errors import InputError
from lsp_prep.layout import load_layout
from lsp_prep.stages.candidates import choose_candidates, mouth_area, split_frames
from lsp_prep.stages.geometry.config import CameraConfig
from lsp_prep.stages.geometry.focal import calibrate_focal
from lsp_prep.stages.geometry.poses import track_poses
from lsp_prep.stages.geometry.shape import initial_poses, mean_shape

LAYOUT = load_layout()
STABLE = np.asarray(LAYOUT.sets["stable"])


def _face_shape(single_face_dataset) -> np.ndarray:
    import h5py

    with h5py.File(single_face_dataset) as f:
        mesh = f["landmarks/mesh"][:][f["landmarks/valid"][:]]
    return mean_shape(LAYOUT.from_mesh(mesh))


def _scene(shape, *, n=480, focal=1100.0, size=(1280, 720), yaw=30, pitch=15, noise=0.7):
    rng = np.random.default_rng(0)
    t = np.arange(n) / 60
    ang = np.radians(
        np.stack(
            [
                pitch * np.sin(2 * np.pi * 0.21 * t + 1),
                yaw * np.sin(2 * np.pi * 0.3 * t),
                5 * np.sin(2 * np.pi * 0.13 * t),
            ],
            1,
        )
    )
    rot = Rotation.from_euler("xyz", ang)
    trans = np.stack([3 * np.sin(t), 2 * np.cos(0.7 * t), 55 + 5 * np.sin(0.4 * t)], 1)
    K = camera.intrinsics(focal, size)
    cam = np.einsum("nij,pj->npi", rot.as_matrix(), shape) + trans[:, None]
    p2 = camera.project(cam, K) + rng.normal(0, noise, (n, len(shape), 2))
    # MediaPipe-like 3D: image x, y and depth relative to the head in the same pixel scale
    s = focal / trans[:, 2]
    p3 = np.concatenate([p2, (s[:, None] * (cam[..., 2] - trans[:, None, 2]))[..., None]], -1)
    return p2, p3, rot, trans


def test_focal_rotation_translation_from_noisy_projections(single_face_dataset):
    shape = _face_shape(single_face_dataset)
    p2, p3, rot, trans = _scene(shape)
    cal = calibrate_focal(p2, p3, np.ones(len(p2), bool), image_size=(1280, 720), stable=STABLE)
    assert cal.identified, cal.reason
    assert abs(cal.focal / 1100 - 1) < 0.03
    assert cal.curve.shape[1] == 2 and np.all(np.diff(cal.curve[:, 0]) > 0)
    rv0, t0 = initial_poses(p3[:, STABLE], cal.shape, focal=cal.focal, principal=cal.K[:2, 2])
    rv, t, rms = track_poses(p2[:, STABLE], cal.shape, rv0, t0, cal.K)
    assert np.median(rms) < 1.2  # the noise is 0.7 px per axis
    est = Rotation.from_rotvec(rv)
    gauge = (rot.inv() * est).mean()  # object frames differ by one constant rotation
    err = np.degrees(((rot * gauge).inv() * est).magnitude())
    assert np.median(err) < 1.0 and err.max() < 2.0
    cos = np.sum(t * trans, 1) / np.linalg.norm(t, axis=1) / np.linalg.norm(trans, axis=1)
    assert np.degrees(np.arccos(np.clip(cos, -1, 1))).max() < 2.0


def test_a_head_that_never_turns_falls_back_to_the_default_fov(single_face_dataset):
    shape = _face_shape(single_face_dataset)
    p2, p3, *_ = _scene(shape, n=120, yaw=1, pitch=1)
    cal = calibrate_focal(p2, p3, np.ones(len(p2), bool), image_size=(1280, 720), stable=STABLE)
    assert not cal.identified and "turns only" in cal.reason
    assert cal.focal == pytest.approx(camera.focal_from_fov(CameraConfig().default_fov_deg, 1280))


def test_crop_intrinsics_project_like_the_crop_map():
    K = camera.intrinsics(900.0, (1920, 1080))
    boxes = np.array([[400.0, 100.0, 1300.0, 1000.0], [420.5, 90.25, 1320.5, 990.25]])
    X = np.array([[3.0, -2.0, 50.0], [-4.0, 1.0, 60.0]])
    orig = camera.project(X, K)
    for i in range(2):
        crop = camera.project(X, camera.crop_intrinsics(K, boxes, 512)[i])
        np.testing.assert_allclose(
            crop, camera.to_crop(orig[None], boxes[i : i + 1], 512)[0], atol=1e-9
        )


def test_euler_convention():
    e = camera.rotvec_to_euler_xyz(Rotation.from_euler("xyz", [[0.1, -0.2, 0.3]]).as_rotvec())
    np.testing.assert_allclose(e, [[0.1, -0.2, 0.3]], atol=1e-12)


def test_candidates_follow_the_papers_rule():
    n = 1000
    rng = np.random.default_rng(1)
    area = rng.permutation(n).astype(float)  # area rank == value
    euler = np.stack([np.linspace(-0.2, 0.2, n), np.linspace(-0.5, 0.5, n), np.zeros(n)], 1)
    valid = np.ones(n, bool)
    idx = choose_candidates(area, euler, valid)
    assert area[idx[0]] == 99 and area[idx[1]] == n - 100
    assert abs(idx[2] - n / 3) <= 2 and abs(idx[3] - 2 * n / 3) <= 2
    short = choose_candidates(area[:40], euler[:40], valid[:40])  # rank clamped to n/4
    assert sorted(area[:40]).index(area[short[0]]) == 9
    with pytest.raises(InputError, match="at least 4 valid frames"):
        choose_candidates(area[:3], euler[:3], valid[:3])


def test_mouth_area_of_a_square():
    pts = np.zeros((1, 73, 2))
    square = [(0, 0), (1, 0), (2, 0), (2, 1), (2, 2), (1, 2), (0, 2), (0, 1)]
    for i, xy in zip((46, 58, 59, 60, 52, 61, 62, 63), square, strict=True):
        pts[0, i] = xy
    assert mouth_area(pts)[0] == pytest.approx(4.0)


def test_split_is_contiguous_with_a_gap():
    train, val = split_frames(3600, fps=60)
    assert val[0] == 2880 and val[-1] == 3599 and train[-1] == 2880 - 60 - 1
    assert np.all(np.diff(train) == 1) and np.all(np.diff(val) == 1)
    train, val = split_frames(144, fps=60)  # short clip: gap capped at 5 %
    assert len(val) == 29 and train[-1] < val[0] - 1
