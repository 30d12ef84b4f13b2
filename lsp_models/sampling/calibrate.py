"""The range calibration of ``HeadPoseConfig.range_calibration``: a per-axis sigma scale and
a per-axis gain for the samplers, measured on the training data.

Why (issue 12 item 6; README, head motion): measured on cpu-small over two clips and four
training seeds, (1) teacher-forced on the train split the pose half's residuals are
0.6-0.95x the sigma the model predicts: it learnt its sigma with a quarter of its history
channels hidden (``pose_dropout``), which the samplers never hide, so they draw too much
noise; (2) even the mean path (temperature 0) of a free run swings up to 3x the recorded
range or 0.7x of it, by training seed: small differences in the learnt dynamics give large
differences in the free-running range. The sigma scale corrects the first where it arises
(the one-step-ahead error without dropout); the gain, measured on a free run over the
training audio with that scale, the second, on what the samplers return only: the
dynamics, the spectrum and the fed-back poses stay the model's own.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, replace

import numpy as np
import torch
from torch import Tensor

from lsp_models.eval.metrics import pose_statistics
from lsp_models.nets.headpose import HeadPoseModel
from lsp_models.sampling import sample_fast

CALIBRATION_SEED = 20211
"""Generator seed of the calibration's free runs (none of ``lsp eval``'s seeds 0, 1, 2)."""
CALIBRATION_CHAINS = 8
"""Free runs sampled side by side (one batch); their statistics are averaged."""
MAX_GAIN = 4.0
"""Sigma scale and gain are kept within ``[1 / MAX_GAIN, MAX_GAIN]``: a model that has
frozen or exploded is not hidden by the calibration."""


@dataclass(frozen=True)
class Calibration:
    """What :func:`calibrate` measured, per axis of the pose half (pitch, yaw, roll, x, y, z)."""

    sigma_scale: np.ndarray
    """RMS of the teacher-forced residuals in units of the predicted sigma."""
    gain: np.ndarray
    """``1 / sqrt(std * speed)``: one scale cannot fix a range and a speed that are off by
    different factors; the geometric mean leaves them equally far off (in log) after it."""
    std: np.ndarray
    """Free run with the sigma scale, before the gain: std / the recorded std."""
    speed: np.ndarray
    """The same for the mean |frame-to-frame change|."""


@torch.no_grad()
def calibrate(
    model: HeadPoseModel,
    audio: Tensor,
    poses: Tensor,
    *,
    frames: np.ndarray,
    history: Tensor,
    valid: np.ndarray,
    temperature: float,
    velocity: Tensor | None,
) -> Calibration:
    """Measure the sigma scale and the gain of ``model`` on its training data.

    Args:
        model: the head-pose model; measured on a float32 CPU copy (its calibration, if
            any, ignored).
        audio: (N, A) the audio features of the clip's frames.
        poses: (N, P) the normalised pose features of the clip's frames (as trained on).
        frames: the training frames, ascending: teacher-forced as one sequence, then
            free-run over their audio.
        history: (H, P) the warm start of the free run (animate's: the last training frames'
            poses, :func:`lsp_models.infer.loading.pose_history`).
        valid: (N,) the frames whose recorded pose counts.
        temperature: the sigma scale the samplers are calibrated for.
        velocity: what the samplers feed back velocities with
            (:func:`lsp_models.sampling.velocity_map`), as sampling uses it for this
            model (``velocity_feedback``), or None.
    """
    # a float32 CPU copy with the calibration's buffers, whatever the model's config
    net = HeadPoseModel(replace(model.config, range_calibration=True)).eval()
    net.load_state_dict(
        {k: v for k, v in model.state_dict().items() if k not in ("sigma_scale", "pose_gain")},
        strict=False,
    )
    assert net.sigma_scale is not None
    h = model.config.pose_dim // 2
    audio, poses = audio.float().cpu(), poses.float().cpu()
    ok = np.asarray(valid, bool)
    # one-step-ahead residuals in units of sigma, teacher-forced, without dropout
    idx = frames[frames > 0]
    t, t_prev = torch.from_numpy(idx), torch.from_numpy(idx - 1)
    mean, nls = net.predict(poses[t_prev][None], audio[t][None])  # (1, T, P) each
    z = ((poses[t] - mean[0]) * nls[0].exp())[:, :h].double().numpy()
    pairs = ok[idx] & ok[idx - 1]
    scale = np.clip(np.sqrt((z[pairs] ** 2).mean(0)), 1 / MAX_GAIN, MAX_GAIN)
    net.sigma_scale[:h] = torch.from_numpy(scale)
    # a free run over the training audio, against the recorded poses
    B, T, f = CALIBRATION_CHAINS, len(frames), torch.from_numpy(frames)
    chains = sample_fast(
        net,
        audio[f][None].expand(B, T, -1),
        history=history.float().cpu()[None].expand(B, -1, -1),
        temperature=temperature,
        generator=torch.Generator().manual_seed(CALIBRATION_SEED),
        velocity=velocity,
    )
    # pose_statistics' units (degrees, mm) cancel in the ratios: both sides are normalised
    rec = pose_statistics(poses[f, :h].double().numpy(), ok[frames])
    smp = [pose_statistics(c[:, :h].double().numpy()) for c in chains]
    std = np.mean([s["std"] for s in smp], 0) / rec["std"]
    speed = np.mean([s["mean_abs_velocity"] for s in smp], 0) / rec["mean_abs_velocity"]
    gain = np.clip(1 / np.sqrt(std * speed), 1 / MAX_GAIN, MAX_GAIN)
    return Calibration(sigma_scale=scale, gain=gain, std=std, speed=speed)


def apply(model: HeadPoseModel, calibration: Calibration | None) -> None:
    """Write ``calibration`` into the model's buffers (None: the identity)."""
    assert model.sigma_scale is not None and model.pose_gain is not None, (
        "the model has no calibration buffers: HeadPoseConfig.range_calibration is off"
    )
    h = model.config.pose_dim // 2
    model.sigma_scale.fill_(1.0)
    model.pose_gain.fill_(1.0)
    if calibration is not None:
        model.sigma_scale[:h] = torch.from_numpy(calibration.sigma_scale)
        model.pose_gain.copy_(torch.from_numpy(calibration.gain))


def uncalibrated(model: HeadPoseModel) -> HeadPoseModel:
    """A copy of ``model`` that samples as it would without its calibration."""
    plain = copy.deepcopy(model)
    if plain.sigma_scale is not None and plain.pose_gain is not None:
        apply(plain, None)
    return plain
