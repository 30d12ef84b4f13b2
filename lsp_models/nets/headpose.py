"""Probabilistic head-pose model: an audio-conditioned autoregressive WaveNet.

The paper's head motion synthesis (Lu et al. 2021, Sec. 3.3). Each video frame carries a
12-dim pose feature (rotation 3 + translation 3 relative to the person's mean, then their
6 velocities) and an audio feature (APC). For every frame ``t`` the model reads the pose
feature of frame ``t - 1`` and the audio feature of frame ``t`` and predicts a diagonal
Gaussian over the pose feature of frame ``t``:

    pose_prev[t] = pose[t - 1]        (teacher forcing: the caller shifts the poses in)
    mean[t], neg_log_sigma[t] = model(pose_prev[: t + 1], audio[: t + 1])[t]
    pose[t] ~ Normal(mean[t], exp(-neg_log_sigma[t]))

The network is a stack of gated residual layers with dilated causal convolutions (two
stacks of dilations 1, 2, ..., 64 with kernel 2: each output sees the 255 most recent input
frames) and the audio entering every layer as local conditioning, as in WaveNet. Running it
autoregressively (the samplers) is :mod:`lsp_models.sampling`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from lsp_prep.errors import InputError


@dataclass(frozen=True)
class HeadPoseConfig:
    """Size and regularisation of the head-pose model (paper-sized by default)."""

    pose_dim: int = 12
    """Pose feature size per frame: rotation 3 + translation 3 + their velocities 6."""
    audio_dim: int = 1024
    """Audio feature size per video frame: two 512-dim APC frames concatenated."""
    cond_channels: int = 512
    """Width of the per-frame audio pre-net (Linear then LeakyReLU 0.2) in front of the
    conditioning; 0 conditions the layers on the raw audio feature."""
    residual_channels: int = 128
    """Channels of the residual stream between the layers."""
    gate_channels: int = 128
    """Channels of each layer's tanh * sigmoid gate (the dilated conv outputs twice this)."""
    skip_channels: int = 256
    """Channels of the skip connections and of the post-net."""
    n_stacks: int = 2
    """Repeats of the dilation cycle."""
    n_layers: int = 7
    """Layers per stack; layer ``i`` of a stack has dilation ``kernel_size ** i``."""
    kernel_size: int = 2
    """Taps of each dilated causal convolution."""
    dropout: float = 0.0
    """Dropout on every layer's gated activation while training."""
    pose_dropout: float = 0.5
    """While training, each whole channel of the teacher-forced pose history is dropped
    (zeroed, the kept ones not rescaled) with this probability (the official code's
    Dropout2d), so the model must listen to audio."""
    min_sigma: float = 1e-3
    """Floor of the predicted standard deviation, in the units of the (normalised) pose
    feature; ``neg_log_sigma`` is clamped at ``-log(min_sigma)``."""
    window: int = 240
    """Training window length in frames (teacher-forced sequences of the train split)."""
    pose_residual: bool = False
    """Predict the pose half of the feature (its first ``pose_dim // 2`` dims: rotation and
    translation) as the previous frame's pose plus the network's output, so that holding
    still is the network's zero and it learns the motion, not the identity. Without it the
    cpu-small model (300 steps) predicted a frame from the one before with 2-4x the error
    of copying it, and sampled shrunken, jittering poses. The presets turn it on; False, the
    default, is how checkpoints written before it existed predict."""
    reversion_frames: float = 0.0
    """With ``pose_residual``: the mean of the pose half is ``(1 - 1 / reversion_frames)`` times
    the previous pose (0 in the normalised feature is the person's mean pose) plus the
    network's output: a restoring force toward the mean pose that the network can cancel
    inside the recorded range, where it learns, but not outside it, where its gates
    saturate. Without it the residual cpu-small model drifted without bound when run
    free on pexels (yaw past 250 degrees after 15 s at temperature 0); with 120 (2 s at
    60 FPS; the presets) a 15 s free run of the cpu-small model (1000 steps) keeps the
    recorded range: 0.65-1.3x its std per axis over two training seeds. 0 turns it off."""
    velocity_feedback: bool = False
    """The samplers feed back velocities computed from the sampled poses, as training
    computes them, instead of the velocities they drew (:func:`lsp_models.sampling.
    velocity_map`). The drawn ones are independent noise of the velocities' whole spread,
    which the model never saw in training; fed back, they cost it its momentum (samples
    0.33-0.82x the recorded range on the speech-driven speaker). The cpu-small preset
    turns it on, with ``pose_dropout`` 0.25: with 0.5 the fed-back model overshoots (1.3-3.5x
    the range there), with 0 it drifts on a 15 s clip (README, head motion). False, the
    default, is how checkpoints written before it existed are sampled."""
    range_calibration: bool = False
    """Before its last checkpoint the head-pose stage measures a gain per axis (the model's
    ``pose_gain`` buffer; 1 in earlier checkpoints) on a free run over the train split's
    audio: the geometric mean of the recorded/sampled ratios of the std and of the mean
    |velocity| (:func:`lsp_models.sampling.calibrate.calibrate`). The samplers multiply the
    pose half of what they return by it and feed back the unscaled poses. A last-resort
    correction: the free-running range of cpu-small varied between four training seeds as
    much as it was off (0.89-3.17x the recorded std on the speech-driven speaker; 0.80-1.37x
    calibrated; README, head motion); ``lsp eval`` reports the raw ratios beside the
    calibrated ones. The cpu-small preset turns it on. False, the default, is how
    checkpoints written before it existed are sampled."""
    range_slow_frames: float = 0.0
    """With ``range_calibration``: 0 measures one gain per axis (as before this option
    existed); above 0 two, one for the slow part of each axis of the sampled pose (a causal
    one-pole low-pass, an exponential moving average with this time constant in frames,
    that the streaming sampler runs as well) and one for the fast rest, solved so that
    both the std and the mean |velocity| of the free run match the recorded ones
    (:func:`lsp_models.sampling.calibrate.calibrate`). Why: on pexels the cpu-small free
    runs moved at 1.1-1.5x the recorded speed over 0.45-0.9x the recorded range on pitch
    and y, which one gain cannot fix both ways; with two bands (30 frames, the cpu-small
    preset) 16 and 18 of 18 std and speed ratios of three training seeds are within
    0.8-1.25x there (13 and 14 with one gain), and none is lost on the speech-driven
    speaker (README, head motion). The model's ``pose_gain_fast`` buffer holds the fast
    band's gains."""

    def __post_init__(self) -> None:
        for name in (
            "pose_dim",
            "audio_dim",
            "residual_channels",
            "gate_channels",
            "skip_channels",
            "n_stacks",
            "n_layers",
            "window",
        ):
            _check_int(name, getattr(self, name), minimum=1)
        _check_int("cond_channels", self.cond_channels, minimum=0)
        _check_int("kernel_size", self.kernel_size, minimum=2)
        for name in ("dropout", "pose_dropout"):
            p = getattr(self, name)
            if not (isinstance(p, (int, float)) and 0 <= p < 1):
                raise InputError(f"headpose.{name} must be in [0, 1), got {p!r}")
        if not isinstance(self.velocity_feedback, bool):
            raise InputError(
                f"headpose.velocity_feedback must be true or false, got {self.velocity_feedback!r}"
            )
        if not isinstance(self.range_calibration, bool):
            raise InputError(
                f"headpose.range_calibration must be true or false, got {self.range_calibration!r}"
            )
        if not isinstance(self.pose_residual, bool):
            raise InputError(
                f"headpose.pose_residual must be true or false, got {self.pose_residual!r}"
            )
        if not (
            isinstance(self.reversion_frames, (int, float))
            and (self.reversion_frames == 0 or self.reversion_frames >= 1)
        ):
            raise InputError(
                f"headpose.reversion_frames must be 0 or >= 1, got {self.reversion_frames!r}"
            )
        if not (
            isinstance(self.range_slow_frames, (int, float))
            and not isinstance(self.range_slow_frames, bool)
            and (self.range_slow_frames == 0 or self.range_slow_frames >= 1)
        ):
            raise InputError(
                f"headpose.range_slow_frames must be 0 or >= 1, got {self.range_slow_frames!r}"
            )
        if self.range_slow_frames and not self.range_calibration:
            raise InputError(
                "headpose.range_slow_frames needs headpose.range_calibration=true (it sets "
                "how the calibration splits the poses); set both, or range_slow_frames=0"
            )
        if not (isinstance(self.min_sigma, (int, float)) and self.min_sigma > 0):
            raise InputError(f"headpose.min_sigma must be > 0, got {self.min_sigma!r}")

    @property
    def dilations(self) -> tuple[int, ...]:
        """Dilation of every layer, in order (``n_stacks * n_layers`` of them)."""
        return tuple(self.kernel_size**i for i in range(self.n_layers)) * self.n_stacks

    @property
    def receptive_field(self) -> int:
        """Pose inputs an output frame depends on (its own included): 255 for the paper.
        Its audio reaches one frame less far back (see ``HeadPoseModel.forward``)."""
        return 1 + (self.kernel_size - 1) * sum(self.dilations)

    @classmethod
    def paper(cls, **overrides: Any) -> HeadPoseConfig:
        """The official code's sizes (residual 128, gate 128, skip 256, audio pre-net 512),
        with the residual pose mean of this project (``pose_residual``, ``reversion_frames``)."""
        return replace(cls(pose_residual=True, reversion_frames=120.0), **overrides)

    @classmethod
    def cpu_small(cls, **overrides: Any) -> HeadPoseConfig:
        """Same depth and receptive field as the paper, narrow enough for CPU tests."""
        small = cls(
            audio_dim=16,
            cond_channels=16,
            residual_channels=32,
            gate_channels=32,
            skip_channels=32,
            pose_residual=True,
            reversion_frames=120.0,
        )
        return replace(small, **overrides)


def _check_int(name: str, value: object, *, minimum: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise InputError(f"headpose.{name} must be an integer >= {minimum}, got {value!r}")


class GatedLayer(nn.Module):
    """One WaveNet layer: dilated causal conv + audio conditioning -> tanh * sigmoid gate
    -> 1x1 convs to the residual stream and to the skip connections.

    Tensors are time-major ``(B, T, C)``; a 1x1 conv is a Linear on the last axis and the
    ``kernel_size``-tap dilated conv is one Linear on the taps concatenated oldest first,
    ``[x[t - (k-1) d], ..., x[t - d], x[t]]``, zero before the first frame.
    """

    def __init__(self, config: HeadPoseConfig, dilation: int) -> None:
        super().__init__()
        self.dilation = dilation
        self.kernel_size = config.kernel_size
        self.history = (config.kernel_size - 1) * dilation  # past inputs one step needs
        self.residual_channels = config.residual_channels
        self.skip_channels = config.skip_channels
        self.dilated = nn.Linear(
            config.kernel_size * config.residual_channels, 2 * config.gate_channels
        )
        self.out = nn.Linear(config.gate_channels, config.residual_channels + config.skip_channels)
        self.dropout = config.dropout

    def forward(self, x: Tensor, cond: Tensor, *, dropout: bool = False) -> tuple[Tensor, Tensor]:
        """x (B, T, R) input, cond (B, T, 2G) -> next input (B, T, R), skip (B, T, S)."""
        B, T, R = x.shape
        assert R == self.residual_channels and cond.shape[:2] == (B, T), (
            f"x should be (B, T, {self.residual_channels}) and cond (B, T, 2G), "
            f"got {tuple(x.shape)} and {tuple(cond.shape)}"
        )
        d = self.dilation
        xp = F.pad(x, (0, 0, self.history, 0))  # (B, history + T, R), zeros before frame 0
        taps = torch.cat([xp[:, j * d : j * d + T] for j in range(self.kernel_size)], dim=-1)
        return self._gate(taps, cond, x, dropout=dropout)  # (B, T, R), (B, T, S)

    def step(self, x: Tensor, cond: Tensor, queue: Tensor, n: int) -> tuple[Tensor, Tensor]:
        """One time step: x (B, R) the input at time ``n``, cond (B, 2G) -> (B, R), (B, S).

        ``queue`` (B, history, R) holds this layer's inputs at times ``n - history .. n - 1``,
        the input at time ``m`` in slot ``m % history``; it is updated in place.
        """
        d, slot = self.dilation, n % self.history
        past = [queue[:, (n - m * d) % self.history] for m in range(self.kernel_size - 1, 0, -1)]
        out = self._gate(torch.cat([*past, x], dim=-1), cond, x, dropout=False)
        queue[:, slot] = x  # after reading: the slot held x[n - history], needed just above
        return out

    def _gate(
        self, taps: Tensor, cond: Tensor, x: Tensor, *, dropout: bool
    ) -> tuple[Tensor, Tensor]:
        filt, gate = (self.dilated(taps) + cond).chunk(2, dim=-1)  # (..., G) each
        z = torch.tanh(filt) * torch.sigmoid(gate)
        if dropout and self.dropout > 0:
            z = F.dropout(z, self.dropout, training=True)
        residual, skip = self.out(z).split([self.residual_channels, self.skip_channels], dim=-1)
        return x + residual, skip


class HeadPoseModel(nn.Module):
    """Audio-conditioned autoregressive Gaussian model of the 12-dim head-pose feature."""

    def __init__(self, config: HeadPoseConfig) -> None:
        super().__init__()
        self.config = config
        c = config
        self.n_gated = len(c.dilations)
        self.pose_in = nn.Linear(c.pose_dim, c.residual_channels)
        if c.cond_channels > 0:
            self.audio_in: nn.Module = nn.Sequential(
                nn.Linear(c.audio_dim, c.cond_channels), nn.LeakyReLU(0.2)
            )
            cond_in = c.cond_channels
        else:
            self.audio_in = nn.Identity()
            cond_in = c.audio_dim
        # every layer's 1x1 conditioning conv, as one Linear: one matmul per frame in sampling
        self.cond = nn.Linear(cond_in, self.n_gated * 2 * c.gate_channels)
        self.layers = nn.ModuleList(GatedLayer(c, d) for d in c.dilations)
        self.post = nn.Sequential(
            nn.ReLU(),
            nn.Linear(c.skip_channels, c.skip_channels),
            nn.ReLU(),
            nn.Linear(c.skip_channels, 2 * c.pose_dim),
        )
        self.max_neg_log_sigma = -math.log(c.min_sigma)
        self.keep = 1 - 1 / c.reversion_frames if c.reversion_frames else 1.0
        """Share of the previous pose the residual mean keeps (``reversion_frames``)."""
        # (P // 2,) with range_calibration, else None (then not in the state dict, so
        # checkpoints written before it load as they are)
        self.register_buffer(
            "pose_gain", torch.ones(c.pose_dim // 2) if c.range_calibration else None
        )
        self.pose_gain: Tensor | None
        # (P // 2,) with range_slow_frames: the fast band's gains (pose_gain: the slow one's)
        two = c.range_calibration and c.range_slow_frames > 0
        self.register_buffer("pose_gain_fast", torch.ones(c.pose_dim // 2) if two else None)
        self.pose_gain_fast: Tensor | None
        self.slow_alpha = 1 - math.exp(-1 / c.range_slow_frames) if two else 0.0
        """Weight of the new pose in the slow band's moving average (``range_slow_frames``)."""

    @property
    def receptive_field(self) -> int:
        return self.config.receptive_field

    def num_params(self) -> int:
        return sum(p.numel() for p in self.parameters())

    def forward(self, pose_prev: Tensor, audio: Tensor) -> tuple[Tensor, Tensor]:
        """Teacher-forced prediction of every frame at once.

        Args:
            pose_prev: (B, T, P) the pose feature of the frame before each frame:
                ``pose_prev[:, t] = pose[:, t - 1]`` (the caller shifts the poses in).
            audio: (B, T, A) the audio feature of each frame itself.

        Returns:
            mean (B, T, P) and neg_log_sigma (B, T, P), clamped at ``-log(min_sigma)``, of
            the Gaussian over ``pose[:, t]``. Output ``t`` depends on ``pose_prev`` at
            ``t - receptive_field + 1 .. t`` and on ``audio`` at ``t - receptive_field + 2 .. t``
            only (the audio enters after the first dilated conv, as in WaveNet's local
            conditioning). Inputs before frame 0 count as zeros: a trainer that wants full
            context everywhere feeds ``receptive_field - 1`` extra leading frames and drops
            their outputs from the loss (as the official training does).
        """
        return self.predict(pose_prev, audio, dropout=self.training)

    def predict(
        self, pose_prev: Tensor, audio: Tensor, *, dropout: bool = False
    ) -> tuple[Tensor, Tensor]:
        """``forward`` with dropout chosen by the caller, whatever the module's mode (the
        samplers never drop)."""
        c = self.config
        B, T, P = pose_prev.shape
        assert P == c.pose_dim, (
            f"pose_prev should be (B, T, {c.pose_dim}), got {tuple(pose_prev.shape)}"
        )
        assert audio.shape == (B, T, c.audio_dim), (
            f"audio should be {(B, T, c.audio_dim)} to match pose_prev, got {tuple(audio.shape)}"
        )
        history = pose_prev
        if dropout and c.pose_dropout > 0:  # whole channels of the history, per sequence
            # not rescaled by 1 / (1 - p) as inverted dropout is: the samplers feed the
            # history as it is, so training on doubled poses would not match sampling
            keep = torch.rand(B, 1, P, device=pose_prev.device) >= c.pose_dropout
            history = pose_prev * keep.to(pose_prev.dtype)
        x = self.pose_in(history)  # (B, T, R)
        cond = self.condition(audio)  # (B, T, L, 2G)
        skip = torch.zeros(B, T, c.skip_channels, dtype=x.dtype, device=x.device)
        for i, layer in enumerate(self.layers):
            x, s = layer(x, cond[:, :, i], dropout=dropout)  # (B, T, R), (B, T, S)
            skip = skip + s
        return self.head(skip, pose_prev)  # (B, T, P) each

    def condition(self, audio: Tensor) -> Tensor:
        """Audio feature (..., A) -> every layer's conditioning (..., n_layers_total, 2G)."""
        cond = self.cond(self.audio_in(audio))  # (..., L * 2G)
        return cond.unflatten(-1, (self.n_gated, 2 * self.config.gate_channels))

    def head(self, skip: Tensor, pose_prev: Tensor) -> tuple[Tensor, Tensor]:
        """Summed skips (..., S) and the previous pose feature (..., P) -> mean (..., P),
        neg_log_sigma (..., P) (clamped). With ``config.pose_residual`` the previous pose
        (times ``keep``) is added to the mean of the first ``pose_dim // 2`` dims, never
        dropped: ``pose_dropout`` hides the history from the network only."""
        mean, neg_log_sigma = self.post(skip).chunk(2, dim=-1)
        if self.config.pose_residual:
            h = self.config.pose_dim // 2
            mean = torch.cat([mean[..., :h] + self.keep * pose_prev[..., :h], mean[..., h:]], -1)
        return mean, neg_log_sigma.clamp(max=self.max_neg_log_sigma)

    def loss(self, mean: Tensor, neg_log_sigma: Tensor, target: Tensor) -> dict[str, Tensor]:
        """Gaussian negative log-likelihood per dimension, averaged over (B, T, P).

        Returns ``{"nll": ...}`` to optimise plus ``"mse"`` of the mean and ``"sigma"``, the
        mean predicted standard deviation, both detached and for logging only.
        """
        assert mean.shape == neg_log_sigma.shape == target.shape, (
            f"mean, neg_log_sigma, target must share a shape, got {tuple(mean.shape)}, "
            f"{tuple(neg_log_sigma.shape)}, {tuple(target.shape)}"
        )
        nls = neg_log_sigma.clamp(max=self.max_neg_log_sigma)
        nll = 0.5 * math.log(2 * math.pi) - nls + 0.5 * ((target - mean) * nls.exp()) ** 2
        return {
            "nll": nll.mean(),
            "mse": F.mse_loss(mean.detach(), target),
            "sigma": (-nls.detach()).exp().mean(),
        }
