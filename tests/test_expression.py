"""lsp_synth.expression: real face motion for the 3D renders, the skull kept rigid, and the
hand that crosses the face."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.spatial.transform import Rotation

from lsp_prep.constants import EYE_DISTANCE_CM
from lsp_prep.errors import InputError
from lsp_synth.expression import (
    SKULL,
    Expressions,
    Hand,
    denoise,
    hand_mask,
    remove_rigid,
)
from lsp_synth.mesh import EYE_OUTER

BROWS = (105, 66, 334, 296)
LIDS = (159, 145, 386, 374)


def _rest() -> np.ndarray:
    """A face-like point cloud (478, 3): a half ellipsoid, eye corners 1 unit apart."""
    rng = np.random.default_rng(0)
    xy = rng.uniform(-1, 1, (478, 2)) * [0.9, 1.2]
    z = -0.5 * np.sqrt(np.clip(1 - (xy[:, 0] / 1.2) ** 2 - (xy[:, 1] / 1.5) ** 2, 0, 1))
    pts = np.c_[xy, z]
    pts[EYE_OUTER[0]] = [-0.5, -0.2, -0.3]
    pts[EYE_OUTER[1]] = [0.5, -0.2, -0.3]
    return pts


def test_remove_rigid_recovers_the_motion_of_the_face_off_the_skull():
    rest, n = _rest(), 40
    t = np.arange(n)
    motion = np.zeros((n, 478, 3))
    motion[:, list(BROWS), 1] = -0.05 * np.sin(t / 3)[:, None]  # brows rise and fall
    motion[:, list(LIDS), 1] = 0.03 * (t % 10 == 0)[:, None]  # blinks
    rot = Rotation.from_euler(
        "yxz", np.c_[20 * np.sin(t / 7), 8 * np.cos(t / 5), 3 + 0 * t], degrees=True
    )
    scale = 100 + 10 * np.sin(t / 9)
    frames = scale[:, None, None] * np.einsum("nij,npj->npi", rot.as_matrix(), rest + motion)
    frames += np.c_[300 + t, 200 - t, 0 * t][:, None]
    frames[5] = np.nan  # a frame without a face
    aligned = remove_rigid(frames)
    assert np.isnan(aligned[5]).all()
    ok = np.isfinite(aligned).all(axis=(1, 2))
    got = aligned[ok] - np.median(aligned[ok], axis=0)
    want = motion[ok] - np.median(motion[ok], axis=0)
    # in the median face's orientation, and in its eye distance (1 here)
    np.testing.assert_allclose(
        np.linalg.norm(got, axis=-1), np.linalg.norm(want, axis=-1), atol=1e-9
    )
    assert np.abs(got[:, list(SKULL)]).max() < 1e-9


def test_remove_rigid_needs_two_faces():
    frames = np.full((3, 478, 3), np.nan)
    frames[0] = _rest()
    with pytest.raises(InputError, match="fewer than two frames"):
        remove_rigid(frames)


def test_denoise_keeps_low_rank_motion_and_drops_jitter():
    rng = np.random.default_rng(1)
    t = np.arange(300)
    basis = rng.normal(0, 1, (2, 478 * 3))
    signal = (np.c_[np.sin(t / 10), np.cos(t / 17)] @ basis).reshape(300, 478, 3) * 0.01
    noisy = signal + rng.normal(0, 0.01, signal.shape)
    clean = denoise(noisy, components=2, smooth_frames=1.5)
    assert np.sqrt(((clean - signal) ** 2).mean()) < 0.2 * np.sqrt(((noisy - signal) ** 2).mean())
    np.testing.assert_array_equal(denoise(noisy, 0, 0), noisy)


def test_offsets_keep_the_skull_rigid_loop_and_scale_depth():
    rest = _rest() * EYE_DISTANCE_CM
    offs = np.zeros((24, 478, 3))
    offs[:, :, 2] = 0.1
    offs[:, :, 0] = np.arange(24)[:, None] / 100
    e = Expressions(offs, fps=24.0)
    assert e.duration_s == pytest.approx(1.0)
    out = e.offsets_cm(np.array([0.0, 0.5, 1.5]), rest=rest, depth_scale=0.6)
    assert np.abs(out[:, list(SKULL)]).max() == 0.0
    d = np.linalg.norm(rest[:, None] - rest[list(SKULL)][None], axis=-1).min(1)
    far = d > 2.5
    assert out[0, far, 2] == pytest.approx(
        0.1 * EYE_DISTANCE_CM * 0.6
    )  # eye distances -> cm, depth scaled
    assert out[1, far, 0] == pytest.approx(0.12 * EYE_DISTANCE_CM)
    np.testing.assert_allclose(out[2], out[1])  # past the end it loops
    free = e.offsets_cm(np.array([0.0]), rest=rest, rigid_radius_cm=0.0)
    assert free[0, SKULL[0], 2] == pytest.approx(0.1 * EYE_DISTANCE_CM)


def test_hand_sweeps_across_the_lower_face_only_while_it_is_there():
    hand = Hand(start_s=1.0, duration_s=2.0, size=0.5)
    u = hand.progress(np.array([0.5, 1.0, 2.0, 3.0, 3.5]))
    assert np.isnan(u[[0, 4]]).all() and u[1:4] == pytest.approx([0.0, 0.5, 1.0])
    face = np.stack(np.meshgrid(np.linspace(200, 300, 22), np.linspace(100, 240, 22)), -1)
    face2d = face.reshape(-1, 2)[:478]
    face2d = np.concatenate([face2d, np.repeat(face2d[-1:], 478 - len(face2d), 0)])
    face2d[152] = (250, 240)  # the chin
    alpha = hand_mask((480, 360), face2d, 0.5, size=0.5)
    ys, xs = np.nonzero(alpha > 0.5)
    assert xs.mean() == pytest.approx(250, abs=8)  # half way: over the middle of the face
    assert ys.min() > 150  # fingertips about at the nose, not over the eyes
    left = hand_mask((480, 360), face2d, 0.0, size=0.5)
    assert np.nonzero(left > 0.5)[1].mean() < 200  # it enters beside the face
    with pytest.raises(InputError, match="Hand needs"):
        Hand(duration_s=0.0)
