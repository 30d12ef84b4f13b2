"""What every head-pose sampler shares: the warm start, one Gaussian draw, the velocities
fed back, argument checks."""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

from lsp_models.nets.headpose import HeadPoseConfig, HeadPoseModel
from lsp_prep.errors import InputError


def check_temperature(temperature: object) -> None:
    if not (isinstance(temperature, (int, float)) and temperature >= 0):
        raise InputError(f"temperature must be a number >= 0, got {temperature!r}")


def warm_start(history: Tensor, receptive_field: int, config: HeadPoseConfig) -> Tensor:
    """The pose inputs of the ``receptive_field`` frames ending at frame 0: (B, R, P).

    history (B, P) or (B, H, P), oldest first: its last pose is frame 0's input (the pose of
    frame -1); older inputs are earlier history, then its first pose repeated.
    """
    if history.dim() == 2:
        history = history[:, None]
    if history.dim() != 3 or history.shape[-1] != config.pose_dim or history.shape[1] < 1:
        raise InputError(
            f"history must be (B, {config.pose_dim}) or (B, H, {config.pose_dim}) with H >= 1, "
            f"got {tuple(history.shape)}"
        )
    history = history[:, -receptive_field:]
    pad = receptive_field - history.shape[1]
    return torch.cat([history[:, :1].expand(-1, pad, -1), history], dim=1)


def draw(
    mean: Tensor, neg_log_sigma: Tensor, temperature: float, generator: torch.Generator | None
) -> Tensor:
    """One sample of Normal(mean, temperature * sigma); temperature 0 returns the mean and
    draws nothing. mean, neg_log_sigma (B, P) -> (B, P)."""
    if temperature == 0:
        return mean.clone()
    eps = torch.randn(mean.shape, generator=generator, dtype=mean.dtype, device=mean.device)
    return mean + temperature * (-neg_log_sigma).exp() * eps


def check_audio(audio: Tensor, config: HeadPoseConfig) -> tuple[int, int, int]:
    if audio.dim() != 3 or audio.shape[-1] != config.audio_dim or audio.shape[1] < 1:
        raise InputError(
            f"audio must be (B, T, {config.audio_dim}) with T >= 1, got {tuple(audio.shape)}"
        )
    B, T, A = audio.shape
    return B, T, A


def velocity_map(pose_mean: np.ndarray, pose_std: np.ndarray) -> Tensor:
    """(2, P // 2) float64: the scale and offset that turn the change of the normalised pose
    half between two frames into the normalised velocity half, as training computes
    velocities (the difference of consecutive poses), for features normalised by
    ``pose_mean`` and ``pose_std`` (P,): ``v = (p_t - p_{t-1}) * scale + offset``."""
    mean, std = np.asarray(pose_mean, np.float64), np.asarray(pose_std, np.float64)
    h = len(mean) // 2
    return torch.from_numpy(np.stack([std[:h] / std[h:], -mean[h:] / std[h:]]))


def with_velocity(pose: Tensor, pose_prev: Tensor, velocity: Tensor | None) -> Tensor:
    """A drawn pose feature (B, P) with its velocity half recomputed from its pose half and
    that of ``pose_prev`` (B, P) by ``velocity`` (:func:`velocity_map`); as drawn when None.

    Why: the model is trained on features whose velocities are the differences of their
    poses, but a sampler that feeds back the velocities it drew feeds independent noise of
    the velocities' whole spread. Measured on the speech-driven speaker (cpu-small), the
    model then lost its momentum: its samples moved at the recorded speed but over 0.33-0.82x
    the recorded range, the rest jitter (benchmarks/headmotion.py).
    """
    if velocity is None:
        return pose
    h = pose.shape[-1] // 2
    v = velocity.to(pose)
    return torch.cat([pose[:, :h], (pose[:, :h] - pose_prev[:, :h]) * v[0] + v[1]], dim=-1)


def slow_band(pose: Tensor, start: Tensor, alpha: float) -> Tensor:
    """The slow band of poses (B, T, K): the causal one-pole low-pass
    ``s_t = s_{t-1} + alpha (x_t - s_{t-1})`` from ``s_{-1} = start`` (B, K) -> (B, T, K)
    (``HeadPoseConfig.range_slow_frames``). A loop over frames, as the stream runs it."""
    out, s = torch.empty_like(pose), start.to(pose)
    for t in range(pose.shape[1]):
        s = s + alpha * (pose[:, t] - s)
        out[:, t] = s
    return out


class PoseGain:
    """What every sampler does to the features it returns (``range_calibration``), with the
    state it needs between calls: nothing without a ``pose_gain``; the pose half times it
    with one gain per axis; with two (``range_slow_frames``) ``g_slow * slow + g_fast *
    (pose - slow)``, ``slow`` the :func:`slow_band` of the sampled pose half, started at
    the warm start's last pose. The samplers feed back the poses before this."""

    def __init__(self, model: HeadPoseModel, last: Tensor) -> None:
        """``last`` (B, P): the pose feature before the first frame (the warm start's)."""
        self.gain, self.fast_gain = model.pose_gain, model.pose_gain_fast
        self.alpha = model.slow_alpha
        self.h = model.config.pose_dim // 2
        self.slow = last[:, : self.h].clone() if self.fast_gain is not None else None

    def __call__(self, pose: Tensor) -> Tensor:
        """The next T sampled features (B, T, P), unscaled, -> as returned (B, T, P)."""
        if self.gain is None:
            return pose
        h, g = self.h, self.gain.to(pose)
        if self.fast_gain is None or self.slow is None:
            return torch.cat([pose[..., :h] * g, pose[..., h:]], -1)
        slow = slow_band(pose[..., :h], self.slow, self.alpha)  # (B, T, h)
        self.slow = slow[:, -1]
        fast = pose[..., :h] - slow
        return torch.cat([g * slow + self.fast_gain.to(pose) * fast, pose[..., h:]], -1)
