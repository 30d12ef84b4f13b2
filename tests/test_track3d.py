"""prep's 3D stages against renders with a known camera, head motion and mouth opening.

The issue's targets: focal error <= 3 % and median rotation error <= 1 degree. Landmarks
alone cannot reach them (Face Mesh leans towards a frontal face: the pitch comes out ~20 %
too small and the focal length is not identified); the texture features of
lsp_prep.stages.features.measure do. The render is 30 fps, so 60 fps frame i shows source
frame i // 2.
"""

from __future__ import annotations

import h5py
import numpy as np
import pytest
from scipy.spatial.transform import Rotation

from lsp_prep.camera import to_original
from lsp_prep.layout import load_layout


@pytest.fixture(scope="module")
def rendered(media, portrait, tmp_path_factory):
    from lsp_prep.media import load_audio
    from lsp_prep.pipeline import prep_video
    from lsp_synth import render3d as synth3d
    from lsp_synth.mesh import face_model
    from lsp_synth.pinhole import Camera

    tmp = tmp_path_factory.mktemp("render3d")
    model = face_model(portrait.image)
    camera = Camera(focal=500.0, size=(640, 360))
    speech = load_audio(media["speech"], sr=16000)[8 * 16000 : 13 * 16000]
    truth = synth3d.render_head_clip(
        tmp / "head.mp4",
        model=model,
        camera=camera,
        duration_s=5.0,
        fps=30,
        motion=synth3d.HeadMotion(),
        audio=speech,
    )
    result = prep_video(tmp / "head.mp4", out_dir=tmp / "out")
    with h5py.File(result.dataset) as f:
        data = {
            k: f[k][()]
            for k in (
                "landmarks/valid",
                "track/rotation",
                "track/translation",
                "track/mouth_displacement",
                "track/reprojection_error",
                "shoulders/points2d",
                "shoulders/valid",
                "crop/boxes",
                "camera/focal_search",
                "camera/intrinsics_original",
                "track/mean_shape",
                "track/n_features",
                "track/points3d",
                "landmarks/lsp73",
                "camera/intrinsics",
            )
        }
        data["identified"] = bool(f["camera"].attrs["focal_identified"])
        data["interval"] = f["camera"].attrs["focal_interval"]
        data["interval_landmarks"] = f["camera"].attrs["focal_interval_landmarks"]
        data["source"] = str(f["camera"].attrs["focal_source"])
    data["notes"] = result.notes  # prep's summary prints them
    n = len(data["landmarks/valid"])
    src = np.clip(np.arange(n) // 2, 0, len(truth.rotation) - 1)  # ffmpeg repeats each frame
    return truth, data, src


def test_head_rotation_and_translation(rendered):
    truth, d, src = rendered
    v = d["landmarks/valid"]
    assert v.mean() > 0.95
    assert np.nanmedian(d["track/reprojection_error"]) < 1.5
    true_rot, est = (
        Rotation.from_rotvec(truth.rotation[src]),
        Rotation.from_rotvec(d["track/rotation"]),
    )
    gauge = (true_rot[v].inv() * est[v]).mean()  # the object frames differ by a constant rotation
    err = np.degrees(((true_rot * gauge).inv() * est).magnitude())[v]
    assert np.median(err) <= 1.0 and np.percentile(err, 90) < 2.0, np.percentile(err, [50, 90])
    # the amplitude is right on every axis (landmarks alone give a pitch slope of ~0.78)
    te, ee = (true_rot * gauge)[v].as_euler("xyz"), est[v].as_euler("xyz")
    for axis in range(3):
        assert np.polyfit(te[:, axis], ee[:, axis], 1)[0] == pytest.approx(1.0, abs=0.04)
    t_true, t_est = truth.translation[src], d["track/translation"]
    cos = np.sum(t_true * t_est, 1) / np.linalg.norm(t_true, axis=1) / np.linalg.norm(t_est, axis=1)
    assert np.median(np.degrees(np.arccos(np.clip(cos, -1, 1)))[v]) < 3.0


def test_focal_length_is_found_within_six_percent(rendered):
    """Issue 11's target is 3 %; this 5 s render does not fix f that well: its feature
    error curve is flat within 0.1 % from 446 to 495 px, and two equally good landmark
    tracks (Face Mesh on every 60 FPS tick, or once per source frame, 0.27 px apart) put
    its minimum at 494 and 475 px. Its 95 % interval says so: 451-505 px (measured), which
    holds the true 500."""
    _, d, _ = rendered
    curve = d["camera/focal_search"]
    assert len(curve) >= 10 and np.all(np.diff(curve[:, 0]) > 0)
    focal = d["camera/intrinsics_original"][0, 0]
    assert d["identified"] and d["source"] == "features"
    assert focal == pytest.approx(500.0, rel=0.06)
    assert focal == curve[np.argmin(curve[:, 1]), 0]  # the minimum of the recorded curve
    lo, hi = d["interval"]
    assert lo < 500.0 < hi and (hi - lo) / focal < 0.2
    said = f"focal length {focal:.0f} px from the features (95% interval {lo:.0f}-{hi:.0f} px)"
    assert any(note.endswith(said) for note in d["notes"]), d["notes"]
    # the landmarks' curve leaves f open towards long focal lengths (447-4576 px measured):
    # Face Mesh leans towards a frontal face
    from lsp_prep.camera import focal_from_fov
    from lsp_prep.stages.geometry.config import CameraConfig

    lo_l, hi_l = d["interval_landmarks"]
    assert lo_l < 500.0 and hi_l == pytest.approx(focal_from_fov(CameraConfig().min_fov_deg, 640))


def test_features_measure_the_frames_and_points_project_onto_the_landmarks(rendered):
    _, d, _ = rendered
    v, count = d["landmarks/valid"], d["track/n_features"]
    assert (count[v] > 0).mean() >= 0.24 and np.median(count[count > 0]) >= 50
    # the feature map is drawn from K (R X + T): it must land on the detected landmarks
    R = Rotation.from_rotvec(d["track/rotation"][v]).as_matrix()
    cam = np.einsum("nij,npj->npi", R, d["track/points3d"][v]) + d["track/translation"][v, None]
    K = d["camera/intrinsics"][v]
    uv = cam[..., :2] / cam[..., 2:] * K[:, None, [0, 1], [0, 1]] + K[:, None, :2, 2]
    assert np.abs(uv - d["landmarks/lsp73"][v]).max() < 0.05


def test_mean_shape_depth_matches_the_model(rendered):
    truth, d, _ = rendered
    layout = load_layout()
    ours = d["track/mean_shape"]
    true = truth.points_obj[0][layout.mediapipe_index]
    stable = np.asarray(layout.sets["stable"])
    assert np.ptp(ours[stable, 2]) == pytest.approx(np.ptp(true[stable, 2]), rel=0.15)


def test_mouth_displacement_follows_the_driven_opening(rendered):
    truth, d, src = rendered
    mouth = list(load_layout().mouth)
    dv = d["track/mouth_displacement"]
    gap = dv[:, mouth.index(62), 1] - dv[:, mouth.index(59), 1]  # lower minus upper inner lip
    v = d["landmarks/valid"]
    assert np.corrcoef(gap[v], truth.mouth_open[src][v])[0, 1] > 0.55


def test_shoulder_tracks_within_two_pixels(rendered):
    truth, d, src = rendered
    pts = to_original(d["shoulders/points2d"], d["crop/boxes"], 512)
    valid = d["shoulders/valid"]
    assert valid.mean() > 0.85
    # where each tracked point sits on the torso photo, from the first frame
    a0 = truth.shoulder_affine[src[0]]
    inv = np.linalg.inv(np.vstack([a0, [0, 0, 1]]))[:2]
    photo = pts[0] @ inv[:, :2].T + inv[:, 2]
    expect = (
        np.einsum("nij,pj->npi", truth.shoulder_affine[src][:, :, :2], photo)
        + (truth.shoulder_affine[src][:, None, :, 2])
    )
    err = np.linalg.norm(pts - expect, axis=-1)[valid]
    assert np.median(err) < 1.0 and np.percentile(err, 95) < 2.0, np.percentile(err, [50, 95])


def _jitter(x: np.ndarray) -> float:
    """Mean absolute second difference over frames."""
    return float(np.nanmean(np.abs(np.diff(x, 2, axis=0))))


def test_real_clip_tracks_are_consistent_and_smooth(single_face_dataset):
    """single_face.mp4: the rigid fit explains the landmarks and the pose does not shake."""
    with h5py.File(single_face_dataset) as f:
        err = f["track/reprojection_error"][:]
        rot = f["track/rotation"][:]
        trans = f["track/translation"][:]
        v = f["landmarks/valid"][:]
        sh, shv = f["shoulders/points2d"][:], f["shoulders/valid"][:]
    assert np.nanmedian(err) < 1.0 and np.nanpercentile(err, 95) < 2.0  # original pixels
    assert np.nanstd(err) < 0.5  # stable over the clip
    assert np.degrees(_jitter(rot[v])) < 0.6  # degrees per frame^2
    assert _jitter(trans[v]) < 0.2  # cm per frame^2
    assert shv.mean() > 0.9 and _jitter(np.where(shv[..., None], sh, np.nan)) < 1.0


@pytest.fixture(scope="module")
def expressive(media, portrait, tmp_path_factory):
    """An expressive render: the real pexels clip's expressions on the mesh, the skull
    rigid, +-35 degrees of yaw at f = 900, a hand across the lower face from 2 to 3.5 s."""
    from lsp_prep.media import load_audio
    from lsp_prep.pipeline import prep_video
    from lsp_synth import render3d as synth3d
    from lsp_synth.expression import Hand, clip_expressions
    from lsp_synth.mesh import face_model
    from lsp_synth.pinhole import Camera

    tmp = tmp_path_factory.mktemp("expressive")
    truth = synth3d.render_head_clip(
        tmp / "head.mp4",
        model=face_model(portrait.image),
        camera=Camera(focal=900.0, size=(960, 540)),
        duration_s=6.0,
        fps=30,
        motion=synth3d.HeadMotion(yaw_deg=35.0, pitch_deg=15.0, seed=5, distance_cm=80.0),
        audio=load_audio(media["speech"], sr=16000)[: 6 * 16000],
        mouth_open_cm=0.0,  # the clip's expressions move the mouth
        expressions=clip_expressions(media["pexels"]),
        hand=Hand(start_s=2.0, duration_s=1.5),
    )
    assert 20 <= truth.occluded.sum() <= 45  # the hand covers the face for about a second
    result = prep_video(tmp / "head.mp4", out_dir=tmp / "out")
    with h5py.File(result.dataset) as f:
        rot, valid = f["track/rotation"][:], f["landmarks/valid"][:]
        source = f["track/source"][:]
        cam = dict(f["camera"].attrs) | {
            "focal": float(f["camera/intrinsics_original"][0, 0]),
            "curve": f["camera/focal_search"][:],
        }
    src = np.clip(np.arange(len(rot)) // 2, 0, len(truth.rotation) - 1)
    truth_rot = Rotation.from_rotvec(truth.rotation[src])
    return truth_rot, Rotation.from_rotvec(rot), valid, source, cam, result.warnings


def test_expressive_faces_are_tracked_on_the_skull(expressive):
    """Landmarks alone are about 5 degrees off on such a render (the pitch 30 % too small);
    the features, weighted by their learned rigidity, follow the skull (issue 11's
    targets: 1.5 / 3 degrees, slopes within 0.05; benchmarks/accuracy_track3d.py has the
    10 s render beside the real clips)."""
    truth, est, v, source, *_ = expressive
    assert v.mean() > 0.95 and (source > 0).mean() > 0.5
    gauge = (truth[v].inv() * est[v]).mean()
    err = np.degrees(((truth * gauge).inv() * est).magnitude())[v]
    # measured 1.39 / 2.59 at the default 922 px (1.41 / 2.58 at the features' own f, before
    # the focal interval; 1.46 / 2.66 before frames whose features fit well were trusted)
    assert np.median(err) < 1.6 and np.percentile(err, 90) < 3.0
    te, ee = (truth * gauge)[v].as_euler("YXZ", degrees=True), est[v].as_euler("YXZ", degrees=True)
    slopes = [np.polyfit(te[:, a], ee[:, a], 1)[0] for a in range(3)]
    assert all(abs(k - 1) < 0.05 for k in slopes)  # measured 1.011, 0.966, 0.990


def test_expressive_focal_is_not_taken_from_features_that_do_not_fix_it(expressive):
    """Expressions move the features' error curve's minimum (here 995 px, +11 %; 692 px,
    -23 %, on the 10 s render of benchmarks/accuracy_track3d.py) and flatten it: its 95 %
    interval (here 727-1569 px, 85 % of f) is wider than camera.max_interval, so f is not
    identified and prep says so. The default
    55-degree field of view (922 px at 960 wide) is then 2.5 % from the true 900: issue 11's
    5 % holds because the default happens to suit this camera, not because the clip fixes f."""
    *_, cam, warnings = expressive
    from lsp_prep.stages.geometry.config import CameraConfig

    curve = cam["curve"]
    best = curve[np.argmin(curve[:, 1]), 0]
    lo, hi = cam["focal_interval"]
    assert (hi - lo) / best > CameraConfig().max_interval, (lo, hi, best)
    assert not cam["focal_identified"] and cam["focal_source"] == "default"
    assert cam["focal"] == pytest.approx(922.07, abs=0.01)
    assert cam["focal"] == pytest.approx(900.0, rel=0.05)
    assert any("focal length not identified" in w and "interval" in w for w in warnings)
