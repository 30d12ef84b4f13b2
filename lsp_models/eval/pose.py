"""The head-pose section of ``lsp eval``: statistics and power spectra of sampled vs
recorded val poses.

Three tracks per dimension (:data:`~lsp_models.eval.metrics.POSE_DIMS`, degrees and mm):
the recorded val track, the model's samples for the val audio, and those samples as
``lsp animate`` uses them (amplified and smoothed). Each gets its standard deviation, its
mean absolute velocity per frame and its power spectrum (the share of power in each band
of :data:`POSE_BANDS_HZ`, and the spectral centroid): jitter shows as power above a few
Hz and a higher centroid, a frozen head as a small std. The recorded track is also given
smoothed the way animate smooths samples (``recorded_smoothed``): the tracker's
frame-to-frame jitter, which is not head motion, is most of the recorded |velocity| on
some axes (on pexels' depth, 10x), and that is the reference the animated track can reach.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from lsp_models.eval.data import ValSplit
from lsp_models.eval.metrics import pose_statistics
from lsp_models.infer.config import AnimateConfig
from lsp_models.infer.loading import Models, pose_history, recorded_poses
from lsp_models.infer.motion import smooth_pose
from lsp_models.infer.predict import postprocess_pose, sample_poses
from lsp_models.sampling.calibrate import uncalibrated
from lsp_prep.constants import FPS
from lsp_prep.errors import InputError
from lsp_prep.progress import ProgressFn

POSE_BANDS_HZ = (0.0, 0.5, 2.0, 6.0, FPS / 2)
"""Edges (Hz) of the power-spectrum bands: slow drift, head gestures, fast nods, jitter."""


@dataclass(frozen=True)
class PoseEval:
    """Head-pose statistics per dimension (:data:`POSE_DIMS`, units :data:`POSE_UNITS`)."""

    frames: int
    """Val frames sampled."""
    valid_frames: int
    """Valid val frames of the recorded track."""
    seeds: list[int]
    temperature: float
    recorded: dict[str, list[Any]]
    """``mean``, ``std``, ``mean_abs_velocity`` (per frame), each per dimension, and the
    spectrum: ``band_power`` (one list per dimension: the share of each band of
    ``bands_hz``) and ``centroid_hz``."""
    recorded_smoothed: dict[str, list[Any]]
    """The recorded track smoothed with animate's filters (no amplification)."""
    sampled: dict[str, list[Any]]
    """Mean over seeds of each seed's statistics (the model's output)."""
    animated: dict[str, list[Any]]
    """The same after animate's amplification and smoothing."""
    sampled_per_seed: list[dict[str, list[Any]]]
    std_ratio: list[float]
    """sampled std / recorded std."""
    animated_std_ratio: list[float]
    """animated std / recorded std."""
    velocity_ratio: list[float]
    """sampled mean |velocity| / recorded mean |velocity|."""
    animated_velocity_ratio: list[float]
    """animated mean |velocity| / recorded mean |velocity|."""
    animated_velocity_ratio_smoothed: list[float]
    """animated mean |velocity| / mean |velocity| of ``recorded_smoothed``."""
    bands_hz: list[float]
    """Band edges of ``band_power`` (Hz)."""
    gain: list[float] | None = None
    """The model's range calibration (``headpose.range_calibration``) per dimension: the
    gain on the samples' deviations from the mean pose (of their slow band with
    ``headpose.range_slow_frames``); None without one."""
    gain_fast: list[float] | None = None
    """With ``headpose.range_slow_frames``: the gain on the fast band; None otherwise."""
    raw_std_ratio: list[float] | None = None
    """With a calibration: ``std_ratio`` of the same model sampled without it (same seeds)."""
    raw_velocity_ratio: list[float] | None = None
    """With a calibration: ``velocity_ratio`` of the same model sampled without it."""


def pose_spectrum(
    pose: np.ndarray,
    valid: np.ndarray | None = None,
    *,
    fps: float = FPS,
    bands_hz: tuple[float, ...] = POSE_BANDS_HZ,
) -> dict[str, np.ndarray]:
    """Power spectrum of each pose dimension (N, 6) (radians, cm), summarised.

    Frames not ``valid`` are filled by linear interpolation between valid ones; each
    dimension loses its mean, is Hann-windowed and transformed (``rfft``). The DC bin is
    left out. Returns ``band_power`` (6, B): the share of the power in ``[lo, hi)`` of
    each band of ``bands_hz`` (the last band includes Nyquist; the shares sum to 1), and
    ``centroid_hz`` (6,): the power-weighted mean frequency. NaN where there are fewer
    than 4 valid frames or a dimension is constant. Units do not matter (shares).
    """
    pose = np.asarray(pose, np.float64)
    if pose.ndim != 2:
        raise InputError(f"pose must be (N, D), got {pose.shape}")
    n, d = pose.shape
    ok = np.ones(n, bool) if valid is None else np.asarray(valid, bool)
    edges = np.asarray(bands_hz, np.float64)
    nan = {"band_power": np.full((d, len(edges) - 1), np.nan), "centroid_hz": np.full(d, np.nan)}
    if ok.sum() < 4:
        return nan
    t, good = np.arange(n), np.flatnonzero(ok)
    x = np.stack([np.interp(t, good, pose[good, j]) for j in range(d)], 1)  # (N, D)
    x = (x - x.mean(0)) * np.hanning(n)[:, None]
    power = np.abs(np.fft.rfft(x, axis=0)[1:]) ** 2  # (F, D), no DC
    freq = np.fft.rfftfreq(n, 1 / fps)[1:]
    total = power.sum(0)
    with np.errstate(divide="ignore", invalid="ignore"):
        band = np.stack(
            [
                power[(freq >= lo) & ((freq < hi) | (hi == edges[-1]))].sum(0)
                for lo, hi in itertools.pairwise(edges)
            ],
            1,
        )  # (D, B)
        band = band / total[:, None]
        centroid = (freq[:, None] * power).sum(0) / total
    flat = total <= 1e-20 * max(float(total.max()), 1e-300)
    band[flat], centroid[flat] = np.nan, np.nan
    return {"band_power": band, "centroid_hz": centroid}


def pose_summary(pose: np.ndarray, valid: np.ndarray | None = None) -> dict[str, np.ndarray]:
    """:func:`~lsp_models.eval.metrics.pose_statistics` and :func:`pose_spectrum` of poses
    (N, 6) in one dict."""
    return {**pose_statistics(pose, valid), **pose_spectrum(pose, valid)}


def _lists(stats: dict[str, np.ndarray]) -> dict[str, list[Any]]:
    return {k: np.asarray(a, np.float64).tolist() for k, a in stats.items()}


def _mean_stats(stats: list[dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
    return {k: np.mean([s[k] for s in stats], axis=0) for k in stats[0]}


def _ratio(a: np.ndarray, b: np.ndarray) -> list[float]:
    with np.errstate(divide="ignore", invalid="ignore"):
        return [float(v) for v in np.asarray(a) / np.asarray(b)]


def eval_pose(
    models: Models,
    dataset: Path,
    feats: np.ndarray,
    data: ValSplit,
    *,
    seeds: list[int],
    temperature: float,
    config: AnimateConfig,
    progress: ProgressFn,
) -> PoseEval:
    val = data.val
    valid = data.valid[val]
    track = recorded_poses(dataset, val)
    recorded = pose_summary(track, valid)
    recorded_smoothed = pose_summary(smooth_pose(track, config, models.delay), valid)
    history = pose_history(models, dataset)
    sampled, animated = [], []
    progress("headpose", 0, len(seeds))
    for i, s in enumerate(seeds):
        pose = sample_poses(models, feats[val], history=history, temperature=temperature, seed=s)
        sampled.append(pose_summary(pose))
        animated.append(pose_summary(postprocess_pose(models, pose, config)))
        progress("headpose", i + 1, len(seeds))
    s_mean, a_mean = _mean_stats(sampled), _mean_stats(animated)
    vel = "mean_abs_velocity"
    raw: dict[str, Any] = {}
    hp = models.headpose
    if hp.pose_gain is not None:  # and the same model without it
        plain = replace(models, headpose=uncalibrated(hp))
        raw_stats = _mean_stats(
            [
                pose_statistics(
                    sample_poses(
                        plain, feats[val], history=history, temperature=temperature, seed=s
                    )
                )
                for s in seeds
            ]
        )
        raw = {
            "gain": hp.pose_gain.double().cpu().numpy().tolist(),
            "gain_fast": None
            if hp.pose_gain_fast is None
            else hp.pose_gain_fast.double().cpu().numpy().tolist(),
            "raw_std_ratio": _ratio(raw_stats["std"], recorded["std"]),
            "raw_velocity_ratio": _ratio(raw_stats[vel], recorded[vel]),
        }
    return PoseEval(
        frames=len(val),
        valid_frames=int(valid.sum()),
        seeds=seeds,
        temperature=temperature,
        recorded=_lists(recorded),
        recorded_smoothed=_lists(recorded_smoothed),
        sampled=_lists(s_mean),
        animated=_lists(a_mean),
        sampled_per_seed=[_lists(s) for s in sampled],
        std_ratio=_ratio(s_mean["std"], recorded["std"]),
        animated_std_ratio=_ratio(a_mean["std"], recorded["std"]),
        velocity_ratio=_ratio(s_mean[vel], recorded[vel]),
        animated_velocity_ratio=_ratio(a_mean[vel], recorded[vel]),
        animated_velocity_ratio_smoothed=_ratio(a_mean[vel], recorded_smoothed[vel]),
        bands_hz=[float(b) for b in POSE_BANDS_HZ],
        **raw,
    )
