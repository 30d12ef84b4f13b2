"""The streaming torch sampler with WaveNet's fast-generation queues (one layer pass per frame)."""

from __future__ import annotations

from typing import cast

import torch
from torch import Tensor

from lsp_models.nets.headpose import GatedLayer, HeadPoseModel
from lsp_models.sampling.draws import (
    PoseGain,
    check_temperature,
    draw,
    warm_start,
    with_velocity,
)


class HeadPoseSampler:
    """Streaming sampler: holds every layer's queue and the last pose; ``step`` one frame.

    ``step(audio_t (B, A)) -> pose_t (B, P)``. The queues are filled from the warm start
    (``history`` replicated back, the first frame's audio) on the first ``step`` or an
    explicit ``prime``. Dropout is never applied, whatever the model's mode. With
    ``velocity`` (:func:`~lsp_models.sampling.draws.velocity_map`) each pose's velocity half
    is recomputed from the poses before it is returned and fed back. A model with a
    ``pose_gain`` (``range_calibration``) gets its pose half scaled on the way out only
    (:class:`~lsp_models.sampling.draws.PoseGain`).
    """

    def __init__(
        self,
        model: HeadPoseModel,
        *,
        history: Tensor,
        temperature: float = 1.0,
        generator: torch.Generator | None = None,
        velocity: Tensor | None = None,
    ) -> None:
        check_temperature(temperature)
        self.model = model
        self.temperature = float(temperature)
        self.generator = generator
        self.velocity = velocity
        self.n = 0  # frames produced so far
        self._stream = warm_start(history, model.receptive_field, model.config)  # (B, R, P)
        self._pose_prev = self._stream[:, -1]  # (B, P)
        self._gain = PoseGain(model, self._pose_prev)
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
        mean, nls = model.head(skip, self._pose_prev)  # (B, P) each
        pose = draw(mean, nls, self.temperature, self.generator)
        pose = with_velocity(pose, self._pose_prev, self.velocity)
        self._pose_prev = pose  # fed back unscaled: the gain is applied to what is returned
        self.n += 1
        return self._gain(pose[:, None])[:, 0]

    @torch.no_grad()
    def steps(self, cond: Tensor) -> Tensor:
        """``step_cond`` for each of T frames: cond (B, T, n_layers_total, 2G) -> (B, T, P)."""
        return torch.stack([self.step_cond(cond[:, t]) for t in range(cond.shape[1])], dim=1)
