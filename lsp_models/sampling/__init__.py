"""Running the head-pose model autoregressively: three samplers with the same draws.

``sample_naive`` recomputes the whole causal network over the last ``receptive_field``
inputs for every frame; ``sample`` (and the streaming :class:`HeadPoseSampler` it is built
on) keeps WaveNet's "fast generation" queues, the last ``(kernel_size - 1) * dilation``
inputs of every layer, so a frame costs one pass through the layers at one time step. With
the same generator both give the same poses. :class:`FastHeadPoseSampler` (``sample_fast``,
``make_sampler``; what ``lsp animate`` uses on the CPU) runs that same step in a few numpy
calls per layer: equal to ``sample`` up to rounding order, with the same draws, and several
times cheaper per frame at batch 1.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from lsp_models.nets.headpose import HeadPoseModel
from lsp_models.sampling.cached import HeadPoseSampler
from lsp_models.sampling.draws import (
    PoseGain,
    check_audio,
    draw,
    velocity_map,
    warm_start,
    with_velocity,
)
from lsp_models.sampling.fast import FastHeadPoseSampler, fast_ok

__all__ = [
    "FastHeadPoseSampler",
    "HeadPoseSampler",
    "draw",
    "make_sampler",
    "sample",
    "sample_fast",
    "sample_naive",
    "velocity_map",
    "warm_start",
]


@torch.no_grad()
def sample(
    model: HeadPoseModel,
    audio: Tensor,
    *,
    history: Tensor,
    temperature: float = 1.0,
    generator: torch.Generator | None = None,
    velocity: Tensor | None = None,
) -> Tensor:
    """Sample a pose sequence for ``audio`` (B, T, A), frame by frame (fast, cached).

    ``history`` is the pose feature before the first frame: (B, P), or (B, H, P) oldest
    first. It is replicated back to fill the receptive field, with ``audio[:, 0]`` as
    the audio of those frames (the official inference's warm start). Each sampled
    12-dim feature is fed back as it is, velocities included; a caller that wants
    consistent velocities passes ``velocity`` (:func:`velocity_map`): each drawn feature's
    velocity half is then recomputed from its poses before it is fed back. A model with a
    ``pose_gain`` (``HeadPoseConfig.range_calibration``) has the pose half of what is
    returned multiplied by it (by band with ``range_slow_frames``:
    :class:`~lsp_models.sampling.draws.PoseGain`); what is fed back is not. ``temperature``
    scales sigma (0 gives the mean path; the official inference uses 0.3).
    ``generator`` must live on ``audio``'s device; one (B, P) normal draw per frame.

    Returns: (B, T, P) sampled pose features of frames 0 .. T - 1.
    """
    check_audio(audio, model.config)
    sampler = HeadPoseSampler(
        model, history=history, temperature=temperature, generator=generator, velocity=velocity
    )
    return _run_sampler(sampler, model, audio)


@torch.no_grad()
def sample_fast(
    model: HeadPoseModel,
    audio: Tensor,
    *,
    history: Tensor,
    temperature: float = 1.0,
    generator: torch.Generator | None = None,
    velocity: Tensor | None = None,
) -> Tensor:
    """Same contract and same draws as ``sample``, through ``make_sampler``: on the CPU
    the numpy ``FastHeadPoseSampler`` (equal up to rounding order, several times
    cheaper per frame), elsewhere ``HeadPoseSampler`` itself."""
    check_audio(audio, model.config)
    sampler = make_sampler(
        model, history=history, temperature=temperature, generator=generator, velocity=velocity
    )
    return _run_sampler(sampler, model, audio)


@torch.no_grad()
def sample_naive(
    model: HeadPoseModel,
    audio: Tensor,
    *,
    history: Tensor,
    temperature: float = 1.0,
    generator: torch.Generator | None = None,
    velocity: Tensor | None = None,
) -> Tensor:
    """Same contract and same draws as ``sample``, but each frame reruns the whole
    network over its last ``receptive_field`` inputs: the reference ``sample`` is
    checked against, and the baseline of ``benchmark_samplers``."""
    B, T, _ = check_audio(audio, model.config)
    R = model.receptive_field
    pose_in = audio.new_empty(B, R - 1 + T, model.config.pose_dim)  # input stream
    pose_in[:, :R] = warm_start(history, R, model.config)
    audio_in = torch.cat([audio[:, :1].expand(B, R - 1, -1), audio], dim=1)  # (B, R-1+T, A)
    out = audio.new_empty(B, T, model.config.pose_dim)
    for t in range(T):  # frame t is stream index R - 1 + t
        mean, nls = model.predict(pose_in[:, t : t + R], audio_in[:, t : t + R], dropout=False)
        out[:, t] = with_velocity(
            draw(mean[:, -1], nls[:, -1], temperature, generator), pose_in[:, R - 1 + t], velocity
        )
        if t + 1 < T:
            pose_in[:, R + t] = out[:, t]
    return PoseGain(model, pose_in[:, R - 1])(out)


def make_sampler(
    model: HeadPoseModel,
    *,
    history: Tensor,
    temperature: float = 1.0,
    generator: torch.Generator | None = None,
    velocity: Tensor | None = None,
) -> HeadPoseSampler | FastHeadPoseSampler:
    """The cheapest streaming sampler for the model: ``FastHeadPoseSampler`` on the CPU in
    float32/float64, ``HeadPoseSampler`` otherwise (on a GPU a step is kernel launches either
    way). Both have ``prime``, ``step``, ``step_cond`` and ``steps``."""
    kw: dict[str, Any] = {
        "history": history,
        "temperature": temperature,
        "generator": generator,
        "velocity": velocity,
    }
    return FastHeadPoseSampler(model, **kw) if fast_ok(model) else HeadPoseSampler(model, **kw)


def _run_sampler(
    sampler: HeadPoseSampler | FastHeadPoseSampler, model: HeadPoseModel, audio: Tensor
) -> Tensor:
    """Prime ``sampler`` with audio (B, T, A)'s first frame and sample all: (B, T, P)."""
    cond = model.condition(audio)  # (B, T, L, 2G), one matmul for the whole clip
    sampler.prime(audio[:, 0])
    return sampler.steps(cond)
