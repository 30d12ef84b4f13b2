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
frames) and the audio entering every layer as local conditioning, as in WaveNet.

Two samplers run the model autoregressively. ``sample_naive`` recomputes the whole causal
network over the last ``receptive_field`` inputs for every frame; ``sample`` (and the
streaming ``HeadPoseSampler`` it is built on) keeps WaveNet's "fast generation" queues, the
last ``(kernel_size - 1) * dilation`` inputs of every layer, so a frame costs one pass
through the layers at one time step. With the same generator both give the same poses.
``FastHeadPoseSampler`` (``sample_fast``, ``make_sampler``; what ``lsp animate`` uses on the
CPU) runs that same step in a few numpy calls per layer: equal to ``sample`` up to rounding
order, with the same draws, and several times cheaper per frame at batch 1.
"""

from __future__ import annotations

import contextlib
import functools
import math
import time
from dataclasses import dataclass, replace
from typing import Any, cast

import numpy as np
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
    """While training, each whole channel of the teacher-forced pose history is dropped with
    this probability (the official code's Dropout2d), so the model must listen to audio."""
    min_sigma: float = 1e-3
    """Floor of the predicted standard deviation, in the units of the (normalised) pose
    feature; ``neg_log_sigma`` is clamped at ``-log(min_sigma)``."""

    def __post_init__(self) -> None:
        for name in (
            "pose_dim",
            "audio_dim",
            "residual_channels",
            "gate_channels",
            "skip_channels",
            "n_stacks",
            "n_layers",
        ):
            _check_int(name, getattr(self, name), minimum=1)
        _check_int("cond_channels", self.cond_channels, minimum=0)
        _check_int("kernel_size", self.kernel_size, minimum=2)
        for name in ("dropout", "pose_dropout"):
            p = getattr(self, name)
            if not (isinstance(p, (int, float)) and 0 <= p < 1):
                raise InputError(f"headpose.{name} must be in [0, 1), got {p!r}")
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
        """The official code's sizes (residual 128, gate 128, skip 256, audio pre-net 512)."""
        return replace(cls(), **overrides)

    @classmethod
    def cpu_small(cls, **overrides: Any) -> HeadPoseConfig:
        """Same depth and receptive field as the paper, narrow enough for CPU tests."""
        small = cls(
            audio_dim=16,
            cond_channels=16,
            residual_channels=32,
            gate_channels=32,
            skip_channels=32,
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
        return self._forward(pose_prev, audio, dropout=self.training)

    def _forward(self, pose_prev: Tensor, audio: Tensor, *, dropout: bool) -> tuple[Tensor, Tensor]:
        c = self.config
        B, T, P = pose_prev.shape
        assert P == c.pose_dim, (
            f"pose_prev should be (B, T, {c.pose_dim}), got {tuple(pose_prev.shape)}"
        )
        assert audio.shape == (B, T, c.audio_dim), (
            f"audio should be {(B, T, c.audio_dim)} to match pose_prev, got {tuple(audio.shape)}"
        )
        if dropout and c.pose_dropout > 0:  # whole channels of the history, per sequence
            pose_prev = F.dropout1d(pose_prev.transpose(1, 2), c.pose_dropout, True).transpose(1, 2)
        x = self.pose_in(pose_prev)  # (B, T, R)
        cond = self.condition(audio)  # (B, T, L, 2G)
        skip = torch.zeros(B, T, c.skip_channels, dtype=x.dtype, device=x.device)
        for i, layer in enumerate(self.layers):
            x, s = layer(x, cond[:, :, i], dropout=dropout)  # (B, T, R), (B, T, S)
            skip = skip + s
        return self.head(skip)  # (B, T, P) each

    def condition(self, audio: Tensor) -> Tensor:
        """Audio feature (..., A) -> every layer's conditioning (..., n_layers_total, 2G)."""
        cond = self.cond(self.audio_in(audio))  # (..., L * 2G)
        return cond.unflatten(-1, (self.n_gated, 2 * self.config.gate_channels))

    def head(self, skip: Tensor) -> tuple[Tensor, Tensor]:
        """Summed skips (..., S) -> mean (..., P), neg_log_sigma (..., P) (clamped)."""
        mean, neg_log_sigma = self.post(skip).chunk(2, dim=-1)
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

    @torch.no_grad()
    def sample(
        self,
        audio: Tensor,
        *,
        history: Tensor,
        temperature: float = 1.0,
        generator: torch.Generator | None = None,
    ) -> Tensor:
        """Sample a pose sequence for ``audio`` (B, T, A), frame by frame (fast, cached).

        ``history`` is the pose feature before the first frame: (B, P), or (B, H, P) oldest
        first. It is replicated back to fill the receptive field, with ``audio[:, 0]`` as
        the audio of those frames (the official inference's warm start). Each sampled
        12-dim feature is fed back as it is, velocities included; a caller that wants
        consistent velocities recomputes them from the poses afterwards. ``temperature``
        scales sigma (0 gives the mean path; the official inference uses 0.3).
        ``generator`` must live on ``audio``'s device; one (B, P) normal draw per frame.

        Returns: (B, T, P) sampled pose features of frames 0 .. T - 1.
        """
        _check_audio(audio, self.config)
        sampler = HeadPoseSampler(
            self, history=history, temperature=temperature, generator=generator
        )
        return _run_sampler(sampler, self, audio)

    @torch.no_grad()
    def sample_fast(
        self,
        audio: Tensor,
        *,
        history: Tensor,
        temperature: float = 1.0,
        generator: torch.Generator | None = None,
    ) -> Tensor:
        """Same contract and same draws as ``sample``, through ``make_sampler``: on the CPU
        the numpy ``FastHeadPoseSampler`` (equal up to rounding order, several times
        cheaper per frame), elsewhere ``HeadPoseSampler`` itself."""
        _check_audio(audio, self.config)
        sampler = make_sampler(self, history=history, temperature=temperature, generator=generator)
        return _run_sampler(sampler, self, audio)

    @torch.no_grad()
    def sample_naive(
        self,
        audio: Tensor,
        *,
        history: Tensor,
        temperature: float = 1.0,
        generator: torch.Generator | None = None,
    ) -> Tensor:
        """Same contract and same draws as ``sample``, but each frame reruns the whole
        network over its last ``receptive_field`` inputs: the reference ``sample`` is
        checked against, and the baseline of ``benchmark_samplers``."""
        B, T, _ = _check_audio(audio, self.config)
        R = self.receptive_field
        pose_in = audio.new_empty(B, R - 1 + T, self.config.pose_dim)  # input stream
        pose_in[:, :R] = warm_start(history, R, self.config)
        audio_in = torch.cat([audio[:, :1].expand(B, R - 1, -1), audio], dim=1)  # (B, R-1+T, A)
        out = audio.new_empty(B, T, self.config.pose_dim)
        for t in range(T):  # frame t is stream index R - 1 + t
            mean, nls = self._forward(pose_in[:, t : t + R], audio_in[:, t : t + R], dropout=False)
            out[:, t] = draw(mean[:, -1], nls[:, -1], temperature, generator)
            if t + 1 < T:
                pose_in[:, R + t] = out[:, t]
        return out


def _check_temperature(temperature: object) -> None:
    if not (isinstance(temperature, (int, float)) and temperature >= 0):
        raise InputError(f"temperature must be a number >= 0, got {temperature!r}")


class HeadPoseSampler:
    """Streaming sampler: holds every layer's queue and the last pose; ``step`` one frame.

    ``step(audio_t (B, A)) -> pose_t (B, P)``. The queues are filled from the warm start
    (``history`` replicated back, the first frame's audio) on the first ``step`` or an
    explicit ``prime``. Dropout is never applied, whatever the model's mode.
    """

    def __init__(
        self,
        model: HeadPoseModel,
        *,
        history: Tensor,
        temperature: float = 1.0,
        generator: torch.Generator | None = None,
    ) -> None:
        _check_temperature(temperature)
        self.model = model
        self.temperature = float(temperature)
        self.generator = generator
        self.n = 0  # frames produced so far
        self._stream = warm_start(history, model.receptive_field, model.config)  # (B, R, P)
        self._pose_prev = self._stream[:, -1]  # (B, P)
        self._queues: list[Tensor] | None = None

    @torch.no_grad()
    def prime(self, audio_0: Tensor) -> None:
        """Fill the queues from the warm start, with ``audio_0`` (B, A) as its audio."""
        model, stream = self.model, self._stream
        B, R, _ = stream.shape
        assert audio_0.shape == (B, model.config.audio_dim), (
            f"audio_0 should be {(B, model.config.audio_dim)}, got {tuple(audio_0.shape)}"
        )
        cond = model.condition(audio_0)[:, None].expand(B, R - 1, -1, -1)  # (B, R-1, L, 2G)
        x = model.pose_in(stream[:, :-1])  # (B, R-1, R_ch): frames -R+1 .. -1
        self._queues = []
        for i, layer in enumerate(model.layers):
            self._queues.append(x[:, x.shape[1] - layer.history :].clone())  # (B, history, R_ch)
            x, _ = layer(x, cond[:, :, i])

    @torch.no_grad()
    def step(self, audio_t: Tensor) -> Tensor:
        """audio_t (B, A), the audio feature of the next frame -> its sampled pose (B, P)."""
        if self._queues is None:
            self.prime(audio_t)
        return self.step_cond(self.model.condition(audio_t))

    @torch.no_grad()
    def step_cond(self, cond_t: Tensor) -> Tensor:
        """``step`` from precomputed conditioning cond_t (B, n_layers_total, 2G)."""
        assert self._queues is not None, "call prime() (or step()) first"
        model = self.model
        x = model.pose_in(self._pose_prev)  # (B, R)
        skip: Tensor | None = None
        for i, (layer, queue) in enumerate(zip(model.layers, self._queues, strict=True)):
            x, s = cast(GatedLayer, layer).step(x, cond_t[:, i], queue, self.n)  # (B, R), (B, S)
            skip = s if skip is None else skip + s
        assert skip is not None
        mean, nls = model.head(skip)  # (B, P) each
        pose = draw(mean, nls, self.temperature, self.generator)
        self._pose_prev = pose
        self.n += 1
        return pose

    @torch.no_grad()
    def steps(self, cond: Tensor) -> Tensor:
        """``step_cond`` for each of T frames: cond (B, T, n_layers_total, 2G) -> (B, T, P)."""
        return torch.stack([self.step_cond(cond[:, t]) for t in range(cond.shape[1])], dim=1)


class FastHeadPoseSampler:
    """``HeadPoseSampler``'s contract at a fraction of its per-frame cost, on CPU.

    A batch-1 step through 14 gated layers is some 170 tiny torch ops, each microseconds of
    dispatch; this sampler runs the same step as about 9 numpy calls per layer on weights
    rearranged once at construction (so it does not see later weight updates):

    - each layer's queue holds its past inputs already multiplied by their dilated-conv taps
      (``(kernel_size - 1) * 2G`` per entry), so a step is one matmul of the current input
      by ``[W_current | W_past...]``, whose past half is queued for later steps;
    - the dilated conv's bias is folded into the conditioning, once per chunk;
    - ``sigmoid(g) = (1 + tanh(g / 2)) / 2``: one tanh over filter and (pre-halved) gate,
      the 1/2 folded into the 1x1 output conv;
    - the gated activations of all layers are written side by side with a trailing 1, so
      the residual biases ride in the residual matmuls and all skips plus their biases are
      one matmul before the post-net.

    The arithmetic is the same up to rounding order (float64: ~1e-15; float32: ~1e-6 per
    frame, which an autoregressive chain may grow), and the normal draws are the same torch
    calls: one ``torch.randn((B, P), generator=...)`` per frame, none at temperature 0, so a
    seed means what it means for ``HeadPoseSampler``. ``tests/test_models_headpose.py``
    checks the two agree. The model must be float32 or float64, on the CPU.
    """

    def __init__(
        self,
        model: HeadPoseModel,
        *,
        history: Tensor,
        temperature: float = 1.0,
        generator: torch.Generator | None = None,
    ) -> None:
        _check_temperature(temperature)
        param = next(model.parameters())
        if not _fast_ok(model):
            raise InputError(
                f"FastHeadPoseSampler needs a float32 or float64 model on the CPU, got "
                f"{param.dtype} on {param.device}: use HeadPoseSampler (or make_sampler)"
            )
        self.model = model
        self.temperature = float(temperature)
        self.generator = generator
        self.n = 0  # frames produced so far
        self._stream = warm_start(history, model.receptive_field, model.config)  # (B, R, P)
        self._dtype = param.dtype
        self._weights(model)
        B = self._stream.shape[0]
        c, L, G = model.config, model.n_gated, model.config.gate_channels
        dt = self._np_dtype
        self._pose = np.ones((B, c.pose_dim + 1), dt)  # last pose, then a 1 for the bias
        self._pose[:, :-1] = self._stream[:, -1].detach().numpy()
        self._pose_view = self._pose[:, :-1]
        # work buffers, written in place every step (numpy's out=: no allocation per op)
        self._x = np.empty((B, c.residual_channels), dt)
        self._h = np.empty((B, 2 * G), dt)
        self._hf, self._hg = self._h[:, :G], self._h[:, G:]
        self._one = np.ones((B, G), dt)
        self._z = np.ones((B, L, G + 1), dt)  # gated activations (doubled), then a 1
        self._z_flat = self._z.reshape(B, L * (G + 1))
        self._r = np.empty((B, c.residual_channels), dt)
        self._skip = np.empty((B, c.skip_channels), dt)
        self._hid = np.empty((B, c.skip_channels), dt)
        self._head = np.empty((B, 2 * c.pose_dim), dt)
        self._mean, self._nls = self._head[:, : c.pose_dim], self._head[:, c.pose_dim :]
        self._queues: list[np.ndarray] | None = None
        self._plan: list[tuple[Any, ...]] = []

    @torch.no_grad()
    def _weights(self, model: HeadPoseModel) -> None:
        c, G = model.config, model.config.gate_channels
        R, k = c.residual_channels, c.kernel_size
        f = lambda t: t.detach().numpy().copy()  # noqa: E731
        self._np_dtype = f(next(model.parameters())).dtype
        half = np.ones(2 * G, self._np_dtype)
        half[G:] = 0.5  # tanh(g / 2) for sigmoid(g): exact, a power of two
        self._half = half
        self._w_in = np.concatenate([f(model.pose_in.weight).T, f(model.pose_in.bias)[None]])
        self._wcat, self._wres, bdil, wskip = [], [], [], []
        for layer in model.layers:
            layer = cast(GatedLayer, layer)
            w = f(layer.dilated.weight).T * half  # (k * R, 2G), taps oldest first
            # current tap first, then lags 1 .. k-1: [W_{k-1} | W_{k-2} | ... | W_0]
            self._wcat.append(
                np.ascontiguousarray(
                    np.concatenate([w[j * R : (j + 1) * R] for j in range(k - 1, -1, -1)], 1)
                )
            )
            bdil.append(f(layer.dilated.bias))
            wo = np.concatenate([f(layer.out.weight).T * 0.5, f(layer.out.bias)[None]])
            self._wres.append(np.ascontiguousarray(wo[:, :R]))  # (G + 1, R)
            wskip.append(wo[:, R:])  # (G + 1, S)
        self._wskip = np.ascontiguousarray(np.concatenate(wskip))  # (L * (G + 1), S)
        lin1, lin2 = cast(nn.Linear, model.post[1]), cast(nn.Linear, model.post[3])
        self._w1, self._b1 = np.ascontiguousarray(f(lin1.weight).T), f(lin1.bias)
        self._w2, self._b2 = np.ascontiguousarray(f(lin2.weight).T), f(lin2.bias)
        self._bdil = np.stack(bdil)  # (L, 2G), added to the conditioning
        self._dil = [cast(GatedLayer, layer).dilation for layer in model.layers]

    @torch.no_grad()
    def prime(self, audio_0: Tensor) -> None:
        """Fill the queues from the warm start, with ``audio_0`` (B, A) as its audio."""
        model, stream = self.model, self._stream
        B, R, _ = stream.shape
        assert audio_0.shape == (B, model.config.audio_dim), (
            f"audio_0 should be {(B, model.config.audio_dim)}, got {tuple(audio_0.shape)}"
        )
        k, G2 = model.config.kernel_size, 2 * model.config.gate_channels
        cond = model.condition(audio_0)[:, None].expand(B, R - 1, -1, -1)  # (B, R-1, L, 2G)
        x = model.pose_in(stream[:, :-1])  # (B, R-1, R_ch): frames -R+1 .. -1
        self._queues = []
        for i, layer in enumerate(model.layers):
            h = cast(GatedLayer, layer).history
            past = x[:, x.shape[1] - h :].numpy() @ self._wcat[i][:, G2:]  # (B, h, (k-1) 2G)
            # the input at time m in slot m % h: times -h .. -1 are slots 0 .. h - 1
            q = np.ascontiguousarray(past.reshape(B, h, k - 1, G2).transpose(1, 0, 2, 3))
            self._queues.append(q)  # (h, B, k - 1, 2G)
            x, _ = layer(x, cond[:, :, i])
        self._plan = []  # per layer: weights, buffers and the views step writes through
        for i, (w, q) in enumerate(zip(self._wcat, self._queues, strict=True)):
            y = np.empty((B, w.shape[1]), w.dtype)
            y_past = y[:, G2:].reshape(B, k - 1, G2)
            zi1 = self._z[:, i]
            self._plan.append(
                (w, y, y[:, :G2], y_past, q, self._dil[i], zi1[:, :-1], zi1, self._wres[i])
            )

    @torch.no_grad()
    def step(self, audio_t: Tensor) -> Tensor:
        """audio_t (B, A), the audio feature of the next frame -> its sampled pose (B, P)."""
        if self._queues is None:
            self.prime(audio_t)
        return self.step_cond(self.model.condition(audio_t))

    def step_cond(self, cond_t: Tensor) -> Tensor:
        """``step`` from precomputed conditioning cond_t (B, n_layers_total, 2G)."""
        return self.steps(cond_t[:, None])[:, 0]

    @torch.no_grad()
    def steps(self, cond: Tensor) -> Tensor:
        """``step_cond`` for each of T frames: cond (B, T, n_layers_total, 2G) -> (B, T, P)."""
        assert self._queues is not None, "call prime() (or step()) first"
        B, T = cond.shape[:2]
        P = self.model.config.pose_dim
        # (T, B, L, 2G): the dilated conv's bias and the halved gate folded in, once
        c = (cond.detach().numpy().transpose(1, 0, 2, 3) + self._bdil) * self._half
        out = np.empty((T, B, P), self._np_dtype)
        with _one_blas_thread():
            for t in range(T):
                out[t] = self._step(c[t])
        return torch.from_numpy(out.transpose(1, 0, 2).copy())

    def _step(self, c: np.ndarray) -> np.ndarray:
        """One frame: c (B, L, 2G) prepared conditioning -> pose (B, P)."""
        n, x, h, hf, hg, one, r = self.n, self._x, self._h, self._hf, self._hg, self._one, self._r
        np.dot(self._pose, self._w_in, out=x)  # (B, R)
        for i, (w, y, y_cur, y_past, q, d, zi, zi1, w_res) in enumerate(self._plan):
            hist = len(q)
            np.dot(x, w, out=y)  # (B, k 2G): current tap, then this input's past taps
            np.add(y_cur, c[:, i], out=h)
            for m in range(q.shape[2]):  # lag m + 1: the input (m + 1) d steps ago
                np.add(h, q[(n - (m + 1) * d) % hist, :, m], out=h)
            q[n % hist] = y_past  # after reading: the slot of the oldest input
            np.tanh(h, out=h)
            np.add(hg, one, out=hg)
            np.multiply(hf, hg, out=zi)  # 2 tanh(filter) sigmoid(gate)
            np.dot(zi1, w_res, out=r)  # (B, R), bias included
            np.add(x, r, out=x)
        skip, hid, head = self._skip, self._hid, self._head
        np.dot(self._z_flat, self._wskip, out=skip)  # (B, S), every layer's bias included
        np.maximum(skip, 0.0, out=skip)
        np.dot(skip, self._w1, out=hid)
        np.add(hid, self._b1, out=hid)
        np.maximum(hid, 0.0, out=hid)
        np.dot(hid, self._w2, out=head)
        np.add(head, self._b2, out=head)
        mean, nls = self._mean, self._nls
        np.minimum(nls, self.model.max_neg_log_sigma, out=nls)
        if self.temperature == 0:
            pose = mean
        else:
            eps = torch.randn(mean.shape, generator=self.generator, dtype=self._dtype).numpy()
            pose = mean + self.temperature * np.exp(-nls) * eps
        self._pose_view[...] = pose
        self.n += 1
        return pose


@functools.cache
def _blas_controller() -> Any:
    try:
        from threadpoolctl import ThreadpoolController  # with scikit-learn, via librosa
    except ImportError:  # pragma: no cover - only speed depends on it
        return None
    return ThreadpoolController()


def _one_blas_thread() -> contextlib.AbstractContextManager[Any]:
    """numpy's BLAS on one thread inside: a batch-1 step's matrix-vector products are a few
    microseconds, and waking a second BLAS thread for each costs more than it saves (paper
    size 2x slower on 2 busy cores). A no-op without threadpoolctl."""
    controller = _blas_controller()
    if controller is None:
        return contextlib.nullcontext()
    return controller.limit(limits=1, user_api="blas")


def make_sampler(
    model: HeadPoseModel,
    *,
    history: Tensor,
    temperature: float = 1.0,
    generator: torch.Generator | None = None,
) -> HeadPoseSampler | FastHeadPoseSampler:
    """The cheapest streaming sampler for the model: ``FastHeadPoseSampler`` on the CPU in
    float32/float64, ``HeadPoseSampler`` otherwise (on a GPU a step is kernel launches either
    way). Both have ``prime``, ``step``, ``step_cond`` and ``steps``."""
    kw: dict[str, Any] = {"history": history, "temperature": temperature, "generator": generator}
    return FastHeadPoseSampler(model, **kw) if _fast_ok(model) else HeadPoseSampler(model, **kw)


def _fast_ok(model: HeadPoseModel) -> bool:
    param = next(model.parameters())
    return param.device.type == "cpu" and param.dtype in (torch.float32, torch.float64)


def _run_sampler(
    sampler: HeadPoseSampler | FastHeadPoseSampler, model: HeadPoseModel, audio: Tensor
) -> Tensor:
    """Prime ``sampler`` with audio (B, T, A)'s first frame and sample all: (B, T, P)."""
    cond = model.condition(audio)  # (B, T, L, 2G), one matmul for the whole clip
    sampler.prime(audio[:, 0])
    return sampler.steps(cond)


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


def _check_audio(audio: Tensor, config: HeadPoseConfig) -> tuple[int, int, int]:
    if audio.dim() != 3 or audio.shape[-1] != config.audio_dim or audio.shape[1] < 1:
        raise InputError(
            f"audio must be (B, T, {config.audio_dim}) with T >= 1, got {tuple(audio.shape)}"
        )
    B, T, A = audio.shape
    return B, T, A


def benchmark_samplers(
    config: HeadPoseConfig, T: int, *, batch: int = 1, seed: int = 0
) -> tuple[float, float]:
    """Seconds to sample ``T`` frames with ``sample_naive`` and with ``sample`` (CPU, float32,
    a randomly initialised model; one warm-up frame each first)."""
    torch.manual_seed(seed)
    model = HeadPoseModel(config).eval()
    audio = torch.randn(batch, T, config.audio_dim)
    history = torch.zeros(batch, config.pose_dim)
    times = []
    for fn in (model.sample_naive, model.sample):
        fn(audio[:, :1], history=history, generator=torch.Generator().manual_seed(seed))
        start = time.perf_counter()
        fn(audio, history=history, generator=torch.Generator().manual_seed(seed))
        times.append(time.perf_counter() - start)
    return times[0], times[1]
