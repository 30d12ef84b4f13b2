"""The pack stage of prep: the speech track on the video clock and its log-mel, the
landmarks in crop pixels, the candidate images, the train/val split and the attributes,
written into the partial file through :mod:`lsp_prep.dataset.writer`."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from lsp_prep import __version__
from lsp_prep.camera import rotvec_to_euler_xyz
from lsp_prep.config import IngestConfig, PrepConfig
from lsp_prep.dataset import schema, writer
from lsp_prep.layout import load_layout
from lsp_prep.media import MediaInfo, load_audio
from lsp_prep.stages.audio import align_waveform, video_log_mel
from lsp_prep.stages.candidates import choose_candidates, mouth_area, split_frames
from lsp_prep.stages.frames import decode_rgb
from lsp_prep.stages.geometry.head import HeadTrack
from lsp_prep.stages.geometry.quality import rigid_misfit


@dataclass
class Clip:
    """What the stages before pack found, in the frames the dataset stores them in."""

    mesh_crop: np.ndarray
    """(N, 478, 3) float32 Face Mesh in crop pixels."""
    lsp73: np.ndarray
    """(N, 73, 2) LSP-73 points in crop pixels."""
    masks: dict[str, np.ndarray]
    """Per-frame ``detected``, ``interpolated``, ``valid`` (N,) bool and ``confidence``."""
    head: HeadTrack
    k_crop: np.ndarray
    """(N, 3, 3) intrinsics of every crop."""
    n_features: np.ndarray
    """(N,) texture features each frame's pose was fitted to."""
    source: np.ndarray
    """(N,) int8 where each frame's pose comes from (``track/source``)."""
    shoulders: dict[str, np.ndarray]
    """The shoulder stage's arrays: points2d, valid, billboard3d, source."""


def speech_track(
    video: Path, audio: Path | None, info: MediaInfo, *, n: int, config: IngestConfig
) -> np.ndarray:
    """The speech (``audio``, else the video's own sound) resampled and aligned to the
    ``n`` video frames: sample 0 starts frame 0, moved ``config.av_offset_ms`` earlier."""
    sr = config.sample_rate
    if audio is not None:
        y, offset = load_audio(audio, sr=sr), 0.0
    else:
        y, offset = load_audio(video, sr=sr), info.audio_start_s - info.video_start_s
    offset -= config.av_offset_ms / 1000
    return align_waveform(y, sr=sr, offset_s=offset, n_video_frames=n, fps=config.fps)


def audio_warnings(y: np.ndarray, *, source: str, quiet_dbfs: float = -40.0) -> list[str]:
    """Problems with the speech track that do not stop prep but will hurt training."""
    peak = float(np.abs(y).max()) if len(y) else 0.0
    if peak < 10 ** (quiet_dbfs / 20):
        level = f"{20 * np.log10(peak):.0f} dBFS" if peak > 0 else "digital silence"
        return [
            f"{source}: the speech track is nearly silent (peak {level}); "
            "if this is not the person's voice, pass the recording with --audio"
        ]
    return []


def root_attrs(
    video: Path, info: MediaInfo, *, n: int, config: PrepConfig, shas: tuple[str, str], key: str
) -> dict[str, Any]:
    """The dataset's root attributes; ``shas`` = (source, audio) SHA-256."""
    sr, fps = config.ingest.sample_rate, config.ingest.fps
    return {
        "schema_version": schema.SCHEMA_VERSION,
        "fps": fps,
        "sample_rate": sr,
        "image_size": config.ingest.image_size,
        "hop_length": sr / (2 * fps),
        "n_frames": n,
        "source_path": str(video),
        "source_sha256": shas[0],
        "audio_sha256": shas[1],
        "lsp_version": __version__,
        "config": json.dumps(config.to_dict()),
        "source_info": json.dumps({k: v for k, v in asdict(info).items() if k != "path"}),
        "prep_key": key,
    }


def track_misfit(clip: Clip) -> np.ndarray:
    """(N,) the dataset's ``track/misfit``: rigid misfit of the mean shape's stable points
    posed by the track vs the detected landmarks, crop pixels; NaN where not valid."""
    stable = np.asarray(load_layout().sets["stable"])
    head = clip.head
    lm = np.where(clip.masks["valid"][:, None, None], clip.lsp73[:, stable], np.nan)
    return rigid_misfit(head.rotation, head.translation, head.mean_shape[stable], clip.k_crop, lm)


def clip_fields(clip: Clip) -> dict[str, np.ndarray]:
    """The camera, track, shoulder and landmark fields of the dataset, as stored."""
    head, sh, masks = clip.head, clip.shoulders, clip.masks
    f32 = np.float32
    return {
        "camera/intrinsics": clip.k_crop,
        "camera/intrinsics_original": head.calibration.K,
        "camera/focal_search": head.calibration.curve,
        "track/rotation": head.rotation.astype(f32),
        "track/translation": head.translation.astype(f32),
        "track/points3d": head.points3d.astype(f32),
        "track/mean_shape": head.mean_shape.astype(f32),
        "track/n_features": clip.n_features.astype(np.int32),
        "track/mouth_displacement": head.mouth_displacement.astype(f32),
        "track/reprojection_error": head.reprojection_error.astype(f32),
        "track/source": clip.source.astype(np.int8),
        "track/misfit": track_misfit(clip).astype(f32),
        "shoulders/points2d": sh["points2d"].astype(f32),
        "shoulders/valid": sh["valid"],
        "shoulders/billboard3d": sh["billboard3d"].astype(f32),
        **{f"landmarks/{k}": masks[k] for k in ("valid", "detected", "interpolated")},
        "landmarks/mesh": clip.mesh_crop,
        "landmarks/lsp73": clip.lsp73.astype(f32),
        "landmarks/confidence": masks["confidence"].astype(f32),
    }


def pack(
    partial: Path,
    clip: Clip,
    y: np.ndarray,
    *,
    config: PrepConfig,
    attrs: dict[str, Any],
    audio_attrs: dict[str, Any] | None = None,
) -> None:
    """Write every field but the frames into the partial file, with ``attrs`` at the root
    and ``audio_attrs`` on the ``audio`` group (the sync measurement): log-mel of the
    speech ``y``, candidates, split and :func:`clip_fields`."""
    n, fps = len(clip.masks["valid"]), config.ingest.fps
    mel = video_log_mel(
        y, sr=config.ingest.sample_rate, n_video_frames=n, fps=fps, config=config.mel
    )
    euler = rotvec_to_euler_xyz(clip.head.rotation)
    cand = choose_candidates(
        mouth_area(clip.lsp73), euler, clip.masks["valid"], config=config.candidates
    )
    train, val = split_frames(n, fps=fps, config=config.split)
    cal = clip.head.calibration
    with h5py.File(partial, "a") as f:
        images = np.stack([decode_rgb(f["frames"][i]) for i in cand])
        fields = {
            **clip_fields(clip),
            "candidates/images": images,
            "candidates/frame_index": cand.astype(np.int64),
            "split/train": train.astype(np.int64),
            "split/val": val.astype(np.int64),
            "audio/waveform": y,
            "audio/mel": mel.T,
        }
        group_attrs: dict[str, dict[str, Any]] = {
            "camera": {
                "focal_identified": cal.identified,
                "focal_reason": cal.reason,
                "focal_source": cal.source,
                "focal_interval": np.array(cal.interval),
                "focal_interval_landmarks": np.array(cal.landmark_interval),
                "calibration_frames": cal.frames,
            },
            "shoulders": {"source": str(clip.shoulders["source"])},
            "audio": dict(audio_attrs or {}),
        }
        writer.write_fields(f, fields, attrs=attrs, group_attrs=group_attrs)
