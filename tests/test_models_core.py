"""APC, manifold projection, audio-to-mouth, the training loop and `lsp train`."""

from __future__ import annotations

import dataclasses
import json
import re
import shutil
from types import SimpleNamespace

import h5py
import numpy as np
import pytest
import torch

from lsp_models.infer.manifold import project
from lsp_models.nets.apc import APC, APCConfig
from lsp_models.nets.mouth import AudioToMouth, MouthConfig
from lsp_models.train.apc import train_apc
from lsp_models.train.checkpoint import load_checkpoint
from lsp_models.train.loop import TrainConfig
from lsp_models.train.mouth import target_scale, train_mouth
from lsp_prep.errors import CheckpointError, InputError, SchemaError

TINY_APC = APCConfig(hidden=32)
TINY_MOUTH = MouthConfig(hidden=32, mlp=(32, 32), window=60, delay=18)


def n_params(m: torch.nn.Module) -> int:
    return sum(p.numel() for p in m.parameters())


def test_paper_sizes():
    apc = APC(APCConfig())
    assert len(apc.grus) == 3 and apc.grus[-1].hidden_size == 512
    assert 4.0e6 < n_params(apc) < 4.2e6  # 3 GRU layers of 512 + the 80-way head
    mouth = AudioToMouth(MouthConfig())
    assert mouth.lstm.num_layers == 3 and mouth.lstm.hidden_size == 256
    out, _ = mouth(torch.zeros(2, 240, 1024))
    assert out.shape == (2, 240, 75)
    print("parameters: apc", n_params(apc), "mouth", n_params(mouth))


def test_mouth_loss_leaves_out_frames_without_a_face():
    """Frames without a face have no target (NaN in the dataset, 0 after nan_to_num): the
    loss must not pull the model towards them."""
    torch.manual_seed(0)
    net = AudioToMouth(MouthConfig(audio_dim=6, hidden=8, n_layers=1, mlp=(8,), delay=2, window=12))
    audio, target = torch.randn(2, 12, 6), torch.randn(2, 12, 75)
    mask = torch.ones(2, 12, dtype=torch.bool)
    mask[0, 3:7] = False
    junk = target.clone()
    junk[0, 3:7] = 1e3
    a = net.losses(audio, target, mask)["l2"].item()
    assert net.losses(audio, junk, mask)["l2"].item() == pytest.approx(a, rel=1e-6)
    pred = net(audio)[0].detach()
    err = ((pred[:, 2:] - target[:, :10]) ** 2).mean(-1)
    keep = mask[:, :10]
    assert a == pytest.approx(err[keep].mean().item(), rel=1e-5)
    assert net.losses(audio, target)["l2"].item() == pytest.approx(err.mean().item(), rel=1e-5)


def test_mouth_normalise_scales_the_loss_not_the_output():
    """mouth.normalise: the model still predicts cm (its output times the scale buffer),
    the loss is in units of the scale, and the scale travels in the state dict."""
    torch.manual_seed(0)
    cfg = MouthConfig(
        audio_dim=6, hidden=8, n_layers=1, mlp=(8,), delay=0, window=12, normalise="coordinate"
    )
    net = AudioToMouth(cfg)
    assert net.scale is not None and AudioToMouth(TINY_MOUTH).scale is None
    scale = torch.linspace(0.1, 2.0, 75)
    net.scale.copy_(scale)
    plain = AudioToMouth(dataclasses.replace(cfg, normalise="none"))
    plain.load_state_dict({k: v for k, v in net.state_dict().items() if k != "scale"})
    audio, target = torch.randn(2, 12, 6), torch.randn(2, 12, 75)
    with torch.no_grad():
        torch.testing.assert_close(net(audio)[0], plain(audio)[0] * scale)
        expected = (((net(audio)[0] - target) / scale) ** 2).mean().item()
    assert net.losses(audio, target)["l2"].item() == pytest.approx(expected, rel=1e-5)
    copy = AudioToMouth(cfg)
    copy.load_state_dict(net.state_dict())
    torch.testing.assert_close(copy.scale, scale)
    with pytest.raises(
        InputError, match=re.escape("mouth.normalise must be none, global or coordinate, got 'std'")
    ):
        MouthConfig(normalise="std")  # type: ignore[arg-type]


def test_mouth_without_depth_predicts_and_learns_x_and_y_only():
    """mouth.depth=false: the z outputs are exactly 0, the loss is the mean squared error
    of x and y (the targets' z cannot move it), and the state dict is the same as with
    depth, so checkpoints of either kind load; a checkpoint's config without the key (one
    written before it existed) predicts depth as it did."""
    from lsp_prep.configtree import from_data

    torch.manual_seed(0)
    cfg = MouthConfig(audio_dim=6, hidden=8, n_layers=1, mlp=(8,), delay=2, window=12)
    flat = AudioToMouth(dataclasses.replace(cfg, depth=False))
    audio, target = torch.randn(2, 12, 6), torch.randn(2, 12, 75)
    with torch.no_grad():
        pred = flat(audio)[0]
    assert pred[..., 2::3].abs().max().item() == 0.0
    assert pred[..., 0::3].abs().min().item() > 0.0
    xy = torch.ones(75, dtype=torch.bool)
    xy[2::3] = False
    expected = ((pred[:, 2:] - target[:, :10]) ** 2)[..., xy].mean().item()
    assert flat.losses(audio, target)["l2"].item() == pytest.approx(expected, rel=1e-5)
    moved = target.clone()
    moved[..., 2::3] += 5.0
    assert flat.losses(audio, moved)["l2"].item() == pytest.approx(expected, rel=1e-6)
    deep = AudioToMouth(cfg)
    deep.load_state_dict(flat.state_dict())  # strict: no extra or missing keys
    with torch.no_grad():
        both = deep(audio)[0]
    torch.testing.assert_close(both[..., 0::3], pred[..., 0::3])
    assert both[..., 2::3].abs().min().item() > 0.0
    old = {k: v for k, v in dataclasses.asdict(cfg).items() if k != "depth"}
    assert from_data(MouthConfig, old).depth is True
    with pytest.raises(InputError, match=re.escape("mouth.depth must be true or false, got 1")):
        MouthConfig(depth=1)  # type: ignore[arg-type]


def test_target_scale_over_the_valid_train_frames():
    rng = np.random.default_rng(0)
    target = rng.normal(size=(100, 75)) * np.linspace(0.5, 3.0, 75)
    target[[5, 7]] = 1e3  # frames without a face: left out
    valid = np.ones(100, bool)
    valid[[5, 7]] = False
    person = SimpleNamespace(train=np.arange(80), valid=valid)
    rows = target[np.setdiff1d(np.arange(80), [5, 7])]
    np.testing.assert_allclose(target_scale(target, person, "coordinate"), rows.std(0), rtol=1e-5)
    rms = np.sqrt(((rows - rows.mean(0)) ** 2).mean())
    np.testing.assert_allclose(target_scale(target, person, "global"), np.full(75, rms), rtol=1e-5)


def test_apc_streaming_equals_offline():
    torch.manual_seed(0)
    apc = APC(TINY_APC).eval()
    mel = torch.randn(1, 50, 80)
    full, _ = apc.encode(mel)
    a, state = apc.encode(mel[:, :17])
    b, _ = apc.encode(mel[:, 17:], state)
    torch.testing.assert_close(torch.cat([a, b], 1), full, atol=1e-5, rtol=1e-5)


def test_projection_reproduces_database_points_and_weights_sum_to_one():
    g = torch.Generator().manual_seed(0)
    db = torch.randn(500, 16, generator=g, dtype=torch.float64)
    x = torch.cat([db[:5], torch.randn(20, 16, generator=g, dtype=torch.float64)])
    proj, w, idx = project(x, db, k=10)
    torch.testing.assert_close(proj[:5], db[:5], atol=1e-6, rtol=0)  # a point in the database
    torch.testing.assert_close(w.sum(-1), torch.ones(25, dtype=torch.float64))
    assert (idx[:5, 0] == torch.arange(5)).all()
    # near-duplicate neighbours do not blow up
    dup = torch.cat([db[:1].repeat(10, 1), db[1:]])
    p2, w2, _ = project(db[:1] + 1e-9, dup, k=10)
    assert torch.isfinite(w2).all() and torch.allclose(p2, db[:1], atol=1e-6)
    same, _, _ = project(x, db, k=10, blend=0.0)
    torch.testing.assert_close(same, x)
    with pytest.raises(InputError, match="k must be in"):
        project(x, db[:5], k=10)


@pytest.fixture(scope="module")
def apc_run(single_face_dataset, tmp_path_factory):
    """APC trained briefly on the person's own audio (as without a corpus)."""
    run = tmp_path_factory.mktemp("run")
    with pytest.warns(UserWarning, match="larger speech corpus"):
        train_apc(
            run_dir=run,
            dataset=single_face_dataset,
            model=TINY_APC,
            config=TrainConfig(
                max_steps=40, batch_size=4, lr=3e-3, lr_end=3e-4, checkpoint_every=20, log_every=5
            ),
        )
    return run


def _losses(path):
    return [json.loads(line)["total"] for line in path.read_text().splitlines()]


def test_apc_loss_goes_down(apc_run):
    loss = _losses(apc_run / "apc" / "metrics.jsonl")
    assert np.mean(loss[-2:]) < 0.8 * np.mean(loss[:2])
    ckpt = load_checkpoint(apc_run / "apc" / "apc.pt", stage="apc")
    assert ckpt["step"] == 40 and ckpt["model_config"]["hidden"] == 32
    assert APC(APCConfig(**ckpt["model_config"])).load_state_dict(ckpt["model"])


def test_mouth_trains_and_beats_nothing_worse_than_baseline(apc_run, single_face_dataset):
    result = train_mouth(
        run_dir=apc_run,
        dataset=single_face_dataset,
        model=TINY_MOUTH,
        config=TrainConfig(
            max_steps=60, batch_size=4, lr=3e-3, lr_end=3e-4, checkpoint_every=30, log_every=5
        ),
    )
    loss = _losses(apc_run / "mouth" / "metrics.jsonl")
    assert np.mean(loss[-2:]) < 0.7 * np.mean(loss[:2])
    assert {"val_mm", "baseline_mm"} <= set(result.metrics)
    assert (apc_run / "features.pt").exists()


def _train_tiny_mouth(run_dir, dataset, name: str, **model_changes) -> None:
    """Four steps of the tiny mouth model with ``model_changes``, written under RUN/NAME."""
    train_mouth(
        run_dir=run_dir,
        dataset=dataset,
        model=dataclasses.replace(TINY_MOUTH, **model_changes),
        config=TrainConfig(max_steps=4, batch_size=2, checkpoint_every=4, log_every=2),
        name=name,
    )


def test_mouth_without_depth_keeps_the_mean_depth(apc_run, single_face_dataset):
    """Trained with mouth.depth=false, the model's displacements have no depth at all: its
    target mean's z is 0 too, so animate keeps the mean shape's depth."""
    from lsp_models.infer.loading import load_mouth

    _train_tiny_mouth(apc_run, single_face_dataset, "mouth_nodepth", depth=False)
    ckpt = load_checkpoint(apc_run / "mouth_nodepth" / "mouth.pt", stage="mouth")
    assert ckpt["model_config"]["depth"] is False
    mean = np.asarray(ckpt["extra"]["target_mean"]).reshape(25, 3)
    assert (mean[:, 2] == 0).all() and (mean[:, :2] != 0).any()
    dim = ckpt["model_config"]["audio_dim"]
    net, _, _ = load_mouth(
        apc_run / "mouth_nodepth" / "mouth.pt", audio_dim=dim, device=torch.device("cpu")
    )
    with torch.no_grad():
        assert net(torch.randn(1, 30, dim))[0][..., 2::3].abs().max().item() == 0.0


def test_resume_equals_uninterrupted(single_face_dataset, tmp_path):
    cfg = TrainConfig(
        max_steps=20, batch_size=2, lr=1e-3, lr_end=1e-4, checkpoint_every=10, log_every=1
    )
    a, b = tmp_path / "a", tmp_path / "b"

    def interrupt(stage, step, total):
        if step == 10:  # right after the step-10 checkpoint
            raise KeyboardInterrupt

    with pytest.warns(UserWarning):
        train_apc(run_dir=a, dataset=single_face_dataset, model=TINY_APC, config=cfg)
        with pytest.raises(KeyboardInterrupt):
            train_apc(
                run_dir=b,
                dataset=single_face_dataset,
                model=TINY_APC,
                config=cfg,
                progress=interrupt,
            )
        result = train_apc(run_dir=b, dataset=single_face_dataset, model=TINY_APC, config=cfg)
    assert result.resumed_from == 10
    la, lb = _losses(a / "apc" / "metrics.jsonl"), _losses(b / "apc" / "metrics.jsonl")
    np.testing.assert_allclose(la, lb, rtol=1e-5)
    wa = load_checkpoint(a / "apc" / "apc.pt", stage="apc")["model"]
    wb = load_checkpoint(b / "apc" / "apc.pt", stage="apc")["model"]
    for k in wa:
        torch.testing.assert_close(wa[k], wb[k], rtol=1e-5, atol=1e-6)


def test_bad_training_inputs(tmp_path, single_face_dataset, apc_run):
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(InputError, match="no audio files"):
        train_apc(run_dir=tmp_path / "r", corpus=empty, model=TINY_APC)
    junk = tmp_path / "junk"
    junk.mkdir()
    (junk / "a.wav").write_text("not audio")
    (junk / "b.mp3").write_bytes(b"\x00" * 100)
    with pytest.raises(InputError, match="none of the 2 audio files"):
        train_apc(run_dir=tmp_path / "r", corpus=junk, model=TINY_APC)
    with pytest.raises(CheckpointError, match="stage 'apc', expected 'mouth'"):
        load_checkpoint(apc_run / "apc" / "apc.pt", stage="mouth")
    with pytest.raises(CheckpointError, match="run `lsp train apc` first"):
        train_mouth(run_dir=tmp_path / "nothing", dataset=single_face_dataset, model=TINY_MOUTH)
    old = tmp_path / "old.h5"
    shutil.copy(single_face_dataset, old)
    with h5py.File(old, "a") as f:
        del f["track/mouth_displacement"]
    with pytest.raises(SchemaError, match="prep's geometry stage"):
        train_mouth(run_dir=apc_run, dataset=old, model=TINY_MOUTH)


def test_cli_train_help_and_errors(lsp, tmp_path):
    for args in (["train", "--help"], ["train", "apc", "--help"], ["train", "mouth", "--help"]):
        r = lsp(*args)
        assert r.exit_code == 0 and "Usage" in r.output
    r = lsp("train", "apc", "-r", str(tmp_path), "--corpus", str(tmp_path / "x"))
    assert r.exit_code == 1 and "corpus folder does not exist" in r.output
    r = lsp("train", "apc", "-r", str(tmp_path), "--preset", "huge")
    assert r.exit_code == 1 and "unknown preset 'huge'" in r.output


def test_headpose_trains_on_the_person(lsp, apc_run, single_face_dataset):
    from lsp_models.nets.headpose import HeadPoseConfig
    from lsp_models.train.headpose import pose_features, train_headpose

    small = HeadPoseConfig.cpu_small(window=64)
    result = train_headpose(
        run_dir=apc_run,
        dataset=single_face_dataset,
        model=small,
        config=TrainConfig(
            max_steps=60, batch_size=4, lr=3e-3, lr_end=3e-4, checkpoint_every=30, log_every=5
        ),
    )
    loss = _losses(apc_run / "headpose" / "metrics.jsonl")
    assert loss[-1] < loss[0] - 0.3  # Gaussian NLL per dimension
    ckpt = load_checkpoint(result.checkpoint, stage="headpose")
    assert ckpt["model_config"]["audio_dim"] == 2 * TINY_APC.hidden
    from lsp_models.train.data import load_person

    feats = pose_features(load_person(single_face_dataset))
    assert feats.shape[1] == 12 and np.isfinite(feats).all()
    r = lsp("train", "headpose", "--help")
    assert r.exit_code == 0 and "head-pose" in r.output


@pytest.mark.parametrize(
    ("item", "message"),
    [
        ("mouth_train.max_steps=abc", "mouth_train.max_steps=abc: expected an int"),
        ("mouth_train.precision=fp8", "expected one of fp32, bf16, fp16"),
        ("renderer_data.augment=yes", "expected true or false"),
        ("renderer.generator.size=64", "renderer.generator has"),
        ("generator.image_size=64", "bad override 'generator.image_size=64'"),
        ("renderer=1", "renderer is a section"),
    ],
)
def test_preset_overrides_are_typed(item, message):
    from lsp_models.config import load_preset

    with pytest.raises(InputError, match=re.escape(message)):
        load_preset("cpu-small", [item])


def test_presets_are_instances_of_the_config_tree():
    from lsp_models.config import ModelsConfig, load_preset, preset_names
    from lsp_prep.configtree import from_data, to_data

    assert {"paper", "cpu-small"} <= set(preset_names())
    for name in preset_names():
        cfg = load_preset(name)
        assert from_data(ModelsConfig, to_data(cfg)) == cfg
    sets = ["renderer.generator.channels=[16,32,32,32,32]", "headpose.window=64", "apc.hidden=8"]
    cfg = load_preset("cpu-small", sets)
    assert cfg.renderer.generator.channels == (16, 32, 32, 32, 32)
    assert cfg.headpose.window == 64 and cfg.apc.hidden == 8
    with pytest.raises(InputError, match="valid keys are"):
        from_data(ModelsConfig, {"mouth": {"hiden": 3}})


def test_mouth_trains_on_augmented_copies(apc_run, single_face_dataset):
    """mouth.augment: seeded copies of the person's speech, each its own APC features
    beside the original's; the setting is kept in the checkpoint."""
    from lsp_models.train.apc import augmented_features, person_apc_features
    from lsp_models.train.augment import SpeechAugment

    person, feats = person_apc_features(apc_run, single_face_dataset)
    augment = SpeechAugment(copies=2, warp=0.1, gain_db=6.0)
    copies = augmented_features(apc_run, person.mel, augment, seed=0)
    assert [c.shape for c in copies] == [feats.shape, feats.shape]
    assert min(np.abs(c - feats).mean() for c in copies) > 1e-3
    assert np.abs(copies[0] - copies[1]).mean() > 1e-3
    again = augmented_features(apc_run, person.mel, augment, seed=0)
    np.testing.assert_array_equal(again[1], copies[1])
    assert augmented_features(apc_run, person.mel, SpeechAugment(), seed=0) == []
    _train_tiny_mouth(apc_run, single_face_dataset, "mouth_aug", augment=augment)
    ckpt = load_checkpoint(apc_run / "mouth_aug" / "mouth.pt", stage="mouth")
    assert ckpt["model_config"]["augment"]["copies"] == 2
