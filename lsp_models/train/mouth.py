"""``lsp train mouth``: audio-to-mouth on the person's train split."""

from __future__ import annotations

import dataclasses
import warnings
from pathlib import Path

import numpy as np
import torch

from lsp_models.nets.mouth import AudioToMouth, MouthConfig
from lsp_models.train.apc import augmented_features, build_feature_database, person_apc_features
from lsp_models.train.data import PersonData
from lsp_models.train.device import join_process_group, pick_device
from lsp_models.train.loop import TrainConfig, rank_slice, world
from lsp_models.train.stage import StageResult, record_dataset, run_stage
from lsp_prep.errors import InputError
from lsp_prep.progress import ProgressFn


def target_scale(target: np.ndarray, person: PersonData, how: str) -> np.ndarray:
    """Per-coordinate scale (out_dim,) float32 of the targets (N, out_dim) over the valid
    train frames for :attr:`MouthConfig.normalise` ``how`` (global or coordinate)."""
    rows = target[person.train][person.valid[person.train]]
    dev = rows - rows.mean(0)
    if how == "global":
        scale = np.full(rows.shape[1], np.sqrt((dev**2).mean()))
    else:
        scale = dev.std(0)
    return np.maximum(scale, 1e-6).astype(np.float32)


def train_mouth(
    *,
    run_dir: Path,
    dataset: Path,
    model: MouthConfig = MouthConfig(),
    config: TrainConfig = TrainConfig(),
    device: str = "auto",
    resume: bool = True,
    progress: ProgressFn | None = None,
    name: str = "mouth",
) -> StageResult:
    """Train audio-to-mouth on the person's train split; report val error beside the
    predict-the-mean baseline.

    ``name`` is the checkpoint's folder: RUN/mouth/ is the model animate uses; another
    name (e.g. ``mouth_d0`` with ``model.delay=0``) trains a variant beside it, which
    ``lsp eval`` reports per delay, and leaves the feature database alone.
    """
    if not name.startswith("mouth") or "/" in name or "\\" in name:
        raise InputError(f"mouth model name {name!r} must start with 'mouth' (e.g. mouth_d0)")
    person, feats = person_apc_features(run_dir, dataset)  # (N, 2H) APC features
    # the original, then the augmented copies (model.augment): each window reads one
    sources = [feats, *augmented_features(run_dir, person.mel, model.augment, seed=config.seed)]
    record_dataset(run_dir, dataset)
    model = dataclasses.replace(model, audio_dim=feats.shape[1])
    target = np.nan_to_num(person.mouth.reshape(len(person.mouth), -1))  # (N, 75)
    target_mean = target[person.train][person.valid[person.train]].mean(0)
    if not model.depth:
        target_mean[2::3] = 0.0  # the model predicts no depth: the mouth keeps the mean's
    dev = join_process_group(pick_device(device))
    torch.manual_seed(config.seed)
    net = AudioToMouth(model).to(dev)
    if net.scale is not None:
        net.scale.copy_(torch.from_numpy(target_scale(target, person, model.normalise)))
    train_idx = person.train
    w = min(model.window, len(train_idx))
    if w <= model.delay:
        raise InputError(
            f"{dataset}: the train split has {len(train_idx)} frames, fewer than the "
            f"{model.delay + 1} the mouth model's delay needs"
        )

    def batch_fn(step: int):
        rng = np.random.default_rng([config.seed, step])
        starts = train_idx[0] + rng.integers(0, len(train_idx) - w + 1, config.batch_size)
        # drawn after the starts, and only with copies: without, the batches are as before
        pick = rng.integers(0, len(sources), config.batch_size) if len(sources) > 1 else None
        part = rank_slice(config.batch_size)
        starts = starts[part]
        picked = np.zeros(len(starts), np.int64) if pick is None else pick[part]
        a = np.stack([sources[v][s : s + w] for v, s in zip(picked, starts, strict=True)])
        y = np.stack([target[s : s + w] - target_mean for s in starts])
        m = np.stack([person.valid[s : s + w] for s in starts])  # no face: no target
        return tuple(torch.from_numpy(x).to(dev) for x in (a, y, m))

    def loss_fn(batch):
        losses = net.losses(*batch)
        return {**losses, "total": losses["l2"]}

    def evaluate() -> dict[str, float]:
        """Val error (mean point distance, cm and mm) against the mean-prediction baseline."""
        val = person.val
        if len(val) <= model.delay or not person.valid[val][: len(val) - model.delay].any():
            return {}  # a val split within the look-ahead (a clip of a second or two)
        net.eval()
        with torch.no_grad():
            pred, _ = net(torch.from_numpy(feats[val][None]).to(dev))
        net.train()
        d = model.delay
        p = pred[0].cpu().numpy()[d:] + target_mean
        t = target[val][: len(val) - d]
        ok = person.valid[val][: len(val) - d]
        dist = np.linalg.norm((p - t).reshape(len(p), -1, 3), axis=-1)[ok].mean()
        base = np.linalg.norm((target_mean - t).reshape(len(t), -1, 3), axis=-1)[ok].mean()
        return {"val_mm": float(dist * 10), "baseline_mm": float(base * 10)}

    if len(person.val) <= model.delay:
        warnings.warn(
            f"the val split has {len(person.val)} frames, no more than the mouth's look-ahead "
            f"({model.delay}): no validation error is measured (prep a longer clip)",
            stacklevel=2,
        )
    result = run_stage(
        "mouth",
        net,
        run_dir=run_dir,
        model_config=model,
        config=config,
        batch_fn=batch_fn,
        loss_fn=loss_fn,
        extra={"target_mean": target_mean},
        resume=resume,
        progress=progress,
        before_save=lambda s: s.metrics.update(evaluate()),
        folder=name,
    )
    if world()[0] == 0 and name == "mouth":
        build_feature_database(run_dir, person, feats)  # the APC features computed above
    return dataclasses.replace(result, metrics={**result.metrics, **evaluate()})
