"""Shoulder points: automatic choice, LK tracking against synthetic truth, billboard."""

from __future__ import annotations

import tracemalloc
from pathlib import Path

import cv2
import h5py
import numpy as np
import pytest

from lsp_prep.errors import InputError
from lsp_prep.media import iter_frames
from lsp_prep.stages.shoulders.billboard import billboard
from lsp_prep.stages.shoulders.choose import choose_points
from lsp_prep.stages.shoulders.config import ShoulderConfig
from lsp_prep.stages.shoulders.lk import track_points
from lsp_synth import layers, portraits
from lsp_synth import render2d as synth

SIZE = (640, 360)
FPS = 30
# A few pixels per frame: translation dominates, with some roll and scale.
MOTION = synth.Motion(
    shift_px=(30.0, 15.0),
    shift_hz=(0.5, 0.7),
    roll_deg=3.0,
    roll_hz=0.4,
    scale=0.03,
    scale_hz=0.3,
)


def _photo_points(truth: synth.Truth, points: np.ndarray, frame: int = 0) -> np.ndarray:
    """Clip points (P, 2) on ``frame`` -> photo coordinates (P, 2) (inverse affine)."""
    a = np.vstack([truth.affine[frame], [0.0, 0.0, 1.0]])
    inv = np.linalg.inv(a)
    return np.asarray(points, np.float64) @ inv[:2, :2].T + inv[:2, 2]


def _errors(truth: synth.Truth, tracks) -> np.ndarray:
    """(N, P) distance of every tracked point from where the truth puts it."""
    expected = truth.map_points(_photo_points(truth, tracks.init))
    return np.linalg.norm(tracks.points2d - expected, axis=2)


@pytest.fixture(scope="module")
def talking_clip(tmp_path_factory, portrait) -> tuple[synth.Truth, list[np.ndarray]]:
    """The astronaut moving a few px/frame: 3 s at 30 fps, 640x360; truth and RGB frames."""
    path = tmp_path_factory.mktemp("shoulders") / "clip.mp4"
    truth = synth.render_talking_clip(
        path, image=portrait.image, duration_s=3.0, fps=FPS, size=SIZE, motion=MOTION
    )
    frames = list(iter_frames(path, fps=FPS, size=SIZE))
    assert len(frames) == truth.n_frames == 90
    return truth, frames


@pytest.fixture(scope="module")
def chosen(talking_clip):
    _, frames = talking_clip
    return choose_points(frames[0], config=ShoulderConfig())


# --------------------------------------------------------------------------- choice


def test_automatic_points_lie_on_the_torso_below_the_chin(talking_clip, chosen, portrait) -> None:
    truth, _ = talking_clip
    assert chosen.source == "pose" and chosen.body_found
    assert chosen.points.shape == (8, 2) and chosen.points.dtype == np.float32
    assert chosen.textured.all(), chosen.warnings  # the space suit has plenty of texture
    photo = _photo_points(truth, chosen.points)
    chin = portraits.ASTRONAUT_FACE_BOX[3]
    ph, pw = portrait.image.shape[:2]
    feather = 0.08 * min(ph, pw)  # the photo's border fades into the background there
    assert np.all(photo[:, 1] > chin + 10), photo  # below the chin ...
    assert np.all(photo[:, 1] < ph - feather - 11), photo  # ... inside the photo, windows too
    assert np.all((photo[:, 0] > feather + 10) & (photo[:, 0] < pw - feather - 11)), photo
    # two halves, image-left then image-right of the neck, each ordered by x
    half = len(photo) // 2
    assert chosen.points[:half, 0].max() < chosen.points[half:, 0].min()
    assert np.all(np.diff(chosen.points[:half, 0]) >= 0)
    assert np.all(np.diff(chosen.points[half:, 0]) >= 0)
    # spread out: no two points closer than a window
    d = np.linalg.norm(chosen.points[:, None] - chosen.points[None], axis=2)
    assert d[~np.eye(len(d), dtype=bool)].min() >= ShoulderConfig().window / 2


def test_no_body_falls_back_to_a_guess_below_the_face() -> None:
    background = layers.make_background(size=(320, 320), kind="texture", seed=3)
    # A face outline (LSP-73 layout) drawn nowhere: Pose finds nobody in the texture.
    rng = np.random.default_rng(0)
    face = np.column_stack([rng.uniform(120, 200, 73), rng.uniform(60, 150, 73)])
    face[7] = (160, 160)  # chin
    face[27:35] = (160, 95)  # eyes
    got = choose_points(background, config=ShoulderConfig(n_points=6), face_points2d=face)
    assert got.source == "face_guess" and not got.body_found
    assert any("no shoulders" in w for w in got.warnings)
    assert got.points.shape == (6, 2)
    assert np.all(got.points[:, 1] > 160)  # below the chin
    assert np.all((got.points >= 0) & (got.points <= 319))
    with pytest.raises(InputError, match=r"no body .* no face points"):
        choose_points(background)


def test_close_up_without_shoulders_still_gives_points_and_says_so(portrait) -> None:
    face_only = np.ascontiguousarray(cv2.resize(portrait.image[20:200, 60:240], (360, 360)))
    got = choose_points(face_only)
    assert got.points.shape == (8, 2)
    assert np.all((got.points >= 0) & (got.points <= 359))
    assert np.all(got.points[:, 1] > 0.6 * 360)  # under the face, not on it
    assert set(got.kind) - {"texture"}  # fallbacks were needed ...
    assert any("shoulder" in w for w in got.warnings)  # ... and the user is told
    assert not got.textured.all()


def test_user_points_are_used_as_given(talking_clip) -> None:
    _, frames = talking_clip
    pts = ((10.0, 300.5), (639.0, 359.0), (0.0, 0.0))
    got = choose_points(frames[0], config=ShoulderConfig(points=pts))
    assert got.source == "user" and got.region is None
    np.testing.assert_array_equal(got.points, np.array(pts, np.float32))


@pytest.mark.parametrize(
    ("points", "message"),
    [
        (((10.0, 20.0), (640.0, 100.0)), r"points\[1\] = \(640, 100\) lies outside the 640x360"),
        (((-0.5, 20.0),), r"points\[0\] = \(-0.5, 20\) lies outside the 640x360"),
        (((5.0, 360.0),), r"y in \[0, 359\]"),
    ],
)
def test_user_point_outside_the_image_is_refused(talking_clip, points, message) -> None:
    _, frames = talking_clip
    with pytest.raises(InputError, match=message):
        choose_points(frames[0], config=ShoulderConfig(points=points))


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"n_points": 0}, "n_points must be >= 1"),
        ({"points": ()}, "at least one"),
        ({"points": ((1.0, float("nan")),)}, "not finite"),
        ({"points": ((1.0, 2.0, 3.0),)}, "list of \\(x, y\\) pairs"),
        ({"window": 20}, "window must be odd"),
        ({"max_level": -1}, "max_level"),
        ({"fb_max_px": 0.0}, "fb_max_px must be > 0"),
        ({"min_ncc": 1.5}, "min_ncc must be in"),
        ({"spread": 0.0}, "spread"),
        ({"neck_length": -1.0}, "neck_length must be >= 0"),
    ],
)
def test_bad_config(kwargs, message) -> None:
    with pytest.raises(InputError, match=message):
        ShoulderConfig(**kwargs)


def test_config_points_from_json_lists_become_tuples() -> None:
    cfg = ShoulderConfig(points=[[1, 2], [3.5, 4]])  # type: ignore[arg-type]
    assert cfg.points == ((1.0, 2.0), (3.5, 4.0))
    hash(cfg)


# --------------------------------------------------------------------------- tracking


def test_tracks_follow_the_truth(talking_clip, chosen) -> None:
    truth, frames = talking_clip
    calls: list[tuple[str, int, int | None]] = []
    tracks = track_points(
        iter(frames), chosen.points, config=ShoulderConfig(), progress=lambda *a: calls.append(a)
    )
    assert tracks.points2d.shape == (90, 8, 2) and tracks.points2d.dtype == np.float32
    assert tracks.valid.shape == (90, 8)
    np.testing.assert_array_equal(tracks.init, chosen.points)
    speed = np.linalg.norm(
        np.diff(truth.map_points(_photo_points(truth, chosen.points)), axis=0), axis=2
    )
    assert 2.0 < speed.max() < 6.0  # "a few pixels per frame"
    err = _errors(truth, tracks)
    assert tracks.valid.mean() > 0.97
    e = err[tracks.valid]
    print(f"shoulder track error vs truth: median {np.median(e):.3f} px, max {e.max():.3f} px")
    assert np.median(e) <= 1.0 and e.max() <= 2.0
    assert calls[-1] == ("shoulders", 90, 90) and calls[0][2] is None  # an iterator: no len


def test_rgb_and_bgr_frames_give_the_same_tracks(talking_clip, chosen) -> None:
    _, frames = talking_clip
    rgb = track_points(frames[:12], chosen.points)
    bgr = track_points((f[:, :, ::-1] for f in frames[:12]), chosen.points, bgr=True)
    np.testing.assert_array_equal(rgb.valid, bgr.valid)
    np.testing.assert_allclose(rgb.points2d, bgr.points2d, atol=1e-4)


def test_occluded_points_are_invalid_and_come_back(talking_clip, chosen) -> None:
    truth, frames = talking_clip
    expected = truth.map_points(_photo_points(truth, chosen.points))  # (N, P, 2)
    covered = [0, 1]  # the two leftmost points
    start, stop = 30, 45  # 0.5 s
    box = expected[start:stop, covered].reshape(-1, 2)
    x0, y0 = np.floor(box.min(axis=0) - 8).astype(int)
    x1, y1 = np.ceil(box.max(axis=0) + 8).astype(int)
    occluded = []
    for i, f in enumerate(frames):
        if start <= i < stop:
            f = f.copy()
            f[y0 : y1 + 1, x0 : x1 + 1] = (205, 160, 135)  # a flat "hand", standing still
        occluded.append(f)
    tracks = track_points(occluded, chosen.points)
    err = _errors(truth, tracks)
    # hidden points are invalid under the hand, NaN rather than stuck on its edge ...
    assert not tracks.valid[start:stop, covered].any()
    assert np.isnan(tracks.points2d[start:stop, covered]).all()
    # ... and come back, accurate, soon after it leaves
    assert tracks.valid[stop + 2 :, covered].all(), tracks.valid[stop:, covered]
    assert err[stop:, covered][tracks.valid[stop:, covered]].max() < 2.0
    # no point is ever valid somewhere wrong (e.g. dragged along by the occluder)
    assert err[tracks.valid].max() < 2.0
    assert tracks.valid[:start].all()
    # the prediction bridges the gap with the motion of the visible points
    gap = np.linalg.norm(
        tracks.predicted[start:stop, covered] - expected[start:stop, covered], axis=2
    )
    assert gap.max() < 3.0, gap.max()


@pytest.mark.slow
def test_points_leaving_the_frame_are_invalid_not_clamped(tmp_path: Path, portrait) -> None:
    size = (400, 360)  # the 300 px wide photo swings 120 px to either side: out and back
    motion = synth.Motion(
        shift_px=(120.0, 0.0), shift_hz=(0.25, 0.1), roll_deg=0.0, scale=0.0, seed=3
    )
    truth = synth.render_talking_clip(
        tmp_path / "wide.mp4",
        image=portrait.image,
        duration_s=3.0,
        fps=FPS,
        size=size,
        motion=motion,
    )
    frames = list(iter_frames(tmp_path / "wide.mp4", fps=FPS, size=size))
    # points on the suit, photo coordinates -> frame 0
    photo = np.array([[40.0, 250.0], [70.0, 215.0], [230.0, 215.0], [260.0, 250.0]])
    init = truth.map_points(photo)[0]
    assert np.all((init > 20) & (init < np.array(size) - 21)), init
    tracks = track_points(frames, init)
    expected = truth.map_points(photo)
    w, h = size
    outside = (
        (expected[..., 0] < 0)
        | (expected[..., 0] > w - 1)
        | (expected[..., 1] < 0)
        | (expected[..., 1] > h - 1)
    )
    assert outside.any(axis=0).sum() >= 3  # the clip really pushes points out
    assert not tracks.valid[outside].any()
    assert np.isnan(tracks.points2d[outside]).all()  # never clamped to the border
    err = np.linalg.norm(tracks.points2d - expected, axis=2)
    assert err[tracks.valid].max() < 2.0
    # once well inside again (a window from the border), the points are re-acquired
    margin = ShoulderConfig().window
    deep = (
        (expected[..., 0] >= margin)
        & (expected[..., 0] <= w - 1 - margin)
        & (expected[..., 1] >= margin)
        & (expected[..., 1] <= h - 1 - margin)
    )
    came_back = deep & (np.cumsum(outside, axis=0) > 0)
    assert came_back.sum() > 10 and tracks.valid[came_back].mean() > 0.9


def test_without_reseeding_a_lost_point_stays_lost(talking_clip, chosen) -> None:
    _, frames = talking_clip
    hidden = [f.copy() for f in frames[:20]]
    x, y = chosen.points[0]
    for f in hidden[5:8]:
        f[int(y) - 15 : int(y) + 16, int(x) - 15 : int(x) + 16] = 90
    kept = track_points(hidden, chosen.points, config=ShoulderConfig(reseed=False))
    assert kept.valid[:5, 0].all() and not kept.valid[5:, 0].any()
    again = track_points(hidden, chosen.points)
    assert not again.valid[5:8, 0].any() and again.valid[10:, 0].all()


def test_memory_stays_flat_in_clip_length() -> None:
    rng = np.random.default_rng(1)
    texture = cv2.GaussianBlur(rng.integers(0, 256, (400, 400), np.uint8), (0, 0), 2.0)
    init = np.array([[60.0, 60.0], [120.0, 200.0], [200.0, 120.0], [150.0, 150.0]])

    def frames(n: int):
        for i in range(n):
            dx = 10 * np.sin(i / 10)
            m = np.float32([[1, 0, dx], [0, 1, 0]])
            f = cv2.warpAffine(texture, m, (256, 256))
            if i % 50 == 10:  # hide a point now and then, so templates are kept
                f[50:71, 50 + int(dx) : 71 + int(dx)] = 0
            yield f

    peaks = []
    for n in (60, 600):
        tracemalloc.start()
        track_points(frames(n), init)
        peaks.append(tracemalloc.get_traced_memory()[1])
        tracemalloc.stop()
    # the outputs grow by (N, P) floats; the frames kept must not
    assert peaks[1] - peaks[0] < 0.5e6, peaks


@pytest.mark.parametrize(
    ("init", "message"),
    [
        (np.zeros((0, 2)), "init must be \\(P, 2\\)"),
        (np.array([[1.0, np.nan]]), "finite"),
        (
            np.array([[10.0, 10.0], [700.0, 5.0]]),
            "init point 1 \\(700, 5\\) lies outside the first frame \\(640x360\\)",
        ),
    ],
)
def test_bad_init(talking_clip, init, message) -> None:
    _, frames = talking_clip
    with pytest.raises(InputError, match=message):
        track_points(frames[:3], init)


def test_frames_of_another_size_or_none_are_refused(talking_clip, chosen) -> None:
    _, frames = talking_clip
    with pytest.raises(InputError, match="frame 1 is 320x180, frame 0 was 640x360"):
        track_points([frames[0], cv2.resize(frames[1], (320, 180))], chosen.points)
    with pytest.raises(InputError, match="no frames"):
        track_points([], chosen.points)


# --------------------------------------------------------------------------- real video


def test_real_dataset_tracks_are_smooth(single_face_dataset: Path) -> None:
    with h5py.File(single_face_dataset, "r") as f:
        jpegs = f["frames"]
        n = len(jpegs)
        first = cv2.cvtColor(cv2.imdecode(jpegs[0], cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)
        chosen = choose_points(first, face_points2d=f["landmarks/lsp73"][0])
        fps = int(f.attrs["fps"])
        source_fps = float(__import__("json").loads(f.attrs["source_info"])["fps"])
        decoded = (cv2.imdecode(b, cv2.IMREAD_COLOR) for b in jpegs)
        tracks = track_points(decoded, chosen.points, bgr=True, total=n)
    assert chosen.source == "pose"
    assert tracks.points2d.shape == (n, 8, 2)
    assert np.all(chosen.points[:, 1] > 380)  # on the shoulders, below the face
    assert tracks.valid.mean() > 0.9, tracks.valid.mean(axis=0)
    # single_face is 30 fps, stored at 60: every other frame repeats the picture (only the
    # crop moves), so jitter is measured at the source rate too.
    step = max(1, round(fps / source_fps))
    for k in sorted({1, step}):
        d2 = np.diff(tracks.points2d[::k].astype(np.float64), n=2, axis=0)
        jitter = float(np.nanmean(np.linalg.norm(d2, axis=2)))
        print(f"shoulder jitter every {k} frame(s): {jitter:.3f} px (mean |second difference|)")
        assert jitter < 1.0
    motion = np.nanmax(tracks.points2d, axis=0) - np.nanmin(tracks.points2d, axis=0)
    assert np.all(motion.max(axis=1) > 3.0)  # the points do move with the crop


# --------------------------------------------------------------------------- billboard


def test_billboard_reprojects_exactly() -> None:
    rng = np.random.default_rng(2)
    n, p, depth = 40, 6, 812.5
    ks = np.tile(np.array([[900.0, 0.0, 256.0], [0.0, 905.0, 250.0], [0.0, 0.0, 1.0]]), (n, 1, 1))
    ks[:, 0, 2] += rng.normal(0, 3, n)  # the crop moves: the principal point with it
    pts = rng.uniform(0, 511, (n, p, 2))
    valid = rng.random((n, p)) > 0.3
    valid[:, 0] = False  # never valid
    valid[:5, 1] = False  # valid from frame 5 on
    valid[5, 1] = True
    xyz = billboard(pts, valid, intrinsics=ks, depth=depth)
    assert xyz.shape == (p, 3)
    assert np.isnan(xyz[0]).all()
    np.testing.assert_allclose(xyz[1:, 2], depth)
    for j in range(1, p):
        f0 = int(np.flatnonzero(valid[:, j])[0])
        uvw = ks[f0] @ xyz[j]
        np.testing.assert_allclose(uvw[:2] / uvw[2], pts[f0, j], atol=1e-9)
    assert np.flatnonzero(valid[:, 1])[0] == 5
    # one K for the whole clip, and the median reference: still on the plane
    single = billboard(pts, valid, intrinsics=ks[0], depth=depth, reference="median")
    np.testing.assert_allclose(single[1:, 2], depth)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"depth": 0.0}, "depth must be a positive"),
        ({"depth": float("inf")}, "depth must be a positive"),
        ({"intrinsics": np.zeros((3, 3))}, "invertible"),
        (
            {"intrinsics": np.eye(3)[None].repeat(2, 0)},
            "intrinsics must be \\(3, 3\\) or \\(N, 3, 3\\)",
        ),
        ({"reference": "last"}, "reference must be"),
    ],
)
def test_bad_billboard_input(kwargs, message) -> None:
    args = {"intrinsics": np.eye(3), "depth": 10.0} | kwargs
    with pytest.raises(InputError, match=message):
        billboard(np.zeros((4, 2, 2)), np.ones((4, 2), bool), **args)
