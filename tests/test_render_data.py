"""The renderer's training data loader on a real prepped clip (single_face.mp4); checks that
need no real frames run on the synthetic dataset (conftest)."""

from __future__ import annotations

import shutil
import time

import cv2
import h5py
import numpy as np
import pytest
import torch

from lsp_models.train.render_data import (
    RenderDataConfig,
    global_batch,
    photometric,
    renderer_batches,
)
from lsp_models.train.render_frames import (
    MIN_IMAGE_SIZE,
    RendererFrames,
    SampleKey,
    load_candidates,
    similarity,
    to_size,
    training_frames,
)
from lsp_prep.errors import InputError
from lsp_prep.featuremap import draw_feature_map, face_points2d

pytestmark = pytest.mark.usefixtures("one_thread")

S = 128
BATCH = 4
STEPS = 4
AUG = RenderDataConfig(workers=0)


def run(path, **kw) -> list[dict[str, torch.Tensor]]:
    args = dict(
        frames=training_frames(path),
        image_size=S,
        batch_size=BATCH,
        seed=7,
        start_step=0,
        max_steps=STEPS,
        config=AUG,
    )
    args.update(kw)
    return list(renderer_batches(path, **args))


def assert_same(a: list[dict], b: list[dict]) -> None:
    assert len(a) == len(b)
    for x, y in zip(a, b, strict=True):
        assert x.keys() == y.keys()
        for k in x:
            assert torch.equal(x[k], y[k]), k


@pytest.fixture(scope="module")
def reference(single_face_dataset) -> list[dict[str, torch.Tensor]]:
    """Augmented batches of steps 0..3 read in the main process."""
    return run(single_face_dataset)


def test_batches_shapes_and_content(single_face_dataset, reference):
    assert len(reference) == STEPS
    b = reference[0]
    assert b["feature_map"].shape == (BATCH, S, S) and b["feature_map"].dtype == torch.uint8
    assert b["real"].shape == (BATCH, S, S, 3) and b["real"].dtype == torch.uint8
    assert b["gain"].dtype == b["bias"].dtype == torch.float32
    assert b["frame"].dtype == torch.int64
    train = set(training_frames(single_face_dataset).tolist())
    for b in reference:
        assert set(b["frame"].tolist()) <= train
        assert len(set(b["frame"].tolist())) == BATCH  # no repeats within a batch
        assert (b["feature_map"] > 200).flatten(1).sum(1).min() > 100  # every map has ink
        assert b["real"].float().std() > 10
        assert ((b["gain"] - 1).abs() <= AUG.gain + 1e-6).all()
        assert (b["bias"].abs() <= AUG.bias + 1e-6).all()
    # steps differ
    assert not torch.equal(reference[0]["frame"], reference[1]["frame"])


def test_same_batches_with_workers(single_face_dataset, reference):
    two = run(single_face_dataset, config=RenderDataConfig(workers=2, prefetch=2))
    assert_same(reference, two)


def test_resume_gives_the_uninterrupted_batches(single_face_dataset, reference):
    resumed = run(single_face_dataset, start_step=3)
    assert_same(reference[3:], resumed)
    assert run(single_face_dataset, start_step=STEPS) == []


def test_ranks_together_see_the_global_batch(single_face_dataset, reference):
    parts = [run(single_face_dataset, rank=r, world_size=2) for r in (0, 1)]
    for step, whole in enumerate(reference):
        for k in whole:
            assert parts[0][step][k].shape[0] == BATCH // 2
            joined = torch.cat([parts[0][step][k], parts[1][step][k]])
            assert torch.equal(joined, whole[k]), (step, k)


def test_batches_follow_global_batch(single_face_dataset, reference):
    frames = training_frames(single_face_dataset)
    for step in (0, 2):
        keys = global_batch(frames, seed=7, step=step, batch_size=BATCH, config=AUG)
        b = reference[step]
        assert b["frame"].tolist() == [k.frame for k in keys]
        assert torch.allclose(b["gain"], torch.tensor([k.gain for k in keys]))
        assert torch.allclose(b["bias"], torch.tensor([k.bias for k in keys]))
    other = global_batch(frames, seed=8, step=0, batch_size=BATCH, config=AUG)
    assert other != global_batch(frames, seed=7, step=0, batch_size=BATCH, config=AUG)


@pytest.mark.parametrize("size", [512, 128])
def test_unaugmented_sample_is_the_stored_frame_and_its_map(single_face_dataset, size):
    (batch,) = run(
        single_face_dataset, image_size=size, max_steps=1, config=RenderDataConfig(augment=False)
    )
    assert torch.equal(batch["gain"], torch.ones(BATCH))
    assert torch.equal(batch["bias"], torch.zeros(BATCH))
    with h5py.File(single_face_dataset, "r") as f:
        for row, i in enumerate(batch["frame"].tolist()):
            rgb = cv2.cvtColor(cv2.imdecode(f["frames"][i], cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)
            if size < 512:
                rgb = cv2.resize(rgb, (size, size), interpolation=cv2.INTER_AREA)
            assert np.array_equal(batch["real"][row].numpy(), rgb)
            face = face_points2d(
                f["track/points3d"][i],
                f["track/rotation"][i],
                f["track/translation"][i],
                f["camera/intrinsics"][i],
            )
            sh = f["shoulders/points2d"][i].astype(np.float64)
            k = size / 512
            fmap = draw_feature_map((face + 0.5) * k - 0.5, (sh + 0.5) * k - 0.5, size=size)
            assert np.array_equal(batch["feature_map"][row].numpy(), fmap)


def ink_centroid(img: np.ndarray) -> np.ndarray:
    w = img.astype(np.float64)
    ys, xs = np.mgrid[: img.shape[0], : img.shape[1]]
    return np.array([(xs * w).sum(), (ys * w).sum()]) / w.sum()


def test_augmentation_moves_map_and_frame_together(single_face_dataset):
    size = 256
    ds = RendererFrames(single_face_dataset, image_size=size)
    frame = int(training_frames(single_face_dataset)[10])
    key = SampleKey(frame, zoom=1.08, angle_deg=6.0, shift_x=0.05, shift_y=-0.04)
    plain, moved = ds[SampleKey(frame)], ds[key]
    ds.close()
    # the similarity at `size`: pixel centres kept, x_S = (x + 0.5) * size / 512 - 0.5
    k = size / 512
    d = np.array([[k, 0, 0.5 * k - 0.5], [0, k, 0.5 * k - 0.5], [0, 0, 1]])
    m = (d @ similarity(key, 512) @ np.linalg.inv(d))[:2]
    warp = dict(flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT_101)

    # the map's ink sits where the plain map's ink lands under the similarity
    want = cv2.warpAffine(plain["feature_map"].numpy(), m, (size, size), **warp)
    got = moved["feature_map"].numpy()
    assert np.abs(ink_centroid(got) - ink_centroid(want)).max() < 0.5
    assert np.abs(ink_centroid(got) - ink_centroid(plain["feature_map"].numpy())).max() > 5
    # and on the mouth corner transformed by hand
    corner = ds.face2d[frame, 46]
    moved_corner = to_size(
        similarity(key, 512)[:2, :2] @ corner + similarity(key, 512)[:2, 2], 512, size
    )
    x, y = np.round(moved_corner).astype(int)
    assert got[y - 1 : y + 2, x - 1 : x + 2].max() > 100

    # the frame moved by the same similarity (interior: the border is reflected)
    want_rgb = cv2.warpAffine(plain["real"].numpy(), m, (size, size), **warp).astype(float)
    got_rgb = moved["real"].numpy().astype(float)
    inner = np.s_[24:-24, 24:-24]
    err = np.abs(got_rgb - want_rgb)[inner].mean()
    unmoved = np.abs(got_rgb - plain["real"].numpy())[inner].mean()
    assert err < 2.0 and unmoved > 5 * err, (err, unmoved)


def test_candidates_are_area_shrunk(single_face_dataset):
    full = load_candidates(single_face_dataset, 512)
    with h5py.File(single_face_dataset, "r") as f:
        assert np.array_equal(full, f["candidates/images"][:])
    small = load_candidates(single_face_dataset, 128)
    assert small.shape == (4, 128, 128, 3) and small.dtype == np.uint8
    want = cv2.resize(full[2], (128, 128), interpolation=cv2.INTER_AREA)
    assert np.array_equal(small[2], want)


def test_photometric_same_for_real_and_candidates():
    g = torch.Generator().manual_seed(0)
    real = torch.rand(3, 3, 8, 8, generator=g) * 2 - 1
    cands = torch.rand(3, 4, 3, 8, 8, generator=g) * 2 - 1
    gain = torch.tensor([0.9, 1.0, 1.1])
    bias = torch.tensor([0.05, 0.0, -0.03])
    out_real, out_cands = photometric(real, gain, bias), photometric(cands, gain, bias)
    assert out_real.shape == real.shape and out_cands.shape == cands.shape
    for b in range(3):
        want = ((real[b] + 1) * gain[b] - 1 + bias[b]).clamp(-1, 1)
        assert torch.allclose(out_real[b], want, atol=1e-6)
        for c in range(4):  # every candidate gets its sample's gain and bias, as the real frame
            alone = photometric(cands[b : b + 1, c], gain[b : b + 1], bias[b : b + 1])[0]
            assert torch.equal(out_cands[b, c], alone)
    # sample 1 has gain 1 and bias 0: untouched
    assert torch.allclose(out_real[1], real[1], atol=1e-6)
    assert torch.allclose(out_cands[1], cands[1], atol=1e-6)
    assert not torch.allclose(out_real[0], real[0], atol=1e-3)
    # clamped
    bright = photometric(
        torch.ones(2, 3, 4, 4) * 0.9, torch.tensor([1.5, 1.5]), torch.tensor([0.5, 0.5])
    )
    assert torch.equal(bright, torch.ones_like(bright))
    dark = photometric(-torch.ones(1, 3, 2, 2), torch.tensor([0.5]), torch.tensor([-0.5]))
    assert torch.equal(dark, -torch.ones_like(dark))
    with pytest.raises(InputError, match=r"\(B, \.\.\., 3, H, W\)"):
        photometric(torch.zeros(2, 4, 8, 8), gain[:2], bias[:2])
    with pytest.raises(InputError, match="gain and bias"):
        photometric(real, gain[:2], bias[:2])


def test_training_frames_skip_invalid(single_face_dataset, tmp_path):
    path = tmp_path / "edited.h5"
    shutil.copy(single_face_dataset, path)
    train = training_frames(path)
    assert len(train) > 20
    with h5py.File(path, "r+") as f:
        valid = f["landmarks/valid"][:]
        valid[train[[3, 5]]] = False
        f["landmarks/valid"][...] = valid
        rot = f["track/rotation"][:]
        rot[train[10]] = np.nan
        f["track/rotation"][...] = rot
        val = f["split/val"][:]
    kept = training_frames(path)
    assert set(train.tolist()) - set(kept.tolist()) == {int(train[i]) for i in (3, 5, 10)}
    assert np.array_equal(training_frames(path, "val"), np.sort(val))
    # the loader only ever picks kept frames
    for b in run(path, frames=kept, batch_size=8):
        assert set(b["frame"].tolist()) <= set(kept.tolist())
    with pytest.raises(InputError, match="split must be one of"):
        training_frames(path, "test")


def test_early_stop_shuts_workers_down(synthetic_dataset):
    gen = renderer_batches(
        synthetic_dataset,
        frames=training_frames(synthetic_dataset),
        image_size=64,
        batch_size=2,
        seed=0,
        start_step=0,
        max_steps=1000,
        config=RenderDataConfig(workers=2),
    )
    assert next(gen)["real"].shape == (2, 64, 64, 3)
    t = time.perf_counter()
    gen.close()
    assert time.perf_counter() - t < 10


@pytest.mark.parametrize(
    ("kw", "match"),
    [
        ({"batch_size": 3, "world_size": 2}, "divisible by world_size"),
        ({"frames": np.array([], np.int64)}, "non-empty"),
        ({"frames": np.array([0, 100_000])}, "must lie in"),
        ({"frames": np.array([0.0, 1.0])}, "integer frame indices"),
        ({"image_size": 600}, f"between {MIN_IMAGE_SIZE} and the dataset's crop side 512"),
        ({"image_size": 16}, f"between {MIN_IMAGE_SIZE}"),
        ({"image_size": 128.0}, "image_size must be an integer"),
        ({"rank": 2, "world_size": 2}, "rank must be in 0 .. 1"),
        ({"seed": -1}, "seed must be an integer >= 0"),
        ({"batch_size": 0}, "batch_size must be an integer >= 1"),
    ],
)
def test_bad_loader_arguments(single_face_dataset, kw, match):
    with pytest.raises(InputError, match=match):
        run(single_face_dataset, **kw)


@pytest.mark.parametrize(
    ("kw", "match"),
    [
        ({"workers": -1}, "renderer_data.workers"),
        ({"prefetch": 0}, "renderer_data.prefetch"),
        ({"augment": 1}, "renderer_data.augment"),
        ({"scale": 0.7}, "renderer_data.scale"),
        ({"rotate_deg": float("nan")}, "renderer_data.rotate_deg"),
        ({"gain": 1.0}, "renderer_data.gain"),
        ({"bias": -0.1}, "renderer_data.bias"),
    ],
)
def test_bad_config(kw, match):
    with pytest.raises(InputError, match=match):
        RenderDataConfig(**kw)


def test_bad_candidate_size(synthetic_dataset):
    with pytest.raises(InputError, match="never enlarged"):
        load_candidates(synthetic_dataset, 1024)
