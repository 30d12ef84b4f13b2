"""Mouth targets without head pose (lsp_prep.stages.geometry.mouth)."""

from __future__ import annotations

import numpy as np
import pytest

from lsp_prep.camera import euler_yxz_to_rotvec
from lsp_prep.config import PrepConfig
from lsp_prep.configtree import with_overrides
from lsp_prep.errors import InputError
from lsp_prep.layout import load_layout
from lsp_prep.stages.geometry.mouth import (
    MIN_FRAMES,
    mouth_displacement,
    pose_design,
    pose_explained,
)

LAYOUT = load_layout()
MOUTH = LAYOUT.mouth
JAW = [4, 5, 6, 7, 8, 9, 10]
LOWER_LIP_AND_JAW = [*JAW, 53, 54, 55, 56, 57, 61, 62, 63]


def clip(n: int = 3600, seed: int = 0):
    """Landmarks (N, 73, 3) whose lower lip and jaw open with a speech-like signal and
    whose mouth points also slide with yaw (linearly and quadratically), as the jaw contour
    does on the silhouette. Returns them, poses and the true mouth displacements."""
    rng = np.random.default_rng(seed)
    t = np.arange(n) / 60.0
    yaw = 30 * np.sin(2 * np.pi * 0.11 * t)
    pitch = 12 * np.sin(2 * np.pi * 0.07 * t + 1.0)
    roll = 5 * np.sin(2 * np.pi * 0.05 * t + 2.0)
    rot = euler_yxz_to_rotvec(yaw, pitch, roll)
    trans = np.stack([2 * np.sin(2 * np.pi * 0.03 * t), np.zeros(n), 60 + np.zeros(n)], 1)
    speech = np.clip(np.convolve(rng.normal(size=n), np.ones(5) / 5, "same"), 0, None)
    rest = rng.normal(size=(73, 3))
    opening = np.zeros((73, 3))
    opening[LOWER_LIP_AND_JAW, 1] = rng.uniform(0.3, 1.0, len(LOWER_LIP_AND_JAW))
    # the whole mouth shifts with pose (a pose error), the jaw contour also slides
    slide, bend = np.zeros((73, 3)), np.zeros((73, 3))
    slide[MOUTH] = rng.normal(size=3) * 0.5
    bend[MOUTH] = rng.normal(size=3) * 0.5
    slide[JAW] += rng.normal(size=(len(JAW), 3)) * 0.5
    bend[JAW] += rng.normal(size=(len(JAW), 3)) * 0.5
    y = yaw / 30
    pts = (
        rest
        + speech[:, None, None] * opening
        + y[:, None, None] * slide
        + (y**2)[:, None, None] * bend
        + rng.normal(scale=0.01, size=(n, 73, 3))
    )
    true = speech[:, None, None] * opening[MOUTH]
    return pts, rot, trans, true - true.mean(0)


def rms(x: np.ndarray) -> float:
    return float(np.sqrt(np.mean(x**2)))


def test_pose_is_taken_out_and_speech_stays():
    pts, rot, trans, true = clip()
    valid = np.ones(len(pts), bool)
    plain = mouth_displacement(pts, rot, trans, valid, layout=LAYOUT, terms="off")
    clean = mouth_displacement(pts, rot, trans, valid, layout=LAYOUT, terms="quadratic")
    linear = mouth_displacement(pts, rot, trans, valid, layout=LAYOUT, terms="linear")
    assert pose_explained(plain, rot, trans, valid) > 0.8
    assert pose_explained(clean, rot, trans, valid) < 0.03
    # the quadratic slide survives a linear fit, not a quadratic one
    assert rms(linear - true) > rms(true)
    assert rms(clean - true) < 0.25 * rms(true)
    lip = list(MOUTH).index(62)
    assert np.corrcoef(clean[:, lip, 1], true[:, lip, 1])[0, 1] > 0.98
    np.testing.assert_allclose(clean.mean(0), 0, atol=1e-12)


def test_invalid_frames_are_nan_and_left_out_of_the_fit():
    pts, rot, trans, true = clip()
    valid = np.ones(len(pts), bool)
    valid[100:160] = False
    pts[100:160] = 1e6  # garbage where not valid must not reach the fit
    out = mouth_displacement(pts, rot, trans, valid, layout=LAYOUT)
    assert np.isnan(out[100:160]).all()
    assert np.isfinite(out[valid]).all()
    assert rms(out[valid] - (true[valid] - true[valid].mean(0))) < 0.25 * rms(true)


def test_short_clips_keep_the_plain_displacements():
    pts, rot, trans, _ = clip()
    k = pose_design(rot, trans, np.ones(len(pts), bool), terms="quadratic").shape[1]
    assert k == 12
    n = MIN_FRAMES - 1
    out = mouth_displacement(pts[:n], rot[:n], trans[:n], np.ones(n, bool), layout=LAYOUT)
    plain = pts[:n, MOUTH] - pts[:n, MOUTH].mean(0)
    np.testing.assert_allclose(out, plain, atol=1e-12)


@pytest.mark.parametrize("seconds", [10, 30])
def test_speech_without_a_pose_effect_is_kept(seconds):
    """Head motion is slow, so over a few seconds speech correlates with it by chance.
    Plain least squares takes that away (measured: 15-30 % of the speech's RMS over 10 s,
    12-17 % over 30 s, 6-8 % over 2 min); the cross-validated ridge mostly leaves it."""
    n = seconds * 60
    cv, ols = [], []
    for seed in range(4):
        pts, rot, trans, true = clip(n=n, seed=seed + 10 * seconds)
        still = pts.copy()
        still[:, MOUTH] = pts[0, MOUTH] - true[0] + true  # the speech alone, no slide
        out = mouth_displacement(still, rot, trans, np.ones(n, bool), layout=LAYOUT)
        x = pose_design(rot, trans, np.ones(n, bool), terms="quadratic")
        x = x - x.mean(0)
        y = (still[:, MOUTH] - still[:, MOUTH].mean(0)).reshape(n, -1)
        plain_fit = (y - x @ np.linalg.lstsq(x, y, rcond=None)[0]).reshape(out.shape)
        cv.append(rms(out - true) / rms(true))
        ols.append(rms(plain_fit - true) / rms(true))
    assert max(cv) < 0.3
    assert np.mean(cv) < 0.5 * np.mean(ols)
    assert np.mean(cv) < 0.08


def test_the_setting_takes_its_three_choices_only():
    cfg = with_overrides(PrepConfig(), ["geometry.mouth_pose_terms=linear"])
    assert cfg.geometry.mouth_pose_terms == "linear"
    with pytest.raises(InputError, match="off, linear, quadratic"):
        with_overrides(PrepConfig(), ["geometry.mouth_pose_terms=cubic"])


@pytest.fixture(scope="module")
def speaker(media, portrait, tmp_path_factory):
    """A 12 s render whose jaw opens with real speech while the head turns (+-30 deg yaw),
    prepped as shipped."""
    import h5py

    from lsp_prep.media import load_audio
    from lsp_prep.pipeline import prep_video
    from lsp_synth import render3d as synth3d
    from lsp_synth.mesh import face_model
    from lsp_synth.pinhole import Camera

    tmp = tmp_path_factory.mktemp("speaker")
    truth = synth3d.render_head_clip(
        tmp / "speaker.mp4",
        model=face_model(portrait.image),
        camera=Camera(focal=500.0, size=(640, 360)),
        duration_s=12.0,
        fps=30,
        motion=synth3d.HeadMotion(seed=2),
        audio=load_audio(media["speech"], sr=16000)[8 * 16000 : 20 * 16000],
    )
    result = prep_video(tmp / "speaker.mp4", out_dir=tmp / "out")
    with h5py.File(result.dataset) as f:
        d = {k: f[k][()] for k in ("landmarks/valid", "track/mouth_displacement", "track/points3d")}
    n = len(d["landmarks/valid"])
    src = np.clip(np.arange(n) // 2, 0, len(truth.rotation) - 1)  # ffmpeg repeats each frame
    return truth, d, src


def speech_share(dv: np.ndarray, opening: np.ndarray) -> float:
    """Fraction of the variance of ``dv`` (T, M, 3) a linear fit on ``opening`` (T,) explains."""
    y = dv.reshape(len(dv), -1)
    y = y - y.mean(0)
    x = opening - opening.mean()
    return 1 - float(((y - np.outer(x, x @ y / (x @ x))) ** 2).sum() / (y**2).sum())


@pytest.mark.slow
def test_rendered_speaker_targets_carry_the_speech_not_the_head_pose(speaker):
    """Issue 12. The fit used the estimated poses; it is judged with the true ones.
    Measured here: pose 0.73 -> 0.27 of the variance (in sample: over 12 s the speech
    itself correlates with the pose by chance), speech 0.16 -> 0.40, inner-lip opening's
    correlation with the truth 0.81 -> 0.81. Over 30 s: pose 0.60 -> 0.06, speech 0.26 ->
    0.61, opening 0.92 -> 0.92."""
    truth, d, src = speaker
    v = d["landmarks/valid"]
    mouth = list(MOUTH)
    pts = d["track/points3d"][:, mouth].astype(np.float64)
    plain = pts - pts[v].mean(0)
    dv = d["track/mouth_displacement"].astype(np.float64)
    opening = truth.mouth_open[src][v]
    rot, trans = truth.rotation[src], truth.translation[src]
    shares = {
        name: (speech_share(x[v], opening), pose_explained(x, rot, trans, v))
        for name, x in (("plain", plain), ("targets", dv))
    }
    gap = {  # lower minus upper inner lip: the opening itself
        name: np.corrcoef(x[v, mouth.index(62), 1] - x[v, mouth.index(59), 1], opening)[0, 1]
        for name, x in (("plain", plain), ("targets", dv))
    }
    assert shares["plain"][1] > 0.5  # the artefact is there to remove
    assert shares["targets"][1] < 0.4
    assert shares["targets"][0] > 2 * shares["plain"][0]
    assert gap["targets"] > gap["plain"] - 0.02
