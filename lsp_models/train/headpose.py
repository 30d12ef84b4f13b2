"""``lsp train headpose``: the probabilistic head-pose model on the person's poses."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import torch

from lsp_models.constants import SAMPLING_TEMPERATURE
from lsp_models.eval.metrics import POSE_DIMS
from lsp_models.nets.headpose import HeadPoseConfig, HeadPoseModel
from lsp_models.sampling import velocity_map
from lsp_models.sampling.calibrate import apply as apply_calibration
from lsp_models.sampling.calibrate import calibrate
from lsp_models.train.apc import person_apc_features
from lsp_models.train.data import PersonData
from lsp_models.train.device import join_process_group, pick_device
from lsp_models.train.loop import TrainConfig, TrainState, rank_slice
from lsp_models.train.stage import StageResult, record_dataset, run_stage
from lsp_prep.camera import rotvec_to_euler_xyz
from lsp_prep.errors import InputError
from lsp_prep.progress import ProgressFn


def pose_features(person: PersonData) -> np.ndarray:
    """Head-pose features (N, 12): pitch, yaw, roll (radians), translation minus its mean
    over the train split (cm), then their per-frame differences (velocity)."""
    euler = np.unwrap(rotvec_to_euler_xyz(person.rotation.astype(np.float64)), axis=0)
    trans = person.translation - person.translation[person.train].mean(0)
    pose = np.concatenate([euler, trans], axis=1)
    vel = np.diff(pose, axis=0, prepend=pose[:1])
    return np.concatenate([pose, vel], axis=1).astype(np.float32)


def train_headpose(
    *,
    run_dir: Path,
    dataset: Path,
    model: HeadPoseConfig = HeadPoseConfig(),
    config: TrainConfig = TrainConfig(),
    device: str = "auto",
    resume: bool = True,
    progress: ProgressFn | None = None,
) -> StageResult:
    """Train the probabilistic head-pose model (Gaussian NLL, teacher forcing) on windows
    of the train split; features are normalised by their train-split mean and std. With
    ``model.range_calibration`` every checkpoint is calibrated first
    (:func:`~lsp_models.sampling.calibrate.calibrate` on a free run over the train split's
    audio, at the default sampling temperature; two gains per axis with
    ``model.range_slow_frames``)."""
    person, audio = person_apc_features(run_dir, dataset)  # (N, 2H) APC features
    record_dataset(run_dir, dataset)
    model = dataclasses.replace(model, audio_dim=audio.shape[1])
    pose = pose_features(person)
    p_mean, p_std = pose[person.train].mean(0), pose[person.train].std(0) + 1e-6
    pose = (pose - p_mean) / p_std
    dev = join_process_group(pick_device(device))
    torch.manual_seed(config.seed)
    net = HeadPoseModel(model).to(dev)
    train_idx = person.train
    w = min(model.window, len(train_idx) - 1)
    if w < 8:
        raise InputError(f"{dataset}: the train split is too short for head-pose windows")

    def batch_fn(step: int):
        rng = np.random.default_rng([config.seed, step])
        starts = train_idx[0] + 1 + rng.integers(0, len(train_idx) - w, config.batch_size)
        starts = starts[rank_slice(config.batch_size)]
        prev = np.stack([pose[s - 1 : s - 1 + w] for s in starts])  # pose at t - 1
        tgt = np.stack([pose[s : s + w] for s in starts])
        aud = np.stack([audio[s : s + w] for s in starts])
        return (
            torch.from_numpy(prev).to(dev),
            torch.from_numpy(aud).to(dev),
            torch.from_numpy(tgt).to(dev),
        )

    def loss_fn(batch):
        prev, aud, tgt = batch
        m, nls = net(prev, aud)
        losses = net.loss(m, nls, tgt)
        return {**losses, "total": losses["nll"]}

    order = np.sort(train_idx)
    velocity = velocity_map(p_mean, p_std) if model.velocity_feedback else None

    def calibrate_last(state: TrainState) -> None:
        """``range_calibration``, before the last checkpoint only (eight free runs over the
        whole train split: 3.8 s of CPU for the 150 s speaker, 44 s wall at a load of 13):
        the gain (gains) into the model's buffer (buffers), with the raw ratios into the
        metrics (RUN/headpose/val.jsonl)."""
        if state.step < config.max_steps:
            return
        c = calibrate(
            net,
            torch.from_numpy(audio),
            torch.from_numpy(pose),
            frames=order,
            history=torch.from_numpy(pose[order[-net.receptive_field :]]),
            valid=person.valid,
            temperature=SAMPLING_TEMPERATURE,
            velocity=velocity,
        )
        apply_calibration(net, c)
        for name in ("gain", "std", "speed", "fast_gain"):
            values = getattr(c, name)
            if values is None:  # one band: no fast gain
                continue
            state.metrics.update(
                {f"{name}/{d}": float(v) for d, v in zip(POSE_DIMS, values, strict=True)}
            )

    return run_stage(
        "headpose",
        net,
        run_dir=run_dir,
        model_config=model,
        config=config,
        batch_fn=batch_fn,
        loss_fn=loss_fn,
        extra={"pose_mean": p_mean, "pose_std": p_std},
        resume=resume,
        progress=progress,
        before_save=calibrate_last if model.range_calibration else None,
    )
