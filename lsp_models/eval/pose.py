"""The head-pose section of ``lsp eval``: statistics of sampled vs recorded val poses."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from lsp_models.eval.data import ValSplit
from lsp_models.eval.metrics import pose_statistics
from lsp_models.infer.config import AnimateConfig
from lsp_models.infer.loading import Models, pose_history, recorded_poses
from lsp_models.infer.predict import postprocess_pose, sample_poses
from lsp_prep.progress import ProgressFn


@dataclass(frozen=True)
class PoseEval:
    """Head-pose statistics per dimension (:data:`POSE_DIMS`, units :data:`POSE_UNITS`)."""

    frames: int
    """Val frames sampled."""
    valid_frames: int
    """Valid val frames of the recorded track."""
    seeds: list[int]
    temperature: float
    recorded: dict[str, list[float]]
    sampled: dict[str, list[float]]
    """Mean over seeds of each seed's statistics (the model's output)."""
    animated: dict[str, list[float]]
    """The same after animate's amplification and smoothing."""
    sampled_per_seed: list[dict[str, list[float]]]
    std_ratio: list[float]
    """sampled std / recorded std."""
    animated_std_ratio: list[float]


def _lists(stats: dict[str, np.ndarray]) -> dict[str, list[float]]:
    return {k: [float(v) for v in a] for k, a in stats.items()}


def _mean_stats(stats: list[dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
    return {k: np.mean([s[k] for s in stats], axis=0) for k in stats[0]}


def _ratio(a: np.ndarray, b: np.ndarray) -> list[float]:
    with np.errstate(divide="ignore", invalid="ignore"):
        return [float(v) for v in a / b]


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
    recorded = pose_statistics(recorded_poses(dataset, val), data.valid[val])
    history = pose_history(models, dataset)
    sampled, animated = [], []
    progress("headpose", 0, len(seeds))
    for i, s in enumerate(seeds):
        pose = sample_poses(models, feats[val], history=history, temperature=temperature, seed=s)
        sampled.append(pose_statistics(pose))
        animated.append(pose_statistics(postprocess_pose(models, pose, config)))
        progress("headpose", i + 1, len(seeds))
    s_mean, a_mean = _mean_stats(sampled), _mean_stats(animated)
    return PoseEval(
        frames=len(val),
        valid_frames=int(data.valid[val].sum()),
        seeds=seeds,
        temperature=temperature,
        recorded=_lists(recorded),
        sampled=_lists(s_mean),
        animated=_lists(a_mean),
        sampled_per_seed=[_lists(s) for s in sampled],
        std_ratio=_ratio(s_mean["std"], recorded["std"]),
        animated_std_ratio=_ratio(a_mean["std"], recorded["std"]),
    )
