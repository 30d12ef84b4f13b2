"""The focal length's interval (a two-way bootstrap of the error curve's minimum) on
synthetic curves with a known spread, and the rule that picks the focal length the track
uses (renders: tests/test_track3d.py)."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.spatial.transform import Rotation

from lsp_prep import camera
from lsp_prep.stages.geometry.config import CameraConfig
from lsp_prep.stages.geometry.focal import (
    Calibration,
    describe,
    minimum_interval,
    search_focal,
)

GRID = np.linspace(5.5, 7.5, 41)  # log f: about 245 to 1800 px


def _curve(s_frame: float, s_point: float, *, n_f: int = 100, n_p: int = 80, centre=6.5):
    """(M, F, P) costs: observation (f, p) prefers log f = centre + u_f + v_p (u, v normal
    with sd ``s_frame``, ``s_point``) and costs the squared distance from it, plus noise
    that does not depend on f. The whole curve's minimum is the mean preference, so its
    sampling sd is sqrt(s_frame^2 / F + s_point^2 / P)."""
    rng = np.random.default_rng(7)
    pref = centre + rng.normal(0, s_frame, n_f)[:, None] + rng.normal(0, s_point, n_p)[None]
    base = rng.uniform(0.5, 1.5, (n_f, n_p))
    return (GRID[:, None, None] - pref) ** 2 + base, pref.mean()


def test_the_interval_matches_the_sampling_spread_of_the_minimum():
    cost, centre = _curve(0.1, 0.1)
    lo, hi = minimum_interval(GRID, cost, level=0.95, n_boot=400)
    sd = np.sqrt(0.1**2 / 100 + 0.1**2 / 80)  # 0.0150
    assert lo < centre < hi
    # the bootstrap of both ways counts the frames' and points' spread (and a little more)
    assert (hi - lo) / (2 * 1.96 * sd) == pytest.approx(1.0, abs=0.3)


def test_points_that_disagree_widen_the_interval_though_every_frame_agrees():
    """Non-rigid features: each point pulls f its own way in every frame. Resampling frames
    alone would see no spread at all; the points' resampling does."""
    cost, centre = _curve(0.0, 0.3, n_p=30)
    lo, hi = minimum_interval(GRID, cost, level=0.95, n_boot=400)
    half = 1.96 * 0.3 / np.sqrt(30)  # 0.107
    assert lo < centre < hi and (hi - lo) / 2 == pytest.approx(half, rel=0.3)


def test_a_flat_curve_is_open_and_a_minimum_at_an_end_is_that_end():
    rng = np.random.default_rng(0)
    flat = np.broadcast_to(rng.uniform(0.5, 1.5, (60, 40)), (len(GRID), 60, 40))
    flat = flat + rng.normal(0, 1e-3, (len(GRID), 60, 40))  # f changes nothing but noise
    lo, hi = minimum_interval(GRID, flat, level=0.95, n_boot=400)
    assert hi - lo > 1.5  # a factor of 4.5 in f: the minimum is anywhere
    cost, _ = _curve(0.05, 0.05, centre=4.0)  # preferred f below the grid
    lo, hi = minimum_interval(GRID, cost, level=0.95, n_boot=400)
    assert lo == hi == GRID[0]


def test_the_interval_is_the_same_every_run():
    cost, _ = _curve(0.1, 0.1)
    assert minimum_interval(GRID, cost, level=0.95, n_boot=400) == minimum_interval(
        GRID, cost, level=0.95, n_boot=400
    )


def _scene(*, yaw: float, n: int = 40, focal: float = 900.0, size=(960, 540)):
    """Exact projections of a dome of 15 points turning by ``yaw`` degrees."""
    rng = np.random.default_rng(3)
    az, el = rng.uniform(-1.2, 1.2, 15), rng.uniform(-0.8, 0.8, 15)
    shape = 7.0 * np.stack([np.sin(az) * np.cos(el), np.sin(el), -np.cos(az) * np.cos(el)], 1)
    t = np.linspace(0, 2 * np.pi, n)
    rot = Rotation.from_euler("xyz", np.stack([0.3 * np.sin(t), np.sin(t), 0 * t], 1) * yaw, True)
    trans = np.tile([0.0, 0.0, 60.0], (n, 1))
    cam = np.einsum("nij,pj->npi", rot.as_matrix(), shape) + trans[:, None]
    return camera.project(cam, camera.intrinsics(focal, size)), shape, rot.as_rotvec(), trans


def _search(p2, shape, rv, t, **kw):
    a, b = 0, int(np.argmax(np.linalg.norm(shape - shape[0], axis=1)))
    return search_focal(
        p2,
        shape,
        rv,
        t,
        900.0,
        image_size=(960, 540),
        gauge=(a, b, float(np.linalg.norm(shape[a] - shape[b]))),
        frames=np.arange(len(p2)),
        **kw,
    )


def test_a_turning_head_identifies_f_with_a_narrow_interval_around_it():
    p2, shape, rv, t = _scene(yaw=30.0)
    p2 = p2 + np.random.default_rng(1).normal(0, 0.5, p2.shape)
    cal = _search(p2, shape, rv, t, name="features")
    lo, hi = cal.interval
    assert cal.identified and cal.source == "features" and not cal.reason and cal.bounded
    assert lo < cal.focal < hi and (hi - lo) / cal.focal < CameraConfig().max_interval
    assert cal.focal == pytest.approx(900.0, rel=0.05)
    level = CameraConfig().interval_level
    assert describe(cal, level=level) == (
        f"focal length {cal.focal:.0f} px from the features (95% interval {lo:.0f}-{hi:.0f} px)"
    )


def test_a_curve_that_does_not_fix_f_takes_the_landmarks_f_or_the_default():
    p2, shape, rv, t = _scene(yaw=3.0)  # turns 6 degrees peak to peak: too little
    cal = _search(p2, shape, rv, t, name="features")
    default = camera.focal_from_fov(CameraConfig().default_fov_deg, 960)
    assert not cal.identified and cal.source == "default" and not cal.bounded
    assert cal.focal == pytest.approx(default) and "turns only" in cal.reason
    assert describe(cal, level=0.95).startswith("focal length not identified: the head turns")
    landmarks = Calibration(
        850.0, camera.intrinsics(850.0, (960, 540)), np.zeros((0, 2)), True, "", shape, rv
    )
    cal = _search(p2, shape, rv, t, name="features", fallback=landmarks)
    assert cal.identified and cal.source == "landmarks" and cal.focal == 850.0
    assert cal.K[0, 0] == 850.0 and cal.shape.shape == shape.shape
    assert describe(cal, level=0.95) == (
        f"focal length 850 px from the landmarks; the texture features do not fix it ({cal.reason})"
    )
