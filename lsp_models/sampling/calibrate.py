"""The range calibration of ``HeadPoseConfig.range_calibration``: a per-axis gain on the
sampled poses, measured on a free run over the training audio.

Why (issue 12 item 6; README, head motion): a free-running autoregressive sampler's range
depends on how strongly its learnt dynamics pull back, and small differences in those
between training seeds give large differences in the range: cpu-small on the
speech-driven speaker, four training seeds, sampled std 0.89-3.17x the recorded one (even
the mean path, temperature 0, swings up to 3.6x). The gain is measured before the last
checkpoint, on the audio the model was trained on, and scales only what the samplers
return: the dynamics, the spectrum and the fed-back poses stay the model's own. Tried and
left out:
scaling the sampled sigma to the teacher-forced residuals first (0.66-0.96x the predicted
sigma, the model having learnt its sigma with pose dropout): over the same four seeds 17
of 24 std ratios in 0.8-1.25x against 22 of 24 with the gain alone (README).
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
"""The gain is kept within ``[1 / MAX_GAIN, MAX_GAIN]``: a model that has frozen or
exploded is not hidden by the calibration."""


@dataclass(frozen=True)
class Calibration:
    """What :func:`calibrate` measured, per axis of the pose half (pitch, yaw, roll, x, y, z)."""

    gain: np.ndarray
    """``1 / sqrt(std * speed)``: one scale cannot fix a range and a speed that are off by
    different factors; the geometric mean leaves them equally far off (in log) after it."""
    std: np.ndarray
    """The free run's std / the recorded std, before the gain."""
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
    """Measure the gain of ``model`` on its training data.

    Args:
        model: the head-pose model; measured on a float32 CPU copy (its calibration, if
            any, ignored).
        audio: (N, A) the audio features of the clip's frames.
        poses: (N, P) the normalised pose features of the clip's frames (as trained on).
        frames: the training frames, ascending: the free run is over their audio.
        history: (H, P) the warm start of the free run (animate's: the last training frames'
            poses, :func:`lsp_models.infer.loading.pose_history`).
        valid: (N,) the frames whose recorded pose counts.
        temperature: the sigma scale the samplers are calibrated for.
        velocity: what the samplers feed back velocities with
            (:func:`lsp_models.sampling.velocity_map`), as sampling uses it for this
            model (``velocity_feedback``), or None.
    """
    net = HeadPoseModel(replace(model.config, range_calibration=False)).eval()
    net.load_state_dict({k: v for k, v in model.state_dict().items() if k != "pose_gain"})
    h = model.config.pose_dim // 2
    B, T, f = CALIBRATION_CHAINS, len(frames), torch.from_numpy(frames)
    chains = sample_fast(
        net,
        audio.float().cpu()[f][None].expand(B, T, -1),
        history=history.float().cpu()[None].expand(B, -1, -1),
        temperature=temperature,
        generator=torch.Generator().manual_seed(CALIBRATION_SEED),
        velocity=velocity,
    )
    # pose_statistics' units (degrees, mm) cancel in the ratios: both sides are normalised
    rec = pose_statistics(poses.double().cpu()[f, :h].numpy(), np.asarray(valid, bool)[frames])
    smp = [pose_statistics(c[:, :h].double().numpy()) for c in chains]
    std = np.mean([s["std"] for s in smp], 0) / rec["std"]
    speed = np.mean([s["mean_abs_velocity"] for s in smp], 0) / rec["mean_abs_velocity"]
    gain = np.clip(1 / np.sqrt(std * speed), 1 / MAX_GAIN, MAX_GAIN)
    return Calibration(gain=gain, std=std, speed=speed)


def apply(model: HeadPoseModel, calibration: Calibration | None) -> None:
    """Write ``calibration``'s gain into the model's buffer (None: a gain of 1)."""
    assert model.pose_gain is not None, (
        "the model has no calibration buffer: HeadPoseConfig.range_calibration is off"
    )
    if calibration is None:
        model.pose_gain.fill_(1.0)
    else:
        model.pose_gain.copy_(torch.from_numpy(calibration.gain))


def uncalibrated(model: HeadPoseModel) -> HeadPoseModel:
    """A copy of ``model`` that samples as it would without its calibration."""
    plain = copy.deepcopy(model)
    if plain.pose_gain is not None:
        apply(plain, None)
    return plain
