"""``lsp eval``: how good is a trained person, measured on the dataset's val split.

Three sections, each computed with the functions ``lsp animate`` runs (:mod:`.animate`):

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

import dataclasses
import json
import math
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from lsp_models.infer import animate as A
from lsp_prep.dataset import schema
from lsp_prep.errors import InputError
from lsp_prep.layout import Layout, load_layout

ProgressFn = Callable[[str, int, "int | None"], None]
EVAL_FILE = "eval.json"
"""RUN/eval.json: the latest evaluation."""
POSE_DIMS = ("pitch", "yaw", "roll", "x", "y", "z")
POSE_UNITS = ("deg", "deg", "deg", "mm", "mm", "mm")
INNER_LIP_MIDPOINTS = (13, 14)
"""MediaPipe Face Mesh indices of the upper and lower inner-lip midpoints."""
CM_TO_MM = 10.0
"""Dataset lengths are nominal cm (9 cm outer-eye distance)."""


# ----------------------------------------------------------------------------- metrics


def point_distance(pred: np.ndarray, target: np.ndarray) -> float:
    """Mean Euclidean distance (mm) between points (N, P, 3) given in cm: averaged over
    frames and points. NaN for N = 0."""
    if pred.shape != target.shape or pred.shape[-1] != 3:
        raise InputError(f"point_distance needs equal (N, P, 3) arrays, got {pred.shape}, "
                         f"{target.shape}")  # fmt: skip
    if pred.size == 0:
        return math.nan
    return float(np.linalg.norm(pred - target, axis=-1).mean() * CM_TO_MM)


def inner_lip_indices(layout: Layout) -> tuple[int, int]:
    """Positions of the upper and lower inner-lip midpoints within the 25 mouth points."""
    mouth = list(layout.mouth)
    out = []
    for mp in INNER_LIP_MIDPOINTS:
        lsp = np.flatnonzero(layout.mediapipe_index == mp)
        if len(lsp) != 1 or int(lsp[0]) not in mouth:
            raise InputError(f"layout {layout.name}: MediaPipe point {mp} is not a mouth point")
        out.append(mouth.index(int(lsp[0])))
    return out[0], out[1]


def mouth_opening(points: np.ndarray, *, lips: tuple[int, int]) -> np.ndarray:
    """Mouth opening (N,) mm: distance between the inner-lip midpoints ``lips`` of the
    mouth points (N, 25, 3) in cm (mean shape + dv_m)."""
    return np.linalg.norm(points[:, lips[0]] - points[:, lips[1]], axis=-1) * CM_TO_MM


def correlation(a: np.ndarray, b: np.ndarray) -> float:
    """Pearson correlation of two series (N,); NaN when either is constant or N < 2."""
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    if len(a) < 2 or a.std() == 0 or b.std() == 0:
        return math.nan
    return float(np.corrcoef(a, b)[0, 1])


def pose_statistics(pose: np.ndarray, valid: np.ndarray | None = None) -> dict[str, np.ndarray]:
    """Statistics of poses (N, 6) (pitch, yaw, roll radians; translation cm) over the
    ``valid`` frames: ``mean``, ``std`` and ``mean_abs_velocity`` (per frame, over pairs of
    consecutive valid frames), each (6,) in degrees and mm."""
    pose = np.asarray(pose, np.float64)
    ok = np.ones(len(pose), bool) if valid is None else np.asarray(valid, bool)
    scale = np.array([180 / math.pi] * 3 + [CM_TO_MM] * 3)
    x = pose * scale
    pairs = ok[1:] & ok[:-1]
    vel = np.abs(np.diff(x, axis=0))[pairs]
    nan = np.full(6, np.nan)
    return {
        "mean": x[ok].mean(0) if ok.any() else nan,
        "std": x[ok].std(0) if ok.any() else nan,
        "mean_abs_velocity": vel.mean(0) if len(vel) else nan,
    }


def l1_error(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Mean absolute difference per image (B,) of uint8 images (B, H, W, C), 0-255 scale."""
    d = np.abs(a.astype(np.float64) - b.astype(np.float64))
    return d.reshape(len(d), -1).mean(1)


def psnr(a: np.ndarray, b: np.ndarray, *, data_range: float = 255.0) -> np.ndarray:
    """PSNR per image (B,) in dB: ``10 log10(data_range^2 / MSE)``; inf for equal images."""
    d = a.astype(np.float64) - b.astype(np.float64)
    mse = (d**2).reshape(len(d), -1).mean(1)
    with np.errstate(divide="ignore"):
        return 10 * np.log10(data_range**2 / mse)


def gaussian_window(size: int = 11, sigma: float = 1.5) -> np.ndarray:
    """Normalised 1-D Gaussian (size,), centred."""
    x = np.arange(size) - (size - 1) / 2
    w = np.exp(-(x**2) / (2 * sigma**2))
    return w / w.sum()


def ssim(
    a: np.ndarray,
    b: np.ndarray,
    *,
    data_range: float = 255.0,
    win_size: int = 11,
    sigma: float = 1.5,
    k1: float = 0.01,
    k2: float = 0.03,
) -> np.ndarray:
    """Structural similarity per image (B,) of images (B, H, W, C) (any dtype, values in
    ``[0, data_range]``): Wang et al. 2004 with a Gaussian window (``win_size`` taps,
    ``sigma``), population (co)variances, computed per channel on the "valid" region (no
    padding: the window never leaves the image) and averaged over the region and the
    channels. Identical images give 1."""
    if a.shape != b.shape or a.ndim != 4:
        raise InputError(f"ssim needs equal (B, H, W, C) arrays, got {a.shape}, {b.shape}")
    if min(a.shape[1:3]) < win_size:
        raise InputError(f"ssim needs images of at least {win_size}x{win_size}, got {a.shape}")
    w = torch.from_numpy(gaussian_window(win_size, sigma))
    c = a.shape[-1]
    kx = w.view(1, 1, 1, -1).repeat(c, 1, 1, 1)  # (C, 1, 1, win)
    ky = w.view(1, 1, -1, 1).repeat(c, 1, 1, 1)  # (C, 1, win, 1)

    def filt(x: torch.Tensor) -> torch.Tensor:  # (B, C, H, W) -> (B, C, H - win + 1, ...)
        x = torch.nn.functional.conv2d(x, kx, groups=c)
        return torch.nn.functional.conv2d(x, ky, groups=c)

    x = torch.from_numpy(np.asarray(a, np.float64)).permute(0, 3, 1, 2)  # (B, C, H, W)
    y = torch.from_numpy(np.asarray(b, np.float64)).permute(0, 3, 1, 2)
    mx, my = filt(x), filt(y)
    vx = filt(x * x) - mx * mx
    vy = filt(y * y) - my * my
    cxy = filt(x * y) - mx * my
    c1, c2 = (k1 * data_range) ** 2, (k2 * data_range) ** 2
    s = ((2 * mx * my + c1) * (2 * cxy + c2)) / ((mx**2 + my**2 + c1) * (vx + vy + c2))
    return s.mean(dim=(1, 2, 3)).numpy()


# ----------------------------------------------------------------------------- results


@dataclass(frozen=True)
class MouthEval:
    """One mouth model on the val split (distances in mm)."""

    name: str
    """Its folder in the run directory (``mouth`` is the one animate uses)."""
    delay: int
    step: int
    frames: int
    """Valid val frames measured."""
    error_mm: float
    """Mean point distance with manifold-projected features (as animate)."""
    error_raw_mm: float
    """The same with raw APC features (no projection)."""
    baseline_mm: float
    """Predicting the train-split mean for every frame."""
    opening_corr: float
    """Pearson correlation over time of predicted and tracked mouth opening."""
    opening_std_mm: float
    """Standard deviation of the predicted opening."""
    tracked_opening_std_mm: float


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


@dataclass(frozen=True)
class ImageEval:
    """Renders from tracked feature maps vs real val frames at the renderer's size."""

    image_size: int
    frames: int
    """Frames rendered."""
    val_frames: int
    """Valid val frames available (``frames`` of them, evenly strided, were rendered)."""
    step: int
    l1: float
    psnr_db: float
    ssim: float
    per_frame: dict[str, list[float]]
    """``frame`` (dataset index), ``l1``, ``psnr_db``, ``ssim``."""


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


def _lists(stats: dict[str, np.ndarray]) -> dict[str, list[float]]:
    return {k: [float(v) for v in a] for k, a in stats.items()}


# ----------------------------------------------------------------------------- evaluate


@dataclass
class _Val:
    mel: np.ndarray  # (2N, n_mels)
    mouth: np.ndarray  # (N, 25, 3) cm, NaN where not valid
    mean_mouth: np.ndarray  # (25, 3) the mean shape's mouth points
    valid: np.ndarray  # (N,)
    val: np.ndarray  # (V,) ascending


def _read_val(dataset: Path) -> _Val:
    from lsp_models.train.data import load_person as load_training_person

    person = load_training_person(dataset)
    with schema.open_dataset(dataset) as f:
        if "track/mean_shape" not in f:
            raise InputError(f"{dataset}: field 'track/mean_shape' is missing: re-run `lsp prep`")
        mean_shape = f["track/mean_shape"][:].astype(np.float64)
    val = np.sort(np.asarray(person.val, np.int64))
    if len(val) == 0:
        raise InputError(f"{dataset}: the dataset has no val split (split/val is empty)")
    if not person.valid[val].any():
        raise InputError(f"{dataset}: none of the {len(val)} val frames has valid landmarks")
    return _Val(person.mel, person.mouth, mean_shape[load_layout().mouth], person.valid, val)


def mouth_checkpoints(run_dir: Path) -> list[Path]:
    """RUN/mouth/mouth.pt first, then every other RUN/mouth*/mouth.pt by folder name."""
    found = sorted(Path(run_dir).glob("mouth*/mouth.pt"))
    return sorted(found, key=lambda p: (p.parent.name != "mouth", p.parent.name))


def _load_mouth(path: Path, models: A.Models) -> tuple[A.Models, int]:
    """``models`` with the mouth model of checkpoint ``path`` swapped in, and its step."""
    net, target_mean, step = A.load_mouth(
        path, audio_dim=2 * models.apc.config.hidden, device=models.device
    )
    return dataclasses.replace(models, mouth=net, target_mean=target_mean), step


def _runs(frames: np.ndarray) -> list[np.ndarray]:
    """Split ascending frame indices into runs of consecutive frames."""
    return np.split(frames, np.flatnonzero(np.diff(frames) != 1) + 1)


def _predict_val(models: A.Models, feats: np.ndarray, val: np.ndarray) -> np.ndarray:
    """dv_m (V, 25, 3) for the val frames, each run fed with the next ``delay`` frames'
    features as look-ahead (the last one repeated past the clip's end)."""
    d = models.delay
    out = []
    for run in _runs(val):
        after = feats[run[-1] + 1 : run[-1] + 1 + d]
        pad = np.repeat((after if len(after) else feats[run[-1:]])[-1:], d - len(after), 0)
        out.append(A.predict_mouth(models, feats[run], lookahead=np.concatenate([after, pad])))
    return np.concatenate(out)


def _eval_mouth(
    name: str, models: A.Models, step: int, feats: dict[str, np.ndarray], data: _Val
) -> MouthEval:
    ok = data.valid[data.val]
    target = data.mouth[data.val][ok].astype(np.float64)
    pred = _predict_val(models, feats["projected"], data.val)[ok]
    raw = _predict_val(models, feats["raw"], data.val)[ok]
    base = np.broadcast_to(models.target_mean.reshape(-1, 3), target.shape)
    lips = inner_lip_indices(load_layout())
    open_pred = mouth_opening(data.mean_mouth + pred, lips=lips)
    open_true = mouth_opening(data.mean_mouth + target, lips=lips)
    return MouthEval(
        name=name,
        delay=models.delay,
        step=step,
        frames=int(ok.sum()),
        error_mm=point_distance(pred, target),
        error_raw_mm=point_distance(raw, target),
        baseline_mm=point_distance(base, target),
        opening_corr=correlation(open_pred, open_true),
        opening_std_mm=float(open_pred.std()),
        tracked_opening_std_mm=float(open_true.std()),
    )


def _mean_stats(stats: list[dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
    return {k: np.mean([s[k] for s in stats], axis=0) for k in stats[0]}


def _ratio(a: np.ndarray, b: np.ndarray) -> list[float]:
    with np.errstate(divide="ignore", invalid="ignore"):
        return [float(v) for v in a / b]


def _eval_pose(
    models: A.Models,
    dataset: Path,
    feats: np.ndarray,
    data: _Val,
    *,
    seeds: list[int],
    temperature: float,
    config: A.AnimateConfig,
    progress: ProgressFn,
) -> PoseEval:
    val = data.val
    recorded = pose_statistics(A.recorded_poses(dataset, val), data.valid[val])
    history = A.pose_history(models, dataset)
    sampled, animated = [], []
    progress("headpose", 0, len(seeds))
    for i, s in enumerate(seeds):
        pose = A.sample_poses(models, feats[val], history=history, temperature=temperature, seed=s)
        sampled.append(pose_statistics(pose))
        animated.append(pose_statistics(A.postprocess_pose(models, pose, config)))
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


def _eval_image(
    models: A.Models,
    dataset: Path,
    *,
    step: int,
    max_frames: int | None,
    config: A.AnimateConfig,
    progress: ProgressFn,
) -> ImageEval:
    from lsp_models.train.render_data import (
        RendererFrames,
        SampleKey,
        load_candidates,
        training_frames,
    )

    size = models.image_size
    frames = training_frames(dataset, "val")
    if len(frames) == 0:
        raise InputError(f"{dataset}: no val frame has valid landmarks and a finite track")
    pick = frames
    if max_frames is not None and max_frames < len(frames):
        pick = frames[np.linspace(0, len(frames) - 1, max_frames).round().astype(int)]
    candidates = torch.from_numpy(load_candidates(dataset, size)).to(models.device)
    reader = RendererFrames(dataset, image_size=size)
    l1s, psnrs, ssims = [], [], []
    progress("render", 0, len(pick))
    try:
        for s in range(0, len(pick), config.render_batch):
            keys = [SampleKey(int(i)) for i in pick[s : s + config.render_batch]]
            batch = reader.__getitems__(keys)  # not augmented
            real = batch["real"].numpy()
            fake = A.render(models, batch["feature_map"].numpy(), candidates, config=config)
            l1s.append(l1_error(fake, real))
            psnrs.append(psnr(fake, real))
            ssims.append(ssim(fake, real))
            progress("render", s + len(keys), len(pick))
    finally:
        reader.close()
    l1v, pv, sv = (np.concatenate(x) for x in (l1s, psnrs, ssims))
    return ImageEval(
        image_size=size,
        frames=len(pick),
        val_frames=len(frames),
        step=step,
        l1=float(l1v.mean()),
        psnr_db=float(pv.mean()),
        ssim=float(sv.mean()),
        per_frame={
            "frame": [int(i) for i in pick],
            "l1": l1v.tolist(),
            "psnr_db": pv.tolist(),
            "ssim": sv.tolist(),
        },
    )


def _steps(run_dir: Path) -> dict[str, int]:
    from lsp_models.train.checkpoint import load_checkpoint

    return {
        s: int(load_checkpoint(run_dir / s / f"{s}.pt", stage=s)["step"])
        for s in ("apc", "mouth", "headpose", "renderer")
    }


def evaluate(
    *,
    run_dir: Path,
    dataset: Path | None = None,
    delays: list[int] | None = None,
    n_pose_samples: int = 3,
    seed: int = 0,
    temperature: float = 0.3,
    device: str = "auto",
    max_frames: int | None = None,
    output: Path | None = None,
    progress: ProgressFn | None = None,
) -> EvalResult:
    """Evaluate the person's models in ``run_dir`` on the val split of ``dataset`` (default:
    the one training recorded) and write the report to ``output`` (default RUN/eval.json).

    ``delays`` keeps only the mouth models trained with those delays (InputError if one has
    no model); ``n_pose_samples`` head-pose samples use seeds ``seed, seed + 1, ...`` at
    ``temperature`` (animate's default 0.3); ``max_frames`` caps the rendered frames (evenly
    strided over the val split; the mouth and pose sections always use every val frame).
    Raises CheckpointError for a missing or incompatible checkpoint (naming the ``lsp train``
    command), SchemaError for a dataset of another schema version or missing a field,
    InputError for a dataset without val frames.
    """
    from lsp_models.train.device import pick_device

    progress = progress or (lambda stage, done, total: None)
    run_dir = Path(run_dir)
    if n_pose_samples < 1:
        raise InputError(f"n_pose_samples must be >= 1, got {n_pose_samples}")
    if max_frames is not None and max_frames < 1:
        raise InputError(f"max_frames must be >= 1, got {max_frames}")
    if not run_dir.is_dir():
        raise InputError(f"{run_dir}: run directory does not exist (train with `lsp train`)")
    dataset = Path(dataset) if dataset is not None else A.find_dataset(run_dir)
    data = _read_val(dataset)
    dev = pick_device(device)
    timings: dict[str, float] = {}
    t0 = time.perf_counter()
    models = A.load_models(run_dir, device=dev)
    steps = _steps(run_dir)
    config = A.resolve_config(run_dir)
    feats = {
        "projected": A.features_from_mel(models, data.mel, config=config),
        "raw": A.features_from_mel(
            models, data.mel, config=dataclasses.replace(config, lle_blend=0.0)
        ),
    }
    timings["features"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    paths = mouth_checkpoints(run_dir)
    mouths = []
    progress("mouth", 0, len(paths))
    for i, path in enumerate(paths):
        swapped, step = _load_mouth(path, models)
        if delays is None or swapped.delay in delays:
            mouths.append(_eval_mouth(path.parent.name, swapped, step, feats, data))
        progress("mouth", i + 1, len(paths))
    missing = sorted(set(delays or []) - {m.delay for m in mouths})
    if missing:
        raise InputError(
            f"{run_dir}: no mouth model with delay {missing} (RUN/mouth*/mouth.pt hold delays "
            f"{sorted({_load_mouth(p, models)[0].delay for p in paths})})"
        )
    timings["mouth"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    pose = _eval_pose(
        models,
        dataset,
        feats["projected"],
        data,
        seeds=[seed + i for i in range(n_pose_samples)],
        temperature=temperature,
        config=config,
        progress=progress,
    )
    timings["headpose"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    image = _eval_image(models, dataset, step=steps["renderer"], max_frames=max_frames,
                        config=config, progress=progress)  # fmt: skip
    timings["render"] = time.perf_counter() - t0

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
    _write_json(out, result.to_dict())
    return result


def _write_json(path: Path, data: dict[str, Any]) -> None:
    """Write ``data`` to ``path`` atomically (a temporary sibling renamed when complete)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    try:
        tmp.write_text(json.dumps(data, indent=2, allow_nan=False) + "\n")
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
