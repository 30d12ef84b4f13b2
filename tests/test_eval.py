"""lsp eval: metric functions on known inputs, evaluate() on a tiny trained run, the CLI."""

from __future__ import annotations

import dataclasses
import json
import math
import shutil
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch
from scipy.ndimage import gaussian_filter

from lsp_models.eval import evaluate as E
from lsp_models.eval import metrics as M
from lsp_models.eval.data import read_val
from lsp_models.eval.mouth import mouth_checkpoints, predict_val
from lsp_prep.errors import CheckpointError, InputError, SchemaError
from lsp_prep.layout import load_layout

pytestmark = pytest.mark.usefixtures("one_thread")

OTHER_DELAY = 6


# ----------------------------------------------------------------------------- metrics


def test_point_distance_of_a_known_offset_is_the_offset_in_mm():
    rng = np.random.default_rng(0)
    target = rng.normal(size=(7, 25, 3))
    pred = target + np.array([0.3, 0.4, 0.0])  # 0.5 cm on every point
    assert M.point_distance(pred, target) == pytest.approx(5.0)
    assert M.point_distance(target, target) == 0.0
    assert math.isnan(M.point_distance(target[:0], target[:0]))
    with pytest.raises(InputError, match="point_distance"):
        M.point_distance(pred[:, :3], target)


def test_mouth_opening_uses_the_inner_lip_midpoints():
    layout = load_layout()
    up, lo = M.inner_lip_indices(layout)
    # MediaPipe 13 / 14 are LSP 59 / 62, the middle of the upper and lower inner lip
    assert (layout.mouth[up], layout.mouth[lo]) == (59, 62)
    pts = np.zeros((3, 25, 3))
    pts[:, lo, 1] = [0.0, 0.5, 1.2]  # cm
    np.testing.assert_allclose(M.mouth_opening(pts, lips=(up, lo)), [0.0, 5.0, 12.0])


def test_correlation():
    a = np.sin(np.linspace(0, 6, 50))
    assert M.correlation(a, 2 * a + 1) == pytest.approx(1.0)
    assert M.correlation(a, -a) == pytest.approx(-1.0)
    assert math.isnan(M.correlation(a, np.ones(50)))


def test_pose_statistics_units_and_valid_pairs():
    n = 11
    pose = np.zeros((n, 6))
    pose[:, 1] = np.arange(n) * math.radians(0.5)  # yaw: 0.5 degree per frame
    pose[:, 3] = 1.0  # x: 1 cm
    pose[:, 5] = np.where(np.arange(n) % 2, 0.2, 0.0)  # z: alternating 0 / 2 mm
    s = M.pose_statistics(pose)
    assert s["mean_abs_velocity"][1] == pytest.approx(0.5)
    assert s["mean"][3] == pytest.approx(10.0) and s["std"][3] == pytest.approx(0.0)
    assert s["mean_abs_velocity"][5] == pytest.approx(2.0)
    assert s["std"][1] == pytest.approx(np.degrees(pose[:, 1]).std())
    valid = np.ones(n, bool)
    valid[5] = False  # frames 4-5 and 5-6 give no velocity; frame 5 no value
    s = M.pose_statistics(pose, valid)
    assert s["mean_abs_velocity"][1] == pytest.approx(0.5)
    assert s["mean"][1] == pytest.approx(np.degrees(pose[valid, 1]).mean())
    assert np.isnan(M.pose_statistics(pose[:1])["mean_abs_velocity"]).all()


def test_l1_and_psnr_of_a_known_difference():
    rng = np.random.default_rng(1)
    a = rng.integers(10, 240, size=(2, 16, 16, 3)).astype(np.uint8)
    b = a.copy()
    b[0] += 5  # every pixel off by 5: MSE 25
    np.testing.assert_allclose(M.l1_error(b, a), [5.0, 0.0])
    p = M.psnr(b, a)
    assert p[0] == pytest.approx(10 * math.log10(255**2 / 25))  # 34.15 dB
    assert p[1] == math.inf


def _ssim_reference(a: np.ndarray, b: np.ndarray) -> float:
    """SSIM written as scikit-image computes it (scipy Gaussian filter, truncate 3.5 ->
    11 taps at sigma 1.5, reflect border, the 5-pixel border cropped), channel mean."""
    out = []
    for c in range(a.shape[-1]):
        x, y = a[..., c].astype(np.float64), b[..., c].astype(np.float64)

        def f(z):
            return gaussian_filter(z, sigma=1.5, truncate=3.5, mode="reflect")

        mx, my = f(x), f(y)
        vx, vy, cxy = f(x * x) - mx**2, f(y * y) - my**2, f(x * y) - mx * my
        c1, c2 = (0.01 * 255) ** 2, (0.03 * 255) ** 2
        s = ((2 * mx * my + c1) * (2 * cxy + c2)) / ((mx**2 + my**2 + c1) * (vx + vy + c2))
        out.append(s[5:-5, 5:-5].mean())
    return float(np.mean(out))


def test_ssim_identity_and_against_a_reference():
    rng = np.random.default_rng(2)
    a = rng.integers(0, 256, size=(2, 40, 48, 3)).astype(np.uint8)
    noisy = np.clip(a + rng.normal(0, 20, a.shape), 0, 255).astype(np.uint8)
    np.testing.assert_allclose(M.ssim(a, a), 1.0, atol=1e-12)
    s = M.ssim(noisy, a)
    assert ((s > 0) & (s < 1)).all()
    np.testing.assert_allclose(s, M.ssim(a, noisy), atol=1e-12)  # symmetric
    for i in range(2):
        assert s[i] == pytest.approx(_ssim_reference(noisy[i], a[i]), abs=1e-9)
    with pytest.raises(InputError, match="at least 11x11"):
        M.ssim(a[:, :8, :8], a[:, :8, :8])


def test_ssim_matches_scikit_image():
    metrics = pytest.importorskip("skimage.metrics")
    rng = np.random.default_rng(3)
    a = rng.integers(0, 256, size=(1, 32, 32, 3)).astype(np.uint8)
    b = np.clip(a + rng.normal(0, 30, a.shape), 0, 255).astype(np.uint8)
    ref = metrics.structural_similarity(
        b[0],
        a[0],
        channel_axis=-1,
        gaussian_weights=True,
        sigma=1.5,
        use_sample_covariance=False,
        data_range=255,
    )
    assert M.ssim(b, a)[0] == pytest.approx(ref, abs=1e-6)


# ----------------------------------------------------------------------------- a tiny run


@pytest.fixture(scope="module")
def eval_run(trained_run, single_face_dataset, tmp_path_factory) -> Path:
    """The shared tiny run (conftest), copied, plus a second mouth model with another delay
    in RUN/mouth_d6 (trained against the same APC)."""
    from lsp_models.config import load_preset
    from lsp_models.train.mouth import train_mouth

    run = tmp_path_factory.mktemp("eval") / "run"
    shutil.copytree(trained_run, run)
    cfg = load_preset("cpu-small")
    db = (run / "features.pt").read_bytes()
    train_mouth(
        run_dir=run,
        dataset=single_face_dataset,
        model=dataclasses.replace(cfg.mouth, delay=OTHER_DELAY),
        config=dataclasses.replace(cfg.mouth_train, max_steps=20, checkpoint_every=20),
        device="cpu",
        name=f"mouth_d{OTHER_DELAY}",
    )
    assert (run / "features.pt").read_bytes() == db  # a variant leaves the database alone
    return run


@pytest.fixture(scope="module")
def result(eval_run) -> E.EvalResult:
    return E.evaluate(run_dir=eval_run, n_pose_samples=2, max_frames=6, device="cpu")


def test_evaluate_writes_every_section(result, eval_run, single_face_dataset):
    report = json.loads((eval_run / E.EVAL_FILE).read_text())
    assert result.output == eval_run / E.EVAL_FILE
    assert {"mouth", "pose", "image", "steps", "dataset", "val_frames", "units"} <= set(report)
    assert Path(report["dataset"]) == Path(single_face_dataset).resolve()
    assert report["steps"] == {"apc": 20, "mouth": 20, "headpose": 20, "renderer": 4}
    assert 0 < result.valid_val_frames <= result.val_frames

    main = next(m for m in result.mouth if m.name == "mouth")
    assert main.delay == 18 and main.step == 20 and main.frames == result.valid_val_frames
    for v in (main.error_mm, main.error_raw_mm, main.baseline_mm, main.tracked_opening_std_mm):
        assert math.isfinite(v) and 0 < v < 100  # mm on a ~9 cm-eye-distance face
    assert -1 <= main.opening_corr <= 1 or math.isnan(main.opening_corr)

    pose = result.pose
    assert pose.frames == result.val_frames and pose.seeds == [0, 1]
    for stats in (pose.recorded, pose.sampled, pose.animated):
        for key in ("mean", "std", "mean_abs_velocity"):
            assert len(stats[key]) == 6 and np.isfinite(stats[key]).all()
    assert len(pose.sampled_per_seed) == 2 and pose.sampled_per_seed[0] != pose.sampled_per_seed[1]
    assert np.isfinite(pose.std_ratio).all() and min(pose.std_ratio) > 0
    # animate's smoothing slows the sampled motion down
    anim_v = np.array(pose.animated["mean_abs_velocity"])
    assert (anim_v <= np.array(pose.sampled["mean_abs_velocity"]) + 1e-9).all()
    rec_v, rec_s = (
        np.array(p["mean_abs_velocity"]) for p in (pose.recorded, pose.recorded_smoothed)
    )
    assert (rec_s <= rec_v + 1e-9).all()
    np.testing.assert_allclose(
        pose.velocity_ratio, np.array(pose.sampled["mean_abs_velocity"]) / rec_v
    )
    np.testing.assert_allclose(pose.animated_velocity_ratio_smoothed, anim_v / rec_s)
    for stats in (pose.recorded, pose.recorded_smoothed, pose.sampled, pose.animated):
        band = np.array(stats["band_power"])  # (6 axes, bands): shares of the power
        assert band.shape == (6, len(pose.bands_hz) - 1)
        finite = np.isfinite(band).all(1)
        np.testing.assert_allclose(band[finite].sum(1), 1.0)
        assert (np.array(stats["centroid_hz"])[finite] <= 30.0).all()
    assert report["pose"]["bands_hz"] == [0.0, 0.5, 2.0, 6.0, 30.0]
    assert report["pose"]["velocity_ratio"] == pytest.approx(pose.velocity_ratio, nan_ok=True)

    im = result.image
    assert im.image_size == 128 and im.frames == 6 and im.step == 4
    assert len(im.per_frame["frame"]) == 6 and im.val_frames >= 6
    assert im.l1 > 0 and 3 < im.psnr_db < 40 and -1 < im.ssim < 1
    assert report["image"]["psnr_db"] == pytest.approx(im.psnr_db)


def test_mouth_models_of_every_delay(result, eval_run):
    by_delay = {m.delay: m for m in result.mouth}
    assert set(by_delay) == {18, OTHER_DELAY}
    assert by_delay[OTHER_DELAY].name == f"mouth_d{OTHER_DELAY}"
    # the same tracked targets and the same train-split mean: one baseline
    assert by_delay[18].baseline_mm == pytest.approx(by_delay[OTHER_DELAY].baseline_mm)
    assert by_delay[18].error_mm != by_delay[OTHER_DELAY].error_mm
    assert [p.parent.name for p in mouth_checkpoints(eval_run)] == ["mouth", "mouth_d6"]

    only = E.evaluate(
        run_dir=eval_run,
        delays=[OTHER_DELAY],
        n_pose_samples=1,
        max_frames=1,
        device="cpu",
        output=eval_run / "only.json",
    )
    assert [m.delay for m in only.mouth] == [OTHER_DELAY]
    assert only.mouth[0].error_mm == pytest.approx(by_delay[OTHER_DELAY].error_mm)
    with pytest.raises(InputError, match=r"no mouth model with delay \[3\].*\[6, 18\]"):
        E.evaluate(run_dir=eval_run, delays=[3], device="cpu", output=eval_run / "x.json")


def test_mouth_prediction_matches_training_validation(eval_run, single_face_dataset):
    """On the frames train_mouth validates (the val split less its last ``delay``), raw APC
    features give exactly the val_mm its checkpoint records: same alignment, same units."""
    from lsp_models.infer.config import AnimateConfig
    from lsp_models.infer.loading import load_models
    from lsp_models.infer.predict import features_from_mel
    from lsp_models.train.checkpoint import load_checkpoint

    data = read_val(single_face_dataset)
    models = load_models(eval_run, device=torch.device("cpu"), renderer=False)
    config = dataclasses.replace(AnimateConfig(), lle_blend=0.0)
    pred = predict_val(models, features_from_mel(models, data.mel, config=config), data.val)
    keep = len(data.val) - models.delay
    ok = data.valid[data.val][:keep]
    got = M.point_distance(pred[:keep][ok], data.mouth[data.val][:keep][ok].astype(np.float64))
    recorded = load_checkpoint(eval_run / "mouth" / "mouth.pt", stage="mouth")["metrics"]
    assert got == pytest.approx(recorded["val_mm"], rel=1e-5)


def test_cli_prints_the_tables(lsp, eval_run, tmp_path):
    out = tmp_path / "report.json"
    args = ["--max-frames", "2", "--seeds", "1", "--device", "cpu", "--output", str(out)]
    r = lsp("eval", "--run-dir", str(eval_run), *args, "--no-progress")
    assert r.exit_code == 0, r.output
    text = " ".join(r.output.split())
    for needle in (
        "mouth:",
        "mouth_d6",
        "baseline",
        "delay 6",
        "headpose:",
        "std smp/rec",
        "|vel| anim/rec~",
        "centroid Hz smp",
        "power>2Hz",
        "yaw",
        "image:",
        "PSNR (dB)",
        "SSIM",
        str(out),
    ):
        assert needle in text, needle
    assert json.loads(out.read_text())["image"]["frames"] == 2


def _edited_dataset(src: Path, dst: Path, edit) -> Path:
    shutil.copy(src, dst)
    with h5py.File(dst, "r+") as f:
        edit(f)
    return dst


def _no_val(f: h5py.File) -> None:
    del f["split/val"]
    f.create_dataset("split/val", data=np.zeros(0, np.int64))


def _invalid_val(f: h5py.File) -> None:
    valid = f["landmarks/valid"][:]
    valid[f["split/val"][:]] = False
    f["landmarks/valid"][...] = valid


def _version(f: h5py.File) -> None:
    f.attrs["schema_version"] = 999


@pytest.mark.parametrize(
    ("edit", "error", "message"),
    [
        (_no_val, InputError, "has no val split"),
        (_invalid_val, InputError, "none of the"),
        (_version, SchemaError, "999"),
    ],
)
def test_bad_datasets(lsp, eval_run, single_face_dataset, tmp_path, edit, error, message):
    bad = _edited_dataset(single_face_dataset, tmp_path / "bad.h5", edit)
    with pytest.raises(error, match=message):
        E.evaluate(run_dir=eval_run, dataset=bad, device="cpu", output=tmp_path / "x.json")
    r = lsp(
        "eval",
        "-r",
        str(eval_run),
        "--dataset",
        str(bad),
        "--device",
        "cpu",
        "--output",
        str(tmp_path / "x.json"),
        "--no-progress",
    )
    assert r.exit_code == 1 and message in " ".join(r.output.split()), r.output
    assert not (tmp_path / "x.json").exists()


def test_missing_checkpoint_names_the_train_command(lsp, eval_run, tmp_path):
    partial = tmp_path / "run"
    shutil.copytree(eval_run, partial, ignore=shutil.ignore_patterns("renderer", "eval.json"))
    with pytest.raises(CheckpointError, match="lsp train renderer"):
        E.evaluate(run_dir=partial, device="cpu")
    r = lsp("eval", "-r", str(partial), "--device", "cpu", "--no-progress")
    assert r.exit_code == 1 and "lsp train renderer" in r.output, r.output
    assert not (partial / E.EVAL_FILE).exists()
    r = lsp("eval", "-r", str(tmp_path / "nowhere"), "--no-progress")
    assert r.exit_code == 1 and "does not exist" in r.output, r.output
