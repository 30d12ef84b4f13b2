"""Head motion: the residual pose mean, undistorted pose dropout, the pose spectra of
``lsp eval``, and a small version of the head-motion target (sampled poses with the
recorded range and speed) on a dataset whose head wanders smoothly."""

from __future__ import annotations

import dataclasses
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import synthetic_content

from lsp_models.config import load_preset
from lsp_models.eval.pose import pose_spectrum
from lsp_models.infer.motion import smooth
from lsp_models.nets.headpose import HeadPoseConfig, HeadPoseModel
from lsp_prep.errors import InputError

pytestmark = pytest.mark.usefixtures("one_thread")


# ----------------------------------------------------------------------------- spectrum


def test_pose_spectrum_puts_sinusoids_in_their_band():
    t = np.arange(600) / 60
    pose = np.stack(
        [
            np.sin(2 * np.pi * 1.0 * t),  # 1 Hz: band 0.5-2
            np.sin(2 * np.pi * 10.0 * t),  # 10 Hz: band 6-30
            np.sin(2 * np.pi * 0.25 * t),  # 0.25 Hz: band 0-0.5
            np.zeros(600),  # still: no spectrum
            np.sin(2 * np.pi * 3.0 * t) + np.sin(2 * np.pi * 12.0 * t),  # half and half
            np.random.default_rng(0).normal(size=600),  # white: mostly above 6 Hz
        ],
        1,
    )
    s = pose_spectrum(pose)
    band, centroid = s["band_power"], s["centroid_hz"]
    assert band.shape == (6, 4) and centroid.shape == (6,)
    assert band[0, 1] > 0.99 and band[1, 3] > 0.99 and band[2, 0] > 0.99
    assert centroid[0] == pytest.approx(1.0, abs=0.02)
    assert centroid[1] == pytest.approx(10.0, abs=0.02)
    assert np.isnan(band[3]).all() and np.isnan(centroid[3])
    assert band[4, 2] == pytest.approx(0.5, abs=0.01) and band[4, 3] == pytest.approx(0.5, abs=0.01)
    assert band[5, 3] > 0.7  # white: about the bandwidth share (24 of 30 Hz)
    np.testing.assert_allclose(band[[0, 1, 2, 4, 5]].sum(1), 1.0)


def test_pose_spectrum_interpolates_invalid_frames_and_needs_four():
    t = np.arange(300) / 60
    pose = np.tile(np.sin(2 * np.pi * 1.0 * t)[:, None], (1, 6))
    valid = np.ones(300, bool)
    valid[100:110] = False
    broken = pose.copy()
    broken[100:110] = 50.0  # garbage where the track is invalid
    a, b = pose_spectrum(pose), pose_spectrum(broken, valid)
    np.testing.assert_allclose(a["centroid_hz"], b["centroid_hz"], atol=0.05)
    few = pose_spectrum(pose, np.arange(300) < 3)
    assert np.isnan(few["band_power"]).all() and np.isnan(few["centroid_hz"]).all()


# ----------------------------------------------------------------------------- model


def test_residual_mean_is_the_kept_previous_pose_plus_the_output():
    torch.manual_seed(0)
    config = HeadPoseConfig.cpu_small(reversion_frames=50.0)
    model = HeadPoseModel(config).double().eval()
    last = model.post[-1]
    torch.nn.init.zeros_(last.weight)
    torch.nn.init.zeros_(last.bias)  # the network outputs 0: the mean is the kept pose
    prev = torch.randn(2, 30, 12, dtype=torch.float64)
    audio = torch.randn(2, 30, config.audio_dim, dtype=torch.float64)
    mean, _ = model(prev, audio)
    torch.testing.assert_close(mean[..., :6], (1 - 1 / 50) * prev[..., :6])
    assert (mean[..., 6:] == 0).all()  # velocities are not residual
    plain = HeadPoseModel(HeadPoseConfig.cpu_small(pose_residual=False)).double().eval()
    torch.nn.init.zeros_(plain.post[-1].weight)
    torch.nn.init.zeros_(plain.post[-1].bias)
    assert (plain(prev, audio)[0] == 0).all()


def test_pose_dropout_zeroes_whole_channels_without_rescaling_the_rest():
    torch.manual_seed(0)
    model = HeadPoseModel(HeadPoseConfig.cpu_small(pose_dropout=0.5)).double().train()
    seen = []
    model.pose_in.register_forward_hook(lambda _m, args, _out: seen.append(args[0].detach()))
    prev = torch.randn(16, 20, 12, dtype=torch.float64) + 3.0  # never 0 by chance
    model(prev, torch.randn(16, 20, model.config.audio_dim, dtype=torch.float64))
    fed = seen[0]
    kept = (fed == prev).all(dim=1)  # (B, P): channel passed as it is
    dropped = (fed == 0).all(dim=1)
    assert (kept ^ dropped).all()  # each channel of each sequence: exact or zero
    assert 0.3 < dropped.double().mean().item() < 0.7


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("reversion_frames", 0.5, "reversion_frames must be 0 or >= 1, got 0.5"),
        ("reversion_frames", -3, "reversion_frames must be 0 or >= 1"),
        ("pose_residual", 1, "pose_residual must be true or false, got 1"),
    ],
)
def test_bad_motion_options_are_refused(field, value, message):
    with pytest.raises(InputError, match=message):
        HeadPoseConfig.cpu_small(**{field: value})


# ----------------------------------------------------------------------------- calibration


def test_checkpoints_carry_the_range_calibration_of_their_weights(trained_run, single_face_dataset):
    """The cpu-small preset calibrates two bands (headpose.range_calibration,
    range_slow_frames): the shared tiny run's checkpoint holds the slow and fast gains that
    its val.jsonl logs beside the raw ratios; recomputing the calibration from the
    checkpoint's weights and the dataset gives them again; lsp eval's raw ratios are those
    of the same model sampled without it."""
    import json

    from lsp_models.eval.data import read_val
    from lsp_models.eval.metrics import POSE_DIMS
    from lsp_models.eval.pose import eval_pose
    from lsp_models.infer.config import AnimateConfig
    from lsp_models.infer.loading import load_models
    from lsp_models.infer.predict import features_from_mel, pose_velocity
    from lsp_models.sampling.calibrate import apply, calibrate
    from lsp_models.train.apc import person_apc_features
    from lsp_models.train.headpose import pose_features

    preset = load_preset("cpu-small").headpose
    assert preset.range_calibration and preset.range_slow_frames == 30
    log = [json.loads(line) for line in (trained_run / "headpose" / "val.jsonl").open()]
    assert [entry["step"] for entry in log] == [20]
    names = ("gain", "fast_gain", "std", "speed")
    logged = {k: np.array([log[-1][f"{k}/{d}"] for d in POSE_DIMS]) for k in names}
    models = load_models(trained_run, device=torch.device("cpu"), renderer=False)
    hp = models.headpose
    assert hp.pose_gain is not None and hp.pose_gain_fast is not None
    np.testing.assert_allclose(hp.pose_gain.numpy(), logged["gain"], rtol=1e-6)
    np.testing.assert_allclose(hp.pose_gain_fast.numpy(), logged["fast_gain"], rtol=1e-6)
    assert not np.allclose(logged["gain"], 1.0)  # the calibration did something
    assert not np.allclose(logged["gain"], logged["fast_gain"], rtol=0.01)  # two gains

    person, apc = person_apc_features(trained_run, single_face_dataset)
    f32 = np.float32  # as training normalises: float32 throughout
    pose = (pose_features(person) - models.pose_mean.astype(f32)) / models.pose_std.astype(f32)
    train = np.sort(person.train)
    c = calibrate(
        hp,
        torch.from_numpy(apc),
        torch.from_numpy(pose),
        frames=train,
        history=torch.from_numpy(pose[train[-hp.receptive_field :]]),  # animate's warm start
        valid=person.valid,
        temperature=1.0,
        velocity=pose_velocity(models),
    )
    for name in names:
        np.testing.assert_allclose(getattr(c, name), logged[name], rtol=1e-5)

    data = read_val(single_face_dataset)
    feats = features_from_mel(models, data.mel, config=AnimateConfig())
    args = {
        "seeds": [0],
        "temperature": 1.0,
        "config": AnimateConfig(),
        "progress": lambda *_: None,
    }
    calibrated = eval_pose(models, single_face_dataset, feats, data, **args)
    apply(hp, None)
    plain = eval_pose(models, single_face_dataset, feats, data, **args)
    np.testing.assert_allclose(calibrated.gain, logged["gain"], rtol=1e-6)
    np.testing.assert_allclose(calibrated.gain_fast, logged["fast_gain"], rtol=1e-6)
    np.testing.assert_allclose(calibrated.raw_std_ratio, plain.std_ratio, rtol=1e-6)
    np.testing.assert_allclose(calibrated.raw_velocity_ratio, plain.velocity_ratio, rtol=1e-6)
    assert plain.gain is not None  # the buffers are there, at 1
    assert not np.allclose(calibrated.std_ratio, plain.std_ratio, rtol=0.01)


def test_lsp_eval_reports_both_gains_and_one_band_still_trains_as_before(
    trained_run, single_face_dataset, tmp_path, lsp
):
    """``lsp eval`` on the shared (two-band) run prints and writes both gains (its table's
    "range gain" and "range gain fast" rows, eval.json's gain and gain_fast). With
    ``headpose.range_slow_frames=0`` the stage calibrates one gain per axis as before this
    option: the geometric mean of the inverse raw ratios, no fast gain logged or stored,
    and lsp eval prints no fast row."""
    import json
    import shutil

    from lsp_models.eval.metrics import POSE_DIMS
    from lsp_models.infer.loading import load_models
    from lsp_models.sampling.calibrate import MAX_GAIN
    from lsp_models.train.headpose import train_headpose

    def logged(run: Path) -> dict[str, np.ndarray]:
        entry = [json.loads(line) for line in (run / "headpose" / "val.jsonl").open()][-1]
        names = ("gain", "fast_gain", "std", "speed")
        return {
            k: np.array([entry[f"{k}/{d}"] for d in POSE_DIMS])
            for k in names
            if f"{k}/{POSE_DIMS[0]}" in entry
        }

    def rows(run: Path, out: Path) -> dict[str, list[str]]:
        r = lsp(
            "eval", "-r", run, "--device", "cpu", "--max-frames", 1, "--seeds", 1, "--output", out
        )
        assert r.exit_code == 0, r.output
        cells = [
            [c.strip() for c in line.split("│")[1:8]]
            for line in r.output.splitlines()
            if "│" in line
        ]
        return {c[0]: c[1:] for c in cells}

    two = logged(trained_run)
    table = rows(trained_run, tmp_path / "two.json")
    for label, key in (("range gain", "gain"), ("range gain fast", "fast_gain")):
        assert table[label] == [format(v, ".2f") for v in two[key]], label
    pose = json.loads((tmp_path / "two.json").read_text())["pose"]
    np.testing.assert_allclose(pose["gain"], two["gain"], rtol=1e-6)
    np.testing.assert_allclose(pose["gain_fast"], two["fast_gain"], rtol=1e-6)

    run = tmp_path / "run"
    shutil.copytree(trained_run, run)
    cfg = load_preset("cpu-small", ["headpose.window=64", "headpose.range_slow_frames=0"])
    train = dataclasses.replace(cfg.headpose_train, max_steps=20, checkpoint_every=20)
    common = {"run_dir": run, "dataset": single_face_dataset, "device": "cpu", "resume": False}
    train_headpose(model=cfg.headpose, config=train, **common)
    one = logged(run)
    assert set(one) == {"gain", "std", "speed"}
    expected = np.clip(1 / np.sqrt(one["std"] * one["speed"]), 1 / MAX_GAIN, MAX_GAIN)
    np.testing.assert_allclose(one["gain"], expected, rtol=1e-6)
    hp = load_models(run, device=torch.device("cpu"), renderer=False).headpose
    assert hp.pose_gain_fast is None and "pose_gain_fast" not in hp.state_dict()
    np.testing.assert_allclose(hp.pose_gain.numpy(), one["gain"], rtol=1e-6)
    table = rows(run, tmp_path / "one.json")
    assert table["range gain"] == [format(v, ".2f") for v in one["gain"]]
    assert "range gain fast" not in table
    assert json.loads((tmp_path / "one.json").read_text())["pose"]["gain_fast"] is None


# ----------------------------------------------------------------------------- target

N_FRAMES = 1500


def wandering_dataset(path: Path, n: int = N_FRAMES) -> Path:
    """A schema-valid dataset whose head wanders smoothly (Gaussian-filtered noise, a few
    degrees and cm) with a little frame-to-frame tracker jitter; val is its last third."""
    from lsp_prep.dataset.writer import write_dataset

    content = synthetic_content(n=n, size=32)
    rng = np.random.default_rng(0)
    walk = smooth(rng.normal(size=(n, 6)), 12.0)
    walk = walk / walk.std(0) * [0.08, 0.12, 0.04, 1.0, 0.8, 1.5]  # radians, cm
    walk += rng.normal(size=(n, 6)) * [0.002, 0.002, 0.002, 0.02, 0.02, 0.05]
    fields = content["fields"]
    fields["track/rotation"] = walk[:, :3].astype(np.float32)
    fields["track/translation"] = (walk[:, 3:] + [0.0, 0.0, 60.0]).astype(np.float32)
    fields["split/train"] = np.arange(0, int(n * 0.62), dtype=np.int64)
    fields["split/val"] = np.arange(int(n * 0.66), n, dtype=np.int64)
    return write_dataset(path, **content)


def train_and_eval(run: Path, dataset: Path, overrides: list[str]):
    from lsp_models.eval.data import read_val
    from lsp_models.eval.pose import eval_pose
    from lsp_models.infer.config import AnimateConfig
    from lsp_models.infer.loading import load_models
    from lsp_models.infer.predict import features_from_mel
    from lsp_models.train.runner import RunInputs, train_stage

    config = load_preset(
        "cpu-small",
        [
            "apc_train.max_steps=2",
            "mouth_train.max_steps=2",
            "headpose_train.max_steps=150",
            "headpose.window=120",
            *overrides,
        ],
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for stage in ("apc", "mouth", "headpose"):
            train_stage(stage, config=config, inputs=RunInputs(run_dir=run, dataset=dataset))
    models = load_models(run, device=torch.device("cpu"), renderer=False)
    data = read_val(dataset)
    feats = features_from_mel(models, data.mel, config=AnimateConfig())
    return eval_pose(
        models,
        dataset,
        feats,
        data,
        seeds=[0, 1],
        temperature=0.7,
        config=AnimateConfig(),
        progress=lambda *_: None,
    )


@pytest.mark.slow
def test_sampled_motion_neither_jitters_nor_freezes_nor_drifts(tmp_path):
    """cpu-small head pose, 150 steps on 15 s of smooth wandering, sampled at 0.7 for the
    9 s of val audio (about 20 s on 2 cores). Measured with the preset's velocity feedback
    and pose dropout 0.25, before its range calibration (which now scales these samples by
    a gain per axis measured on the train audio at temperature 1, not 0.7): |velocity|
    0.65-0.90x the recorded val track, std 0.47-1.35x,
    power above 6 Hz under 1 % (before them: 0.50-0.73x, 0.18-0.83x, 1-3 %); the model
    before the residual mean (``pose_residual=false``) jittered at 4.6-12.8x the recorded
    speed with 8-30 % of its power above 6 Hz. The bounds are wide (one training run of a
    few seconds); benchmarks/headmotion.py measures the 0.8-1.25x target on real clips
    (not met on every axis, README)."""
    dataset = wandering_dataset(tmp_path / "wander.h5")
    p = train_and_eval(tmp_path / "run", dataset, [])
    std, vel = np.array(p.std_ratio), np.array(p.velocity_ratio)
    assert ((vel > 0.35) & (vel < 2.0)).all(), f"|velocity| ratios {vel}"
    assert ((std > 0.15) & (std < 2.5)).all(), f"std ratios {std}"
    fast = np.array(p.sampled["band_power"])[:, -1]  # share above 6 Hz, per axis
    assert (fast < 0.05).all(), f"power above 6 Hz {fast}"
    anim = np.array(p.animated["mean_abs_velocity"])
    assert (anim <= np.array(p.sampled["mean_abs_velocity"])).all()  # smoothing slows
