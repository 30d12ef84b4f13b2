"""The dataset report: what prep found in one clip, as numbers (:func:`dataset_numbers`)
and as page sections (:func:`dataset_sections`).

Everything comes from the file, read through :class:`lsp_prep.dataset.reader.DatasetReader`.
Optional parts (the audio-visual sync attributes, the stored warnings) may be missing from
older files: the sync is then measured here, and the page says so. No torch.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from lsp_prep.camera import rotvec_to_euler_xyz
from lsp_prep.dataset.reader import DatasetReader
from lsp_prep.stages.sync import AVSync, clip_sync
from lsp_report.advice import advise

CONTACT_FRAMES = 12
"""Frames on the contact sheet, spread evenly over the valid frames."""

STRIP_FRAMES = 8
"""Consecutive crops in the steadiness strip."""

SOURCE_NAMES = {0: "landmarks", 1: "texture-refined", 2: "blend"}
"""``track/source`` values."""


@dataclass
class DatasetData:
    """The arrays and attributes a report needs, read once."""

    path: Path
    root: dict[str, Any]
    camera_attrs: dict[str, Any]
    audio_attrs: dict[str, Any]
    shoulder_attrs: dict[str, Any]
    fps: float
    sr: int
    size: int
    valid: np.ndarray
    detected: np.ndarray
    interpolated: np.ndarray
    confidence: np.ndarray
    lsp73: np.ndarray
    boxes: np.ndarray
    K: np.ndarray
    K_original: np.ndarray
    focal_search: np.ndarray
    rotation: np.ndarray
    translation: np.ndarray
    points3d: np.ndarray
    n_features: np.ndarray
    source: np.ndarray
    misfit: np.ndarray
    reprojection: np.ndarray
    shoulders2d: np.ndarray
    shoulders_valid: np.ndarray
    waveform: np.ndarray
    candidates: np.ndarray
    candidate_frames: np.ndarray
    train: np.ndarray
    val: np.ndarray
    config: dict[str, Any]
    sync: AVSync
    sync_stored: bool

    @property
    def n(self) -> int:
        return len(self.valid)

    @property
    def times(self) -> np.ndarray:
        """(N,) seconds at the start of every frame."""
        return np.arange(self.n) / self.fps


def read_dataset(path: Path) -> DatasetData:
    """Read what the report shows from a dataset (schema checked by the reader)."""
    from lsp_prep.config import IngestConfig

    with DatasetReader(path) as r:
        root = r.attrs()
        fps, sr = float(root["fps"]), int(root["sample_rate"])
        audio_attrs = r.attrs("audio")
        valid = r.read("landmarks/valid").astype(bool)
        points3d = r.read("track/points3d", np.float64)
        waveform = r.read("audio/waveform", np.float32)
        stored = "av_offset_ms" in audio_attrs
        if stored:
            sync = AVSync(
                float(audio_attrs["av_offset_ms"]),
                float(audio_attrs["av_offset_frames"]),
                float(audio_attrs["av_confidence"]),
                float(audio_attrs["av_correlation"]),
                bool(audio_attrs["av_reliable"]),
                np.asarray(audio_attrs["av_lags_ms"], np.float64),
                np.asarray(audio_attrs["av_curve"], np.float64),
            )
        else:
            # the dataset's own ingest settings, today's defaults for those it predates
            known = {f.name for f in dataclasses.fields(IngestConfig)}
            stored_cfg = r.config().get("ingest", {})
            kept = {k: v for k, v in stored_cfg.items() if k in known}
            ingest = IngestConfig(**{**kept, "fps": int(fps), "sample_rate": sr})
            sync = clip_sync(points3d, valid, waveform, config=ingest)
        return DatasetData(
            path=Path(path),
            root=root,
            camera_attrs=r.attrs("camera"),
            audio_attrs=audio_attrs,
            shoulder_attrs=r.attrs("shoulders"),
            fps=fps,
            sr=sr,
            size=r.crop_side,
            valid=valid,
            detected=r.read("landmarks/detected").astype(bool),
            interpolated=r.read("landmarks/interpolated").astype(bool),
            confidence=r.read("landmarks/confidence", np.float64),
            lsp73=r.read("landmarks/lsp73", np.float64),
            boxes=r.read("crop/boxes", np.float64),
            K=r.read("camera/intrinsics", np.float64),
            K_original=r.read("camera/intrinsics_original", np.float64),
            focal_search=r.read("camera/focal_search", np.float64),
            rotation=r.read("track/rotation", np.float64),
            translation=r.read("track/translation", np.float64),
            points3d=points3d,
            n_features=r.read("track/n_features"),
            source=r.read("track/source"),
            misfit=r.read("track/misfit", np.float64),
            reprojection=r.read("track/reprojection_error", np.float64),
            shoulders2d=r.read("shoulders/points2d", np.float64),
            shoulders_valid=r.read("shoulders/valid").astype(bool),
            waveform=waveform,
            candidates=r.read("candidates/images"),
            candidate_frames=r.read("candidates/frame_index"),
            train=r.split("train"),
            val=r.split("val"),
            config=r.config(),
            sync=sync,
            sync_stored=stored,
        )


def frame_jpegs(path: Path, frames: np.ndarray) -> list[np.ndarray]:
    """The stored JPEG bytes of ``frames``."""
    with DatasetReader(path) as r:
        return r.jpegs(np.asarray(frames, np.int64))


def stored_warnings(data: DatasetData) -> list[str] | None:
    """The warnings prep printed for the clip, or None for files written before they were
    stored."""
    raw = data.root.get("warnings")
    return None if raw is None else [str(w) for w in json.loads(raw)]


def _finite(x: np.ndarray) -> np.ndarray:
    return x[np.isfinite(x)]


def _pct(x: np.ndarray, q: float) -> float:
    x = _finite(np.asarray(x, np.float64))
    return float(np.percentile(x, q)) if len(x) else float("nan")


def euler_deg(data: DatasetData) -> np.ndarray:
    """(N, 3) pitch, yaw, roll in degrees; NaN where landmarks are not valid."""
    e = np.degrees(rotvec_to_euler_xyz(data.rotation))
    return np.where(data.valid[:, None], e, np.nan)


def crop_jitter(boxes: np.ndarray) -> float:
    """Median |second difference| of the crop centre (original pixels per frame^2): how
    much the crop shakes from frame to frame."""
    centre = (boxes[:, :2] + boxes[:, 2:]) / 2
    if len(centre) < 3:
        return 0.0
    return float(np.median(np.linalg.norm(np.diff(centre, 2, axis=0), axis=1)))


def dataset_numbers(data: DatasetData) -> dict[str, Any]:
    """Every number the page shows, as plain JSON-able data."""
    e = euler_deg(data)
    cal = data.camera_attrs
    focal = float(data.K_original[0, 0])
    width = float(data.K_original[0, 2] * 2)
    sync = data.sync
    warnings = stored_warnings(data)
    lo, hi = np.nanpercentile(e, 5, axis=0), np.nanpercentile(e, 95, axis=0)
    tlo, thi = (
        np.nanpercentile(data.translation, 5, axis=0),
        np.nanpercentile(data.translation, 95, axis=0),
    )
    sh_valid = data.shoulders_valid
    return {
        "dataset": str(data.path),
        "source_path": str(data.root.get("source_path", "")),
        "schema_version": int(data.root["schema_version"]),
        "lsp_version": str(data.root.get("lsp_version", "")),
        "frames": data.n,
        "duration_s": data.n / data.fps,
        "fps": data.fps,
        "image_size": data.size,
        "landmarks": {
            "valid_fraction": float(data.valid.mean()),
            "detected_fraction": float(data.detected.mean()),
            "interpolated_frames": int(data.interpolated.sum()),
            "confidence_median": _pct(data.confidence[data.detected], 50),
        },
        "crop": {
            "side_px_median": float(np.median(data.boxes[:, 2] - data.boxes[:, 0])),
            "centre_jitter_px": crop_jitter(data.boxes),
        },
        "pose": {
            "euler_p5_deg": dict(zip(("pitch", "yaw", "roll"), lo.tolist(), strict=True)),
            "euler_p95_deg": dict(zip(("pitch", "yaw", "roll"), hi.tolist(), strict=True)),
            "translation_p5_cm": tlo.tolist(),
            "translation_p95_cm": thi.tolist(),
            "measured_frames": int((data.n_features > 0).sum()),
            "source_fraction": {
                name: float((data.source == k).mean()) for k, name in SOURCE_NAMES.items()
            },
        },
        "camera": {
            "focal_px": focal,
            "horizontal_fov_deg": float(np.degrees(2 * np.arctan(width / (2 * focal)))),
            "identified": bool(cal.get("focal_identified", False)),
            "reason": str(cal.get("focal_reason", "")),
            "focal_lengths_tried": len(data.focal_search),
        },
        "misfit_px": {"median": _pct(data.misfit, 50), "p90": _pct(data.misfit, 90)},
        "reprojection_error_px": {"median": _pct(data.reprojection, 50)},
        "shoulders": {
            "points": int(sh_valid.shape[1]),
            "valid_fraction": float(sh_valid.mean()) if sh_valid.size else 0.0,
            "valid_fraction_per_point": sh_valid.mean(axis=0).tolist(),
            "source": str(data.shoulder_attrs.get("source", "")),
        },
        "sync": {
            "offset_ms": sync.offset_ms,
            "offset_frames": sync.offset_frames,
            "confidence": sync.confidence,
            "correlation": sync.correlation,
            "reliable": sync.reliable,
            "applied_offset_ms": float(data.audio_attrs.get("av_applied_offset_ms", 0.0)),
            "stored": data.sync_stored,
        },
        "candidates": {"frame_index": data.candidate_frames.tolist()},
        "split": {
            "train": [int(data.train[0]), int(data.train[-1])] if len(data.train) else [],
            "val": [int(data.val[0]), int(data.val[-1])] if len(data.val) else [],
            "n_train": len(data.train),
            "n_val": len(data.val),
        },
        "warnings": (
            None if warnings is None else [{"warning": w, "advice": advise(w)} for w in warnings]
        ),
    }
