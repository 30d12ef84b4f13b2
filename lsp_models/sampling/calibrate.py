"""The range calibration of ``HeadPoseConfig.range_calibration``: a per-axis gain on the
sampled poses (or two, for their slow and fast bands: ``range_slow_frames``), measured on a
free run over the training audio.

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
from lsp_models.sampling.draws import slow_band

CALIBRATION_SEED = 20211
"""Generator seed of the calibration's free runs (none of ``lsp eval``'s seeds 0, 1, 2)."""
CALIBRATION_CHAINS = 8
"""Free runs sampled side by side (one batch); their statistics are averaged."""
MAX_GAIN = 4.0
"""The gain is kept within ``[1 / MAX_GAIN, MAX_GAIN]``: a model that has frozen or
exploded is not hidden by the calibration."""
BAND_RATIOS = np.exp(np.linspace(-2 * np.log(MAX_GAIN), 2 * np.log(MAX_GAIN), 481))
"""The fast-to-slow gain ratios the two-band calibration tries (log-spaced, 1.2 % apart:
the speed/std balance it reaches is within 0.6 % of the recorded one where it is reachable)."""


@dataclass(frozen=True)
class Calibration:
    """What :func:`calibrate` measured, per axis of the pose half (pitch, yaw, roll, x, y, z)."""

    gain: np.ndarray
    """One band: ``1 / sqrt(std * speed)``: one scale cannot fix a range and a speed that
    are off by different factors; the geometric mean leaves them equally far off (in log)
    after it. Two bands: the slow band's gain."""
    std: np.ndarray
    """The free run's std / the recorded std, before the gain."""
    speed: np.ndarray
    """The same for the mean |frame-to-frame change|."""
    fast_gain: np.ndarray | None = None
    """Two bands (``range_slow_frames``): the fast band's gain; None with one."""


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
    plain = replace(model.config, range_calibration=False, range_slow_frames=0.0)
    net = HeadPoseModel(plain).eval()
    gains = ("pose_gain", "pose_gain_fast")
    net.load_state_dict({k: v for k, v in model.state_dict().items() if k not in gains})
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
    if model.pose_gain_fast is None:
        gain = np.clip(1 / np.sqrt(std * speed), 1 / MAX_GAIN, MAX_GAIN)
        return Calibration(gain=gain, std=std, speed=speed)
    pose = chains[..., :h].double()  # (B, T, h)
    slow = slow_band(pose, history[-1, :h].double()[None].expand(B, -1), model.slow_alpha)
    g_slow, g_fast = band_gains(slow.numpy(), (pose - slow).numpy(), std=std, speed=speed)
    return Calibration(gain=g_slow, std=std, speed=speed, fast_gain=g_fast)


def band_gains(
    slow: np.ndarray, fast: np.ndarray, *, std: np.ndarray, speed: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """The gains ``a`` (slow) and ``b`` (fast) per axis that give ``a * slow + b * fast``
    (free runs (C, T, K) split in two, ``slow + fast`` the runs themselves) ``1 / std``
    times the runs' std and ``1 / speed`` times their mean |frame-to-frame change| (``std``
    and ``speed`` (K,): the runs' ratios to the recorded ones), each averaged over the runs
    as :func:`calibrate` measures them.

    Both are proportional to ``a`` for a given ratio ``r = b / a``, so ``r`` alone sets
    their balance: ``r`` is the one of :data:`BAND_RATIOS` whose speed/std is closest (in
    log) to the wanted one, then ``a`` makes the std right. Each gain is clipped to
    ``[1 / MAX_GAIN, MAX_GAIN]`` afterwards (a balance out of reach stays off)."""
    slow, fast = np.asarray(slow, np.float64), np.asarray(fast, np.float64)
    s0, f0 = slow - slow.mean(1, keepdims=True), fast - fast.mean(1, keepdims=True)
    # per run and axis: var(s + r f) = vss + 2 r vsf + r^2 vff (population variances)
    vss, vsf, vff = (s0**2).mean(1), (s0 * f0).mean(1), (f0**2).mean(1)  # (C, K)
    ds, df = np.diff(slow, axis=1), np.diff(fast, axis=1)  # (C, T - 1, K)
    want_std = np.sqrt(vss + 2 * vsf + vff).mean(0) / np.asarray(std)  # (K,)
    want_speed = np.abs(ds + df).mean((0, 1)) / np.asarray(speed)
    r = BAND_RATIOS[:, None, None]  # (R, 1, 1)
    sd = np.sqrt(np.maximum(vss + 2 * r * vsf + r**2 * vff, 0)).mean(1)  # (R, K)
    vel = np.stack([np.abs(ds + x * df).mean((0, 1)) for x in BAND_RATIOS])  # (R, K)
    with np.errstate(divide="ignore", invalid="ignore"):
        miss = np.abs(np.log(vel / sd) - np.log(want_speed / want_std))  # (R, K)
    miss = np.where(np.isfinite(miss), miss, np.inf)
    best = miss.argmin(0)  # (K,)
    with np.errstate(divide="ignore", invalid="ignore"):
        a = want_std / sd[best, np.arange(len(best))]
    a = np.where(np.isfinite(a), a, 1.0)  # a frozen axis: left alone
    b = a * BAND_RATIOS[best]
    return np.clip(a, 1 / MAX_GAIN, MAX_GAIN), np.clip(b, 1 / MAX_GAIN, MAX_GAIN)


def apply(model: HeadPoseModel, calibration: Calibration | None) -> None:
    """Write ``calibration``'s gains into the model's buffers (None: gains of 1)."""
    assert model.pose_gain is not None, (
        "the model has no calibration buffer: HeadPoseConfig.range_calibration is off"
    )
    fast = model.pose_gain_fast
    if calibration is None:
        model.pose_gain.fill_(1.0)
        if fast is not None:
            fast.fill_(1.0)
        return
    assert (fast is None) == (calibration.fast_gain is None), (
        "the calibration and the model disagree on the bands (HeadPoseConfig.range_slow_frames)"
    )
    model.pose_gain.copy_(torch.from_numpy(calibration.gain))
    if fast is not None and calibration.fast_gain is not None:
        fast.copy_(torch.from_numpy(calibration.fast_gain))


def uncalibrated(model: HeadPoseModel) -> HeadPoseModel:
    """A copy of ``model`` that samples as it would without its calibration."""
    plain = copy.deepcopy(model)
    if plain.pose_gain is not None:
        apply(plain, None)
    return plain
