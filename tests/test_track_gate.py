"""The rigid misfit and the gate that keeps a refined head pose only where it explains the
landmarks (lsp_prep.stages.geometry.quality), on arrays."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.spatial.transform import Rotation

from lsp_prep.camera import euler_yxz_to_rotvec, project, rotvec_to_euler_yxz
from lsp_prep.stages.geometry.quality import (
    accepted_weight,
    apply_lean_map,
    blend_poses,
    corrected_poses,
    gate_poses,
    lean_map,
    rigid_misfit,
    spread_ratio,
    well_fitted,
)

K = np.array([[800.0, 0, 320], [0, 800, 240], [0, 0, 1]])


def _scene(n: int = 120, seed: int = 0):
    rng = np.random.default_rng(seed)
    shape = rng.normal(0, 3.0, (14, 3))
    t = np.arange(n)
    rot = np.stack([0.2 * np.sin(t / 15), 0.3 * np.sin(t / 23), 0.05 * np.cos(t / 31)], 1)
    trans = np.stack([np.zeros(n), np.zeros(n), 60 + np.sin(t / 40)], 1)
    cam = np.einsum("nij,pj->npi", Rotation.from_rotvec(rot).as_matrix(), shape)
    points = project(cam + trans[:, None], K)
    return shape, rot, trans, points


def test_misfit_is_zero_on_exact_projections_and_the_rms_offset_otherwise():
    shape, rot, trans, points = _scene()
    assert np.abs(rigid_misfit(rot, trans, shape, K, points)).max() < 1e-9
    moved = points + np.array([3.0, 4.0])
    assert rigid_misfit(rot, trans, shape, K, moved) == pytest.approx(np.full(len(rot), 5.0))
    # per-frame intrinsics give the same; NaN points are left out, a frame with none is NaN
    per_frame = np.repeat(K[None], len(rot), axis=0)
    moved[3, :5] = np.nan
    moved[7] = np.nan
    m = rigid_misfit(rot, trans, shape, per_frame, moved)
    assert m[3] == pytest.approx(5.0) and np.isnan(m[7])


def test_accepted_spans_ramp_inside_and_stop_at_the_last_accepted_frame():
    accepted = np.zeros(100, bool)
    accepted[[20, 24, 28, 32, 36, 40, 60]] = True  # one span 20-40, then a lone frame
    w = accepted_weight(accepted, max_gap=8, ramp=3)
    assert (w[:20] == 0).all() and (w[41:60] == 0).all() and (w[61:] == 0).all()
    assert (w[24:37] == 1).all()
    assert np.all(np.diff(w[19:25]) >= 0) and np.all(np.diff(w[36:42]) <= 0)
    assert 0 < w[20] < 1 and 0 < w[40] < 1 and 0 < w[60] < 1
    assert accepted_weight(accepted, max_gap=3, ramp=0).sum() == 7  # no spans: frames only


def test_blend_goes_from_one_pose_to_the_other():
    a = np.array([[0.0, 0.1, 0.0]] * 3)
    b = np.array([[0.0, 0.5, 0.0]] * 3)
    ta, tb = np.zeros((3, 3)), np.ones((3, 3))
    rot, tr = blend_poses(a, ta, b, tb, np.array([0.0, 0.5, 1.0]))
    assert rot[:, 1] == pytest.approx([0.1, 0.3, 0.5]) and tr[:, 0] == pytest.approx([0, 0.5, 1])


def test_corrected_poses_interpolate_between_frames_and_hold_beyond():
    base, tb = np.zeros((10, 3)), np.zeros((10, 3))
    idx = np.array([2, 6])
    rv = np.array([[0.0, 0.2, 0.0], [0.0, 0.4, 0.0]])
    rot, tr = corrected_poses(base, tb, idx, rv, np.ones((2, 3)))
    assert rot[4, 1] == pytest.approx(0.3) and rot[0, 1] == pytest.approx(0.2)
    assert rot[9, 1] == pytest.approx(0.4) and tr[5] == pytest.approx(np.ones(3))
    one, _ = corrected_poses(base, tb, idx[:1], rv[:1], np.ones((1, 3)))
    assert one[:, 1] == pytest.approx(np.full(10, 0.2))


def test_gate_keeps_good_refined_poses_and_refuses_bad_ones_without_a_jump():
    shape, rot, trans, points = _scene()
    rng = np.random.default_rng(1)
    landmarks = points + rng.normal(0, 0.5, points.shape)
    idx = np.arange(0, 120, 4)
    good = idx < 60
    # the refined poses: the truth where the features held, 8 degrees off after frame 60
    off = Rotation.from_euler("y", 8, degrees=True)
    rv = np.where(good[:, None], rot[idx], (off * Rotation.from_rotvec(rot[idx])).as_rotvec())
    fallback = (rot + 0.01, trans.copy())  # a landmark pose a little off everywhere
    g = gate_poses(
        landmarks,
        shape,
        K,
        fallback,
        (idx, rv, trans[idx]),
        margin=0.1,
        margin_px=0.0,
        max_gap=8,
        ramp=4,
    )
    assert g.accepted[idx[good]].all() and not g.accepted[idx[~good]].any()
    assert (g.weight[60:] == 0).all()
    # nothing of the bad refined poses leaks past frame 60: the landmark poses there, with
    # the lean the accepted frames show taken out (here a constant offset), are the truth
    late = Rotation.from_rotvec(g.rotation[60:]) * Rotation.from_rotvec(rot[60:]).inv()
    assert np.degrees(late.magnitude()).max() < 0.3
    np.testing.assert_allclose(g.rotation[10:50], rot[10:50], atol=1e-4)
    step = np.degrees(
        (
            Rotation.from_rotvec(g.rotation[1:]) * Rotation.from_rotvec(g.rotation[:-1]).inv()
        ).magnitude()
    )
    assert step.max() < 2.0  # the blend leaves no jump at the ends of the span
    # every refined pose refused: the landmark poses, unchanged
    none = gate_poses(
        landmarks,
        shape,
        K,
        fallback,
        (idx[~good], rv[~good], trans[idx[~good]]),
        margin=0.1,
        margin_px=0.0,
        max_gap=8,
        ramp=4,
    )
    assert not none.accepted.any() and np.array_equal(none.rotation, fallback[0])


def test_gate_refuses_a_refined_pose_that_turns_too_far_from_the_landmarks():
    shape, rot, trans, points = _scene()
    idx = np.arange(0, 120, 4)
    bad = np.arange(len(idx)) % 3 == 1  # a third of the refined poses turned 7 degrees
    turn = Rotation.from_euler("x", np.where(bad, 7.0, 0.0)[:, None], degrees=True)
    turned = (turn * Rotation.from_rotvec(rot[idx])).as_rotvec()
    kw = dict(margin=100.0, margin_px=100.0, max_gap=8, ramp=4)
    refined = (idx, turned, trans[idx])
    assert gate_poses(points, shape, K, (rot, trans), refined, **kw).accepted[idx].all()
    g = gate_poses(points, shape, K, (rot, trans), refined, max_turn_deg=6.0, **kw)
    assert g.accepted[idx[~bad]].all() and not g.accepted[idx[bad]].any()
    # a constant turn of every refined pose is a change of object frame, not an error
    const = (Rotation.from_euler("x", 7, degrees=True) * Rotation.from_rotvec(rot[idx])).as_rotvec()
    g = gate_poses(points, shape, K, (rot, trans), (idx, const, trans[idx]), max_turn_deg=6.0, **kw)
    assert g.accepted[idx].all()


def test_trusted_frames_keep_their_refined_pose_where_the_landmarks_are_distorted():
    # a hand over the face for frames 40-70: the landmarks (and their pose) are 6 degrees
    # off there, the refined poses (features on the upper face) are the truth throughout
    shape, rot, trans, _ = _scene()
    hand = (np.arange(120) >= 40) & (np.arange(120) < 70)
    off = Rotation.from_euler("x", np.where(hand, 6.0, 0.0)[:, None], degrees=True)
    rot_hand = (off * Rotation.from_rotvec(rot)).as_rotvec()
    cam = np.einsum("nij,pj->npi", Rotation.from_rotvec(rot_hand).as_matrix(), shape)
    landmarks = project(cam + trans[:, None], K)
    idx = np.arange(0, 120, 4)
    refined = (idx, rot[idx], trans[idx])
    kw = dict(margin=0.1, margin_px=0.0, max_gap=8, ramp=4)
    g = gate_poses(landmarks, shape, K, (rot_hand, trans), refined, **kw)
    assert not g.accepted[idx[hand[idx]]].any()  # the landmark test refuses them
    err = np.degrees(
        (Rotation.from_rotvec(g.rotation) * Rotation.from_rotvec(rot).inv()).magnitude()
    )
    assert np.median(err[hand]) > 4.0
    # features that fit well everywhere but frame 8's: trusted where they fit
    rms = np.full(len(idx), 0.5)
    rms[idx == 8] = 2.0
    trusted = well_fitted(rms, np.full(len(idx), 60), trust_rms=0.5)
    assert trusted.sum() == len(idx) - 1 and not trusted[idx == 8].any()
    g = gate_poses(landmarks, shape, K, (rot_hand, trans), refined, trusted=trusted, **kw)
    assert g.accepted[idx[hand[idx]]].all()
    err = np.degrees(
        (Rotation.from_rotvec(g.rotation) * Rotation.from_rotvec(rot).inv()).magnitude()
    )
    assert err[idx[hand[idx]]].max() < 0.01  # the measured frames: their refined pose
    assert np.median(err[hand]) < 0.1  # between them, the correction interpolated


def test_well_fitted_needs_a_low_residual_on_enough_features():
    rms = np.array([1.0, 1.0, 1.2, 1.6, 1.0, 1.0])
    count = np.array([60, 60, 60, 60, 25, 35])
    np.testing.assert_array_equal(
        well_fitted(rms, count, trust_rms=0.5), [True, True, True, False, False, True]
    )


def test_spread_ratio_compares_each_axis_with_a_one_degree_floor():
    t = np.arange(200) / 30
    yaw, pitch, roll = 10 * np.sin(t), 3 * np.sin(1.3 * t), 0.2 * np.sin(0.7 * t)
    land = euler_yxz_to_rotvec(yaw, pitch, roll).reshape(-1, 3)
    wide = euler_yxz_to_rotvec(1.3 * yaw, 3 * pitch, 4 * roll).reshape(-1, 3)
    ratio = spread_ratio(land, wide)
    std = np.array([yaw.std(), pitch.std(), roll.std()])
    np.testing.assert_allclose(ratio, [1.3, 3.0, 4.0] * std / (std + 1.0), rtol=0.02)
    assert ratio[0] < 1.75 < ratio[1]  # a wider yaw is a lean taken out; pitch is not
    assert ratio[2] < 1.0  # a head that hardly rolls: jitter of a degree is no spread


def test_dataset_stores_the_pose_source_and_the_misfit_it_documents(single_face_dataset):
    import h5py

    from lsp_prep.layout import load_layout

    stable = np.asarray(load_layout().sets["stable"])
    with h5py.File(single_face_dataset) as f:
        v = f["landmarks/valid"][:]
        source, n_feat, misfit = (
            f["track/source"][:],
            f["track/n_features"][:],
            f["track/misfit"][:],
        )
        again = rigid_misfit(
            f["track/rotation"][:].astype(np.float64),
            f["track/translation"][:].astype(np.float64),
            f["track/mean_shape"][:][stable].astype(np.float64),
            f["camera/intrinsics"][:],
            f["landmarks/lsp73"][:][:, stable].astype(np.float64),
        )
    assert source.dtype == np.int8 and set(np.unique(source)) <= {0, 1, 2}
    assert (source[n_feat > 0] > 0).all()  # accepted: refined, or blended at a span end
    assert np.isfinite(misfit[v]).all() and np.isnan(misfit[~v]).all()
    np.testing.assert_allclose(misfit[v], again[v], rtol=1e-4, atol=1e-4)


def test_lean_map_takes_out_a_landmark_track_that_leans_towards_frontal():
    rng = np.random.default_rng(4)
    truth = rng.uniform(-30, 30, (200, 3)) * [1.0, 0.6, 0.3]  # yaw, pitch, roll (degrees)
    lean = truth * [0.85, 0.7, 1.0] + [1.0, -2.0, 0.5]  # Face Mesh's lean and a frame change
    lean[:20] += rng.normal(0, 8, (20, 3))  # frames whose landmark pose is simply wrong
    land = euler_yxz_to_rotvec(*lean.T)
    ref = euler_yxz_to_rotvec(*truth.T)
    coef = lean_map(land, ref)
    fixed = rotvec_to_euler_yxz(apply_lean_map(land, coef))
    assert np.abs(fixed[20:] - truth[20:]).max() < 0.15  # the pull towards no lean costs a little
    assert lean_map(land[:7], ref[:7]) is None  # too few frames: no map
    np.testing.assert_allclose(apply_lean_map(land, None), land)
