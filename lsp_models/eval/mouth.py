"""The mouth section of ``lsp eval``: every mouth model of the run on the val split."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from lsp_models.eval.data import ValSplit
from lsp_models.eval.metrics import correlation, inner_lip_indices, mouth_opening, point_distance
from lsp_models.infer.loading import Models, load_mouth
from lsp_models.infer.predict import predict_mouth
from lsp_prep.layout import load_layout


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


def mouth_checkpoints(run_dir: Path) -> list[Path]:
    """RUN/mouth/mouth.pt first, then every other RUN/mouth*/mouth.pt by folder name."""
    found = sorted(Path(run_dir).glob("mouth*/mouth.pt"))
    return sorted(found, key=lambda p: (p.parent.name != "mouth", p.parent.name))


def swap_mouth(path: Path, models: Models) -> tuple[Models, int]:
    """``models`` with the mouth model of checkpoint ``path`` swapped in, and its step."""
    net, target_mean, step = load_mouth(
        path, audio_dim=2 * models.apc.config.hidden, device=models.device
    )
    return dataclasses.replace(models, mouth=net, target_mean=target_mean), step


def _runs(frames: np.ndarray) -> list[np.ndarray]:
    """Split ascending frame indices into runs of consecutive frames."""
    return np.split(frames, np.flatnonzero(np.diff(frames) != 1) + 1)


def predict_val(models: Models, feats: np.ndarray, val: np.ndarray) -> np.ndarray:
    """dv_m (V, 25, 3) for the val frames, each run fed with the next ``delay`` frames'
    features as look-ahead (the last one repeated past the clip's end)."""
    d = models.delay
    out = []
    for run in _runs(val):
        after = feats[run[-1] + 1 : run[-1] + 1 + d]
        pad = np.repeat((after if len(after) else feats[run[-1:]])[-1:], d - len(after), 0)
        out.append(predict_mouth(models, feats[run], lookahead=np.concatenate([after, pad])))
    return np.concatenate(out)


def eval_mouth(
    name: str, models: Models, step: int, feats: dict[str, np.ndarray], data: ValSplit
) -> MouthEval:
    ok = data.valid[data.val]
    target = data.mouth[data.val][ok].astype(np.float64)
    pred = predict_val(models, feats["projected"], data.val)[ok]
    raw = predict_val(models, feats["raw"], data.val)[ok]
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
