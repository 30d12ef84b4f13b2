"""The range calibration of ``HeadPoseConfig.range_calibration``: a per-axis gain on the
sampled poses, measured on a free run over the training audio.

Why a gain (issue 12 item 6; README, head motion): a free-running autoregressive sampler's
range depends on how strongly its learnt dynamics pull back, and small differences in
those between training seeds give large differences in the range (cpu-small on the
speech-driven speaker: pitch 1.5x the recorded std at one training seed, 2.8x at another).
The gain is measured per checkpoint, on the audio the model was trained on, and scales
only what the samplers return: the dynamics, the spectrum and the fed-back poses are the
model's own.
"""

from __future__ import annotations

import copy

import numpy as np
import torch
from torch import Tensor

from lsp_models.eval.metrics import pose_statistics
from lsp_models.nets.headpose import HeadPoseModel
from lsp_models.sampling import sample_fast

CALIBRATION_SEED = 20211
"""Generator seed of the calibration's free runs (none of ``lsp eval``'s seeds 0, 1, 2)."""
CALIBRATION_CHAINS = 4
"""Free runs sampled side by side (one batch); their statistics are averaged."""
MAX_GAIN = 4.0
"""The gain is kept within ``[1 / MAX_GAIN, MAX_GAIN]``: a model that has frozen or
exploded is not hidden by the calibration."""


@torch.no_grad()
def range_gain(
    model: HeadPoseModel,
    audio: Tensor,
    *,
    history: Tensor,
    recorded: np.ndarray,
    valid: np.ndarray,
    temperature: float,
    velocity: Tensor | None,
) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """The per-axis gain that brings the model's free-running range and speed to the
    recorded ones.

    Args:
        model: the head-pose model; sampled on a float32 CPU copy with its gain at 1.
        audio: (T, A) the audio features of the recorded frames.
        history: (H, P) the normalised pose features before the first frame (the warm start).
        recorded: (T, P // 2) the recorded poses of those frames, normalised as the model's.
        valid: (T,) the frames whose recorded pose counts.
        temperature: the sigma scale to calibrate for.
        velocity: what the samplers feed back velocities with
            (:func:`lsp_models.sampling.velocity_map`), as
            sampling uses it for this model (``velocity_feedback``), or None.

    Returns:
        gain (P // 2,): ``sqrt(std_rec / std_smp * speed_rec / speed_smp)`` per axis (std
        over frames and mean |frame-to-frame change|, each averaged over
        :data:`CALIBRATION_CHAINS` free runs), clipped to ``[1 / MAX_GAIN, MAX_GAIN]``: one
        scale cannot fix a range and a speed that are off by different factors, and the
        geometric mean leaves the two equally far off (in log) after it; and the raw ratios
        ``std`` and ``speed`` (P // 2,) of the samples to the recording.
    """
    net = copy.deepcopy(model).float().cpu().eval()
    if net.pose_gain is not None:
        net.pose_gain.fill_(1.0)
    T, h = len(audio), model.config.pose_dim // 2
    gen = torch.Generator().manual_seed(CALIBRATION_SEED)
    chains = sample_fast(
        net,
        audio.float().cpu()[None].expand(CALIBRATION_CHAINS, T, -1),
        history=history.float().cpu()[None].expand(CALIBRATION_CHAINS, -1, -1),
        temperature=temperature,
        generator=gen,
        velocity=velocity,
    )
    # pose_statistics' units (degrees, mm) cancel in the ratios: both sides are normalised
    rec = pose_statistics(recorded, valid)
    smp = [pose_statistics(c[:, :h].double().numpy()) for c in chains]
    std = np.mean([s["std"] for s in smp], 0) / rec["std"]
    speed = np.mean([s["mean_abs_velocity"] for s in smp], 0) / rec["mean_abs_velocity"]
    gain = np.clip(1 / np.sqrt(std * speed), 1 / MAX_GAIN, MAX_GAIN)
    return gain, {"std": std, "speed": speed}
