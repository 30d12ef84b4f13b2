"""``lsp eval``: how good is a trained person, measured on the dataset's val split.

Three sections, each computed with the functions ``lsp animate`` runs
(:mod:`lsp_models.infer.predict`), each in its module (``mouth``, ``pose``, ``image``; the
numbers in ``metrics``):

mouth
    The paper's Table 1 measure: the mean Euclidean distance between predicted and tracked
    mouth points (the 25 mouth-related points, object coordinates, **mm** = the dataset's
    nominal cm x 10) over the valid val frames, beside the predict-the-mean baseline (the
    train-split mean dv_m), as ``train_mouth`` reports it. The features are the whole clip's
    APC features, manifold-projected as animate does (``error_mm``) and raw
    (``error_raw_mm``); each val run is fed with the following ``delay`` frames' features as
    look-ahead (the last feature repeated past the clip's end), so every val frame is
    predicted. Predictions are the model's raw output (no smoothing, no amplification).
    Lip sync: the Pearson correlation over time of the predicted and tracked mouth opening
    (distance between the upper and lower inner-lip midpoints). One row per mouth model:
    RUN/mouth/mouth.pt (the one animate uses) and any other ``RUN/mouth*/mouth.pt`` (e.g.
    RUN/mouth_d0/mouth.pt trained with another ``delay`` against the same APC), so delays
    can be compared.
headpose
    Per dimension (pitch, yaw, roll in **degrees**; translation x, y, z in **mm**, relative
    to the train-split mean) the mean, standard deviation and mean absolute velocity
    (**per frame** at 60 FPS) of the recorded val track (valid frames; a velocity needs two
    consecutive valid frames) and of poses sampled for the val audio with ``n_pose_samples``
    seeds: ``sampled`` is the model's output, ``animated`` the same after animate's
    amplification and Gaussian smoothing. Statistics side by side, averaged over seeds,
    with the ratio of standard deviations sampled / recorded; no single number claims the
    distributions match.
image
    The renderer alone: each valid val frame (or ``max_frames`` of them, evenly strided) is
    rendered from its *tracked* feature map with the candidate images (the conditioning the
    renderer was trained with) and compared with the real frame, both at the renderer's
    size: L1 (mean absolute difference, **0-255**), PSNR (**dB**, peak 255, per frame then
    averaged) and SSIM (:func:`ssim`: Gaussian window 11x11, sigma 1.5, K1 = 0.01,
    K2 = 0.03, per RGB channel then averaged; equal to scikit-image's
    ``structural_similarity(..., channel_axis=-1, gaussian_weights=True,
    use_sample_covariance=False, data_range=255)``).

Every number lands in RUN/eval.json (written atomically; non-finite numbers as null) with
the dataset path, frame counts and checkpoint steps.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from lsp_models.constants import SAMPLING_TEMPERATURE
from lsp_models.eval.data import ValSplit, read_val
from lsp_models.eval.image import ImageEval, eval_image
from lsp_models.eval.metrics import POSE_DIMS, POSE_UNITS
from lsp_models.eval.mouth import MouthEval, eval_mouth, mouth_checkpoints, swap_mouth
from lsp_models.eval.pose import PoseEval, eval_pose
from lsp_models.infer.config import resolve_config, write_json
from lsp_models.infer.loading import Models, find_dataset, load_models
from lsp_models.infer.predict import features_from_mel
from lsp_prep.errors import InputError
from lsp_prep.progress import ProgressFn

EVAL_FILE = "eval.json"
"""RUN/eval.json: the latest evaluation."""


@dataclass(frozen=True)
class EvalResult:
    dataset: Path
    run_dir: Path
    output: Path
    """The JSON written."""
    val_frames: int
    valid_val_frames: int
    steps: dict[str, int]
    """Checkpoint step of each stage."""
    mouth: list[MouthEval]
    pose: PoseEval
    image: ImageEval
    seconds: dict[str, float] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d = {k: str(v) if isinstance(v, Path) else v for k, v in d.items()}
        d["units"] = {
            "mouth": "mm (dataset cm x 10), object coordinates",
            "pose": dict(zip(POSE_DIMS, POSE_UNITS, strict=True)),
            "pose_velocity": "per 60 FPS frame",
            "image": "l1 0-255, psnr dB (peak 255), ssim (Gaussian 11x11 sigma 1.5, RGB mean)",
        }
        return _finite(d)


def _finite(x: Any) -> Any:
    """Non-finite floats -> None (valid JSON), numpy -> Python, recursively."""
    if isinstance(x, dict):
        return {k: _finite(v) for k, v in x.items()}
    if isinstance(x, list | tuple):
        return [_finite(v) for v in x]
    if isinstance(x, np.ndarray):
        return _finite(x.tolist())
    if isinstance(x, np.generic):
        x = x.item()
    if isinstance(x, float) and not math.isfinite(x):
        return None
    return x


def _steps(run_dir: Path) -> dict[str, int]:
    from lsp_models.train.checkpoint import load_checkpoint

    return {
        s: int(load_checkpoint(run_dir / s / f"{s}.pt", stage=s)["step"])
        for s in ("apc", "mouth", "headpose", "renderer")
    }


@contextlib.contextmanager
def _timed(timings: dict[str, float], key: str) -> Iterator[None]:
    """Seconds spent in the block, recorded as ``timings[key]``."""
    t0 = time.perf_counter()
    yield
    timings[key] = time.perf_counter() - t0


def _check_args(run_dir: Path, *, n_pose_samples: int, max_frames: int | None) -> None:
    if n_pose_samples < 1:
        raise InputError(f"n_pose_samples must be >= 1, got {n_pose_samples}")
    if max_frames is not None and max_frames < 1:
        raise InputError(f"max_frames must be >= 1, got {max_frames}")
    if not run_dir.is_dir():
        raise InputError(f"{run_dir}: run directory does not exist (train with `lsp train`)")


def _eval_mouths(
    run_dir: Path,
    models: Models,
    feats: dict[str, np.ndarray],
    data: ValSplit,
    *,
    delays: list[int] | None,
    progress: ProgressFn,
) -> list[MouthEval]:
    """Every RUN/mouth*/mouth.pt (those of ``delays`` only, when given) on the val split."""
    paths = mouth_checkpoints(run_dir)
    mouths = []
    progress("mouth", 0, len(paths))
    for i, path in enumerate(paths):
        swapped, step = swap_mouth(path, models)
        if delays is None or swapped.delay in delays:
            mouths.append(eval_mouth(path.parent.name, swapped, step, feats, data))
        progress("mouth", i + 1, len(paths))
    missing = sorted(set(delays or []) - {m.delay for m in mouths})
    if missing:
        raise InputError(
            f"{run_dir}: no mouth model with delay {missing} (RUN/mouth*/mouth.pt hold delays "
            f"{sorted({swap_mouth(p, models)[0].delay for p in paths})})"
        )
    return mouths


def evaluate(
    *,
    run_dir: Path,
    dataset: Path | None = None,
    delays: list[int] | None = None,
    n_pose_samples: int = 3,
    seed: int = 0,
    temperature: float = SAMPLING_TEMPERATURE,
    device: str = "auto",
    max_frames: int | None = None,
    output: Path | None = None,
    progress: ProgressFn | None = None,
) -> EvalResult:
    """Evaluate the person's models in ``run_dir`` on the val split of ``dataset`` (default:
    the one training recorded) and write the report to ``output`` (default RUN/eval.json).

    ``delays`` keeps only the mouth models trained with those delays (InputError if one has
    no model); ``n_pose_samples`` head-pose samples use seeds ``seed, seed + 1, ...`` at
    ``temperature`` (animate's default,
    :data:`~lsp_models.constants.SAMPLING_TEMPERATURE`); ``max_frames`` caps the rendered
    frames (evenly strided over the val split; the mouth and pose sections always use every
    val frame).
    Raises CheckpointError for a missing or incompatible checkpoint (naming the ``lsp train``
    command), SchemaError for a dataset of another schema version or missing a field,
    InputError for a dataset without val frames.
    """
    from lsp_models.train.device import pick_device

    progress = progress or (lambda stage, done, total: None)
    run_dir = Path(run_dir)
    _check_args(run_dir, n_pose_samples=n_pose_samples, max_frames=max_frames)
    dataset = Path(dataset) if dataset is not None else find_dataset(run_dir)
    data = read_val(dataset)
    dev = pick_device(device)
    timings: dict[str, float] = {}
    with _timed(timings, "features"):
        models = load_models(run_dir, device=dev)
        steps = _steps(run_dir)
        config = resolve_config(run_dir)
        raw = dataclasses.replace(config, lle_blend=0.0)
        feats = {
            "projected": features_from_mel(models, data.mel, config=config),
            "raw": features_from_mel(models, data.mel, config=raw),
        }
    with _timed(timings, "mouth"):
        mouths = _eval_mouths(run_dir, models, feats, data, delays=delays, progress=progress)
    with _timed(timings, "headpose"):
        seeds = [seed + i for i in range(n_pose_samples)]
        pose = eval_pose(
            models,
            dataset,
            feats["projected"],
            data,
            seeds=seeds,
            temperature=temperature,
            config=config,
            progress=progress,
        )
    with _timed(timings, "render"):
        image = eval_image(
            models,
            dataset,
            step=steps["renderer"],
            max_frames=max_frames,
            config=config,
            progress=progress,
        )
    out = Path(output) if output is not None else run_dir / EVAL_FILE
    result = EvalResult(
        dataset=dataset.resolve(),
        run_dir=run_dir.resolve(),
        output=out,
        val_frames=len(data.val),
        valid_val_frames=int(data.valid[data.val].sum()),
        steps=steps,
        mouth=mouths,
        pose=pose,
        image=image,
        seconds=timings,
    )
    write_json(out, result.to_dict(), allow_nan=False)
    return result
