"""``lsp animate``: any speech recording -> a talking-head mp4 of the trained person.

The pipeline, per 60 FPS video frame ``i`` (mel frames ``2i``, ``2i + 1``):

    audio -> log-mel (prep's) -> APC -> manifold projection -> mouth dv_m (LSTM, 18-frame
    look-ahead) and head pose (autoregressive sampler) -> Gaussian smoothing + per-person
    amplification -> 73 landmarks (mouth = mean shape + dv_m, the rest replayed from the
    training track) -> camera (crop boxes placed by prep's policy) -> shoulders -> feature
    map -> renderer -> frames -> mp4 (H.264 yuv420p + AAC)

Two ways in, one set of numbers. :func:`predict_motion` runs the motion on whole arrays
(what ``lsp eval`` reuses, with :func:`predict_mouth`, :func:`sample_poses` and
:func:`features_from_mel`); :class:`AnimationStream` computes the same frames from audio
pushed in chunks of any size, holding the APC GRU, mouth LSTM and head-pose sampler states
and bounded look-ahead buffers; :func:`animate` feeds a file through the stream into
ffmpeg, so memory stays flat in the audio's length.

Frame count: audio of ``S`` samples at ``sr`` gives ``N = ceil(S * 60 / sr)`` frames at 60
FPS (the last one may cover a partial frame of audio; the audio is padded with silence for
the analysis) and ``ceil(S * 30 / sr)`` at 30 FPS (frames 0, 2, 4, ... of the 60 FPS
sequence). The video therefore starts with the audio and ends less than one frame after it.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import json
import math
import os
import subprocess
import tempfile
import time
import typing
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import cv2
import numpy as np
import torch

from lsp_models.infer.manifold import Manifold
from lsp_models.infer.motion import (
    CameraRig,
    StreamSmoother,
    euler_to_rotvec,
    face_centres,
    longest_valid_run,
    pingpong,
    place_boxes,
    shoulder_points2d,
    smooth,
)
from lsp_models.nets.apc import APC
from lsp_models.nets.generator import Generator, from_unit, renderer_input
from lsp_models.nets.headpose import HeadPoseModel
from lsp_models.nets.mouth import AudioToMouth
from lsp_models.sampling import FastHeadPoseSampler, HeadPoseSampler, make_sampler, sample_fast
from lsp_models.train.checkpoint import load_checkpoint
from lsp_prep.constants import FPS, IMAGE_SIZE, MELS_PER_FRAME, SAMPLE_RATE
from lsp_prep.dataset import schema
from lsp_prep.errors import CheckpointError, InputError, SchemaError, ToolError
from lsp_prep.featuremap import draw_feature_map, face_points2d
from lsp_prep.layout import load_layout
from lsp_prep.media import ffmpeg_exe, probe
from lsp_prep.stages.audio import MelConfig, _mel_basis, _window, video_log_mel
from lsp_prep.stages.crop import CropConfig, to_original
from lsp_prep.stages.geometry.calibrate import crop_intrinsics

ProgressFn = Callable[[str, int, "int | None"], None]
CONFIG_FILE = "animate.json"
"""Per-person animation settings in the run directory (written with the defaults on first use)."""


@dataclass(frozen=True)
class AnimateConfig:
    """Post-processing and rendering settings. Defaults: the official LSP inference configs
    (most of its five people use these values); smoothing sigmas are in 60 FPS frames."""

    mouth_sigma: float = 2.0
    """Gaussian sigma (frames) of the mouth displacements in time."""
    mouth_amp: tuple[float, float, float] = (1.5, 1.5, 1.5)
    """Amplification of the mouth displacements along object x, y, z."""
    rot_sigma: float = 5.0
    """Gaussian sigma (frames) of the head rotation (Euler angles)."""
    trans_sigma: float = 10.0
    """Gaussian sigma (frames) of the head translation."""
    rot_amp: float = 1.0
    """Amplification of the sampled rotation about the person's mean rotation."""
    trans_amp: float = 1.0
    """Amplification of the sampled translation about the person's mean translation."""
    shoulder_amp: float = 0.5
    """The shoulder billboard moves by this fraction of the head translation."""
    truncate: float = 4.0
    """Gaussian kernels reach ``truncate * sigma`` frames each way (scipy's default)."""
    camera_lookahead_s: float = 0.3
    """The crop centre is smoothed like prep's (sigma ``crop.smoothing_s`` of the dataset)
    but looks at most this far ahead, so streaming latency stays bounded."""
    max_lookahead_s: float | None = None
    """Low-latency mode: no frame waits for more than this much audio beyond its own end
    (at least the mouth model's delay, 0.3 s). The smoothing kernels' future sides are cut
    to fit (the mouth's after the delay, then half for the pose and half for the camera);
    their past sides stay whole. None: the official symmetric smoothing (~1 s look-ahead
    with the default sigmas). Offline and streaming agree either way."""
    lle_k: int = 10
    """Nearest neighbours of the manifold projection."""
    lle_blend: float = 1.0
    """1: fully projected features (the paper); 0: raw APC features."""
    render_batch: int = 4
    """Frames per renderer call."""
    precision: Literal["float32", "bfloat16"] = "float32"
    """Renderer arithmetic: bfloat16 autocast is faster on recent CPUs and GPUs."""
    crf: int = 18
    """H.264 constant rate factor (lower is better quality)."""
    preset: str = "veryfast"
    """x264 speed preset."""

    def __post_init__(self) -> None:
        for name in ("mouth_sigma", "rot_sigma", "trans_sigma", "camera_lookahead_s"):
            if not getattr(self, name) >= 0:
                raise InputError(f"animate.{name} must be >= 0, got {getattr(self, name)}")
        if self.max_lookahead_s is not None and not self.max_lookahead_s >= 0:
            raise InputError(f"animate.max_lookahead_s must be >= 0, got {self.max_lookahead_s}")
        if len(self.mouth_amp) != 3:
            raise InputError(f"animate.mouth_amp must be 3 numbers, got {self.mouth_amp}")
        if self.truncate <= 0 or self.lle_k < 1 or self.render_batch < 1:
            raise InputError("animate.truncate, lle_k and render_batch must be positive")
        if not 0 <= self.lle_blend <= 1:
            raise InputError(f"animate.lle_blend must be in [0, 1], got {self.lle_blend}")
        if self.precision not in ("float32", "bfloat16"):
            raise InputError(f"animate.precision must be float32 or bfloat16, got {self.precision}")
        if not 0 <= self.crf <= 51:
            raise InputError(f"animate.crf must be in [0, 51], got {self.crf}")

    def with_overrides(self, items: list[str]) -> AnimateConfig:
        """``key=value`` strings (JSON values, e.g. ``mouth_amp=[2,2,2]``) applied to a copy."""
        names = {f.name for f in dataclasses.fields(self)}
        values: dict[str, Any] = {}
        for item in items:
            key, sep, raw = item.partition("=")
            key = key.strip().removeprefix("animate.")
            if not sep or key not in names:
                raise InputError(
                    f"bad --set {item!r}: use key=value with key one of {sorted(names)}"
                )
            try:
                value = json.loads(raw)
            except json.JSONDecodeError:
                value = raw
            values[key] = tuple(value) if isinstance(value, list) else value
        return dataclasses.replace(self, **values)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> AnimateConfig:
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = set(data) - names
        if unknown:
            raise InputError(f"unknown animate settings {sorted(unknown)}")
        return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in data.items()})


def resolve_config(run_dir: Path, overrides: list[str] | None = None) -> AnimateConfig:
    """RUN/animate.json (the person's settings; written with the defaults when missing) with
    ``--set`` overrides applied."""
    path = Path(run_dir) / CONFIG_FILE
    if path.is_file():
        try:
            base = AnimateConfig.from_dict(json.loads(path.read_text()))
        except (json.JSONDecodeError, TypeError) as exc:
            raise InputError(f"{path}: not a valid animate config ({exc})") from None
    else:
        base = AnimateConfig()
        try:
            _write_json(path, dataclasses.asdict(base))
        except OSError:
            pass  # a read-only run directory still animates with the defaults
    return base.with_overrides(overrides or [])


# ----------------------------------------------------------------------------- loading


@dataclass
class Models:
    """The trained person's networks (eval mode, on one device) and their normalisation."""

    apc: APC
    mel_mean: np.ndarray
    mel_std: np.ndarray
    database: torch.Tensor  # (M, 2H) training-split APC features
    mouth: AudioToMouth
    target_mean: np.ndarray  # (75,)
    headpose: HeadPoseModel
    pose_mean: np.ndarray  # (12,)
    pose_std: np.ndarray  # (12,)
    generator: Generator | None
    device: torch.device

    @property
    def delay(self) -> int:
        return self.mouth.config.delay

    @functools.cached_property
    def manifold(self) -> Manifold:
        """``database`` ready for projection (its norms computed once, on first use)."""
        return Manifold(self.database)

    @property
    def image_size(self) -> int:
        return self.generator.config.image_size if self.generator is not None else IMAGE_SIZE


def load_models(run_dir: Path, *, device: torch.device, renderer: bool = True) -> Models:
    """Load every stage's checkpoint from RUN; CheckpointError names the missing stage's
    ``lsp train`` command or a version mismatch."""
    from lsp_models.nets.headpose import HeadPoseConfig
    from lsp_models.nets.mouth import MouthConfig
    from lsp_models.train.apc import load_apc
    from lsp_models.train.renderer import load_generator
    from lsp_prep.configtree import from_data

    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise InputError(f"{run_dir}: run directory does not exist (train with `lsp train`)")
    ckpts = {
        s: load_checkpoint(run_dir / s / f"{s}.pt", stage=s) for s in ("apc", "mouth", "headpose")
    }
    for stage, ckpt in ckpts.items():
        if ckpt.get("schema_version") != schema.SCHEMA_VERSION:
            raise CheckpointError(
                f"{run_dir / stage}: trained on dataset schema {ckpt.get('schema_version')}, "
                f"this toolkit reads {schema.SCHEMA_VERSION}: re-run `lsp prep` and "
                f"`lsp train {stage}`"
            )
    apc, mel_mean, mel_std = load_apc(run_dir, device)
    feats_path = run_dir / "features.pt"
    if not feats_path.is_file():
        raise CheckpointError(f"{feats_path}: no feature database: run `lsp train mouth` first")
    database = torch.load(feats_path, map_location="cpu", weights_only=False)["features"]
    mouth = AudioToMouth(from_data(MouthConfig, ckpts["mouth"]["model_config"]))
    mouth.load_state_dict(ckpts["mouth"]["model"])
    hp = HeadPoseModel(from_data(HeadPoseConfig, ckpts["headpose"]["model_config"]))
    hp.load_state_dict(ckpts["headpose"]["model"])
    width = 2 * apc.config.hidden
    for name, got in (
        ("mouth", mouth.config.audio_dim),
        ("headpose", hp.config.audio_dim),
        ("features.pt", database.shape[1]),
    ):
        if got != width:
            raise CheckpointError(
                f"{run_dir}: {name} expects {got}-dim audio features but the APC gives {width}: "
                f"retrain with `lsp train {'mouth' if name == 'features.pt' else name}`"
            )
    generator = load_generator(run_dir, device) if renderer else None
    return Models(
        apc=apc,
        mel_mean=mel_mean,
        mel_std=mel_std,
        database=database.float().to(device),
        mouth=mouth.eval().to(device),
        target_mean=np.asarray(ckpts["mouth"]["extra"]["target_mean"], np.float32),
        headpose=hp.eval().to(device),
        pose_mean=np.asarray(ckpts["headpose"]["extra"]["pose_mean"], np.float64),
        pose_std=np.asarray(ckpts["headpose"]["extra"]["pose_std"], np.float64),
        generator=generator,
        device=device,
    )


@dataclass
class Person:
    """What animation reads from the person's dataset."""

    path: Path
    mean_shape: np.ndarray  # (73, 3) object coordinates
    replay: np.ndarray  # (L, 73, 3) track/points3d of the longest valid run of train frames
    replay_start: int  # its first frame in the dataset
    rotation: np.ndarray  # (N, 3) recorded Rodrigues
    translation: np.ndarray  # (N, 3) recorded translation
    train: np.ndarray  # train-split frame indices
    trans_mean: np.ndarray  # (3,) train-split mean translation
    rig: CameraRig
    billboard3d: np.ndarray  # (P, 3) camera coordinates
    shoulder_reference: np.ndarray  # (3,) head translation when the billboard was lifted
    candidates: np.ndarray  # (4, 512, 512, 3) uint8 RGB

    def replay_points(self, frames: np.ndarray) -> np.ndarray:
        """Replayed object landmarks (B, 73, 3) for frames (B,): forwards, then backwards."""
        return self.replay[pingpong(frames, 0, len(self.replay))]


def load_person(path: Path) -> Person:
    """Read a dataset for animation; SchemaError for a missing file or field or version."""
    from lsp_prep.dataset.schema import read_config

    path = Path(path)
    with schema.open_dataset(path) as f:
        for name in (
            "track/points3d",
            "track/mean_shape",
            "shoulders/billboard3d",
            "candidates/images",
            "camera/intrinsics_original",
            "crop/boxes",
            "landmarks/mesh",
        ):
            if name not in f:
                raise SchemaError(f"{path}: field {name!r} is missing: re-run `lsp prep` (--force)")
        valid = f["landmarks/valid"][:]
        train = f["split/train"][:]
        start, length = longest_valid_run(valid, train)
        rotation = f["track/rotation"][:].astype(np.float64)
        translation = f["track/translation"][:].astype(np.float64)
        boxes = f["crop/boxes"][:]
        size = int(f.attrs["image_size"])
        k_orig = f["camera/intrinsics_original"][:].astype(np.float64)
        points3d = f["track/points3d"]
        crop = CropConfig(**read_config(f).get("crop", {}))
        info = json.loads(f.attrs["source_info"])
        # prep centres the crop on the Face Mesh's bounding box; animation knows the
        # LSP-73 points: the median difference of the two box centres on valid frames
        diffs = []
        for s in range(0, len(valid), 1024):
            idx = np.flatnonzero(valid[s : s + 1024]) + s
            if len(idx) == 0:
                continue
            mesh = to_original(f["landmarks/mesh"][idx[0] : idx[-1] + 1][idx - idx[0], :, :2],
                               boxes[idx], size)  # fmt: skip
            lsp = face_points2d(points3d[idx[0] : idx[-1] + 1][idx - idx[0]], rotation[idx],
                                translation[idx], k_orig)  # fmt: skip
            diffs.append((mesh.min(1) + mesh.max(1)) / 2 - (lsp.min(1) + lsp.max(1)) / 2)
        side = float(boxes[0, 2] - boxes[0, 0])
        offset = np.median(np.concatenate(diffs), axis=0) + np.array([0.0, crop.offset_y * side])
        rig = CameraRig(
            intrinsics=k_orig,
            side=side,
            frame_size=(int(info["width"]), int(info["height"])),
            offset=offset,
            crop=crop,
            image_size=size,
        )
        sh_valid = f["shoulders/valid"][:]
        lifted = np.flatnonzero(sh_valid.any(axis=1))
        ref = translation[lifted[0] if len(lifted) else 0]
        billboard = f["shoulders/billboard3d"][:].astype(np.float64)
        return Person(
            path=path,
            mean_shape=f["track/mean_shape"][:].astype(np.float64),
            replay=points3d[start : start + length].astype(np.float64),
            replay_start=start,
            rotation=rotation,
            translation=translation,
            train=train,
            trans_mean=translation[train].mean(0),
            rig=rig,
            billboard3d=billboard[np.isfinite(billboard).all(axis=1)],
            shoulder_reference=ref,
            candidates=f["candidates/images"][:],
        )


def find_dataset(run_dir: Path) -> Path:
    """The person's dataset as training recorded it (RUN/run.json)."""
    from lsp_models.train.stage import recorded_dataset

    recorded = recorded_dataset(Path(run_dir))
    if recorded is not None and Path(recorded).is_file():
        return Path(recorded)
    where = f" (it records {recorded}, which does not exist)" if recorded else ""
    raise InputError(
        f"{run_dir}: cannot tell which dataset the run was trained on{where}: "
        "pass the person's dataset with --dataset FILE"
    )


# --------------------------------------------------------------------- array functions


def n_frames(n_samples: int, *, sr: int = SAMPLE_RATE, fps: int = FPS) -> int:
    """Video frames for ``n_samples`` of audio: ceil(duration * fps)."""
    return -(-int(n_samples) * fps // sr)


def _check_length(n_samples: int) -> None:
    if n_samples * FPS < SAMPLE_RATE:
        raise InputError(
            f"audio is shorter than one video frame (1/{FPS} s): {n_samples} samples at "
            f"{SAMPLE_RATE} Hz"
        )


def features_from_mel(models: Models, mel: np.ndarray, *, config: AnimateConfig) -> np.ndarray:
    """Projected APC features per video frame: mel (2N, n_mels) -> (N, 2H) float32."""
    feats, _ = _apc(models, mel, None)
    return _project(models, feats, config)


def speech_features(
    models: Models, y: np.ndarray, *, n: int, config: AnimateConfig, mel: MelConfig = MelConfig()
) -> np.ndarray:
    """Projected APC features (n, 2H) of video frames 0 .. n - 1 of waveform ``y`` (16 kHz;
    silence beyond its end), the log-mel exactly as prep computes it."""
    m = video_log_mel(y, sr=SAMPLE_RATE, n_video_frames=n, fps=FPS, config=mel).T
    return features_from_mel(models, m, config=config)


@torch.no_grad()
def _apc(models: Models, mel: np.ndarray, state):
    """mel (2T, n_mels) -> APC features (T, 2H) and the GRU state."""
    x = ((mel - models.mel_mean) / models.mel_std).astype(np.float32)
    feats, state = models.apc.encode(torch.from_numpy(x)[None].to(models.device), state)
    f = feats[0]  # (2T, H)
    return f.reshape(len(f) // MELS_PER_FRAME, -1), state


@torch.no_grad()
def _project(models: Models, feats: torch.Tensor, config: AnimateConfig) -> np.ndarray:
    if config.lle_blend == 0 or len(feats) == 0:
        return feats.cpu().numpy()
    k = min(config.lle_k, len(models.database))
    out, _, _ = models.manifold.project(feats, k=k, blend=config.lle_blend)
    return out.cpu().numpy()


@torch.no_grad()
def predict_mouth(
    models: Models, feats: np.ndarray, *, lookahead: np.ndarray | None = None
) -> np.ndarray:
    """Mouth displacements dv_m (N, 25, 3) for the N frames of ``feats`` (N, 2H), aligned.

    The model's output at step t is frame t - delay, so the features of the ``delay`` frames
    after the last are fed too: ``lookahead`` (delay, 2H) (the following audio, or the
    features of silence), by default the last feature repeated. No frame is dropped.
    """
    d = models.delay
    if lookahead is None:
        lookahead = np.repeat(feats[-1:], d, 0)
    if len(lookahead) != d:
        raise InputError(f"lookahead must be ({d}, {feats.shape[1]}), got {lookahead.shape}")
    x = torch.from_numpy(np.concatenate([feats, lookahead]).astype(np.float32))[None]
    out, _ = models.mouth(x.to(models.device))  # (1, N + d, 75)
    dv = out[0, d:].cpu().numpy() + models.target_mean
    return dv.reshape(len(dv), -1, 3)


def pose_history(models: Models, dataset: Path) -> np.ndarray:
    """Warm start of the head-pose sampler: the normalised pose features of the last
    ``receptive_field`` train-split frames of the person's recording, (H, 12)."""
    from lsp_models.train.data import load_person as load_training_person
    from lsp_models.train.headpose import pose_features

    person = load_training_person(dataset)
    feats = pose_features(person)[person.train]
    return (
        (feats[-models.headpose.receptive_field :] - models.pose_mean) / models.pose_std
    ).astype(np.float32)


def sample_poses(
    models: Models,
    feats: np.ndarray,
    *,
    history: np.ndarray,
    temperature: float = 0.3,
    seed: int = 0,
) -> np.ndarray:
    """Head poses for frames of ``feats`` (N, 2H): (N, 6) pitch, yaw, roll (radians) and
    translation minus the person's mean, sampled autoregressively (``temperature`` scales
    sigma; 0 is the mean path). The same seed gives the same poses, here and streaming."""
    gen = torch.Generator(device=models.device).manual_seed(int(seed))
    audio = torch.from_numpy(feats.astype(np.float32))[None].to(models.device)
    hist = torch.from_numpy(history)[None].to(models.device)
    # the same sampler as AnimationStream's (make_sampler), so streaming equals offline
    out = sample_fast(models.headpose, audio, history=hist, temperature=temperature, generator=gen)
    return _denormalise(models, out[0].cpu().numpy())


def _denormalise(models: Models, pose: np.ndarray) -> np.ndarray:
    return (pose.astype(np.float64) * models.pose_std + models.pose_mean)[:, :6]


def recorded_poses(dataset: Path, frames: np.ndarray) -> np.ndarray:
    """Poses (B, 6) of ``dataset``'s recorded track for frames (B,), played forwards then
    backwards when the audio is longer: Euler angles and translation minus its train mean."""
    from lsp_prep.stages.geometry.calibrate import rotvec_to_euler

    with schema.open_dataset(dataset) as f:
        rot, trans = f["track/rotation"][:].astype(np.float64), f["track/translation"][:]
        train = f["split/train"][:]
    euler = np.unwrap(rotvec_to_euler(rot), axis=0)
    pose = np.concatenate([euler, trans - trans[train].mean(0)], axis=1)
    return pose[pingpong(frames, 0, len(pose))]


def amplify_pose(models: Models, pose: np.ndarray, config: AnimateConfig) -> np.ndarray:
    """Scale rotation about the person's mean rotation, translation about its mean."""
    out = pose.copy()
    mean_rot = models.pose_mean[:3]
    out[:, :3] = mean_rot + config.rot_amp * (pose[:, :3] - mean_rot)
    out[:, 3:6] = config.trans_amp * pose[:, 3:6]
    return out


def smoothing(config: AnimateConfig, delay: int, camera_sigma: float) -> dict[str, dict]:
    """The Gaussian filters (``sigma``, ``truncate``, ``ahead`` for :func:`smooth`) of the
    mouth, rotation, translation and camera paths, with ``config.max_lookahead_s`` applied."""
    t = config.truncate
    cam_ahead = int(round(config.camera_lookahead_s * FPS))
    mouth_ahead = pose_ahead = None
    if config.max_lookahead_s is not None:
        budget = max(int(round(config.max_lookahead_s * FPS)), delay)
        mouth_ahead, pose_ahead = budget - delay, budget // 2
        cam_ahead = min(cam_ahead, budget - pose_ahead)
    return {
        "mouth": {"sigma": config.mouth_sigma, "truncate": t, "ahead": mouth_ahead},
        "rot": {"sigma": config.rot_sigma, "truncate": t, "ahead": pose_ahead},
        "trans": {"sigma": config.trans_sigma, "truncate": t, "ahead": pose_ahead},
        "camera": {"sigma": camera_sigma, "truncate": t, "ahead": cam_ahead},
    }


def postprocess_pose(models: Models, pose: np.ndarray, config: AnimateConfig) -> np.ndarray:
    """Sampled poses (N, 6) as animate uses them: amplified, then rotation and translation
    smoothed in time with their own Gaussian sigmas."""
    pose = amplify_pose(models, pose, config)
    f = smoothing(config, models.delay, 0.0)
    return np.concatenate([smooth(pose[:, :3], **f["rot"]), smooth(pose[:, 3:], **f["trans"])], 1)


def load_mouth(
    path: Path, *, audio_dim: int, device: torch.device
) -> tuple[AudioToMouth, np.ndarray, int]:
    """A mouth checkpoint: the model (eval mode), its target mean (75,) and its step.
    CheckpointError when it was trained on another dataset schema or another APC width."""
    from lsp_models.nets.mouth import MouthConfig
    from lsp_prep.configtree import from_data

    ckpt = load_checkpoint(path, stage="mouth")
    if ckpt.get("schema_version") != schema.SCHEMA_VERSION:
        raise CheckpointError(
            f"{path}: trained on dataset schema {ckpt.get('schema_version')}, this toolkit "
            f"reads {schema.SCHEMA_VERSION}: re-run `lsp prep` and `lsp train mouth`"
        )
    net = AudioToMouth(from_data(MouthConfig, ckpt["model_config"]))
    if net.config.audio_dim != audio_dim:
        raise CheckpointError(
            f"{path}: expects {net.config.audio_dim}-dim audio features but the run's APC "
            f"gives {audio_dim}: retrain with `lsp train mouth`"
        )
    net.load_state_dict(ckpt["model"])
    target_mean = np.asarray(ckpt["extra"]["target_mean"], np.float32)
    return net.eval().to(device), target_mean, int(ckpt["step"])


def frame_geometry(
    person: Person,
    frames: np.ndarray,
    mouth: np.ndarray,
    pose: np.ndarray,
    boxes: np.ndarray,
    *,
    config: AnimateConfig,
) -> dict[str, np.ndarray]:
    """Landmarks and camera of frames (B,): mouth (B, 25, 3) post-processed dv_m, pose
    (B, 6) post-processed, boxes (B, 4) crop boxes (original pixels). Returns points3d
    (B, 73, 3), rotation, translation (B, 3), intrinsics (B, 3, 3) of the 512 crop,
    face2d (B, 73, 2) and shoulders2d (B, P, 2) in 512-crop pixels."""
    idx = load_layout().mouth
    pts = person.replay_points(frames).copy()
    pts[:, idx] = person.mean_shape[idx] + mouth
    rot = euler_to_rotvec(pose[:, :3])
    trans = pose[:, 3:6] + person.trans_mean
    k = crop_intrinsics(person.rig.intrinsics, boxes, person.rig.image_size)
    face2d = face_points2d(pts, rot, trans, k)
    sh = shoulder_points2d(
        person.billboard3d, trans, person.shoulder_reference, k, amount=config.shoulder_amp
    )
    return {
        "points3d": pts,
        "rotation": rot,
        "translation": trans,
        "boxes": boxes,
        "intrinsics": k,
        "face2d": face2d,
        "shoulders2d": sh,
        "mouth": mouth,
    }


def raw_centres(person: Person, frames: np.ndarray, pose: np.ndarray) -> np.ndarray:
    """Unsmoothed crop centres (B, 2) for post-processed poses (B, 6) of frames (B,)."""
    rot = euler_to_rotvec(pose[:, :3])
    return face_centres(person.replay_points(frames), rot, pose[:, 3:6] + person.trans_mean,
                        person.rig)  # fmt: skip


def feature_maps(face2d: np.ndarray, shoulders2d: np.ndarray, *, size: int, crop: int = IMAGE_SIZE):
    """Feature maps (B, size, size) uint8 from crop pixel points (B, 73, 2), (B, P, 2),
    shrunk to ``size`` with pixel centres kept, exactly as the renderer was trained."""
    from lsp_models.train.render_data import to_size

    return np.stack(
        [
            draw_feature_map(to_size(f, crop, size), to_size(sh, crop, size), size=size)
            for f, sh in zip(face2d, shoulders2d, strict=True)
        ]
    )


def resized_candidates(person: Person, size: int) -> np.ndarray:
    """The four candidate images area-resized to the renderer's size: (4, S, S, 3) uint8."""
    if size == person.candidates.shape[1]:
        return person.candidates
    return np.stack(
        [cv2.resize(c, (size, size), interpolation=cv2.INTER_AREA) for c in person.candidates]
    )


@torch.no_grad()
def render(
    models: Models, maps: np.ndarray, candidates: torch.Tensor, *, config: AnimateConfig
) -> np.ndarray:
    """Renderer on feature maps (B, S, S) uint8 with candidates (4, S, S, 3) uint8 on the
    device: (B, S, S, 3) uint8 RGB, in batches of ``config.render_batch``."""
    assert models.generator is not None, "load_models(renderer=True) to render"
    out = []
    for s in range(0, len(maps), config.render_batch):
        fm = torch.from_numpy(maps[s : s + config.render_batch]).to(models.device)
        x = renderer_input(fm, candidates)
        if config.precision == "bfloat16":
            with torch.autocast(models.device.type, dtype=torch.bfloat16):
                y = models.generator(x)
        else:
            y = models.generator(x)
        out.append(from_unit(y.float()).cpu().numpy())
    return np.concatenate(out) if out else np.zeros((0, *maps.shape[1:], 3), np.uint8)


@dataclass
class Motion:
    """The animated motion of every 60 FPS frame (see :func:`frame_geometry` for fields)."""

    n_frames: int
    mouth_raw: np.ndarray  # (N, 25, 3) model output dv_m, before smoothing
    pose_raw: np.ndarray  # (N, 6) sampled (or recorded) pose before post-processing
    geometry: dict[str, np.ndarray]


def predict_motion(
    models: Models,
    person: Person,
    y: np.ndarray,
    *,
    config: AnimateConfig,
    seed: int = 0,
    temperature: float = 0.3,
    pose_from: Path | None = None,
) -> Motion:
    """The whole motion of waveform ``y`` (16 kHz mono) on whole arrays; the reference
    :class:`AnimationStream` is equal to frame for frame."""
    n = n_frames(len(y))
    _check_length(len(y))
    d = models.delay
    feats = speech_features(models, y, n=n + d, config=config)
    mouth_raw = predict_mouth(models, feats[:n], lookahead=feats[n:])
    frames = np.arange(n)
    if pose_from is not None:
        pose_raw = recorded_poses(pose_from, frames)
        pose = pose_raw
    else:
        pose_raw = sample_poses(
            models,
            feats[:n],
            history=pose_history(models, person.path),
            temperature=temperature,
            seed=seed,
        )
        pose = postprocess_pose(models, pose_raw, config)
    f = smoothing(config, d, person.rig.crop.smoothing_s * FPS)
    mouth = smooth(mouth_raw, **f["mouth"]) * np.asarray(config.mouth_amp)
    centres = smooth(raw_centres(person, frames, pose), **f["camera"])
    boxes = place_boxes(centres, person.rig)
    geo = frame_geometry(person, frames, mouth, pose, boxes, config=config)
    return Motion(n, mouth_raw, pose_raw, geo)


# --------------------------------------------------------------------------- streaming


class MelStream:
    """Prep's log-mel computed as samples arrive: mel frame ``k`` (centred on sample
    ``round(k * sr / 120)``) is produced once every sample its window reads is in."""

    def __init__(self, *, sr: int = SAMPLE_RATE, fps: int = FPS, config: MelConfig = MelConfig()):
        self.sr, self.config = sr, config
        self.hop = sr / (fps * MELS_PER_FRAME)
        self.n_fft = config.n_fft
        win = int(round(config.win_s * sr))
        self.half = config.n_fft // 2
        start = (config.n_fft - win) // 2
        self.reach = -self.half + start + win  # samples after the centre the window reads
        self.window = _window(config.n_fft, win).astype(np.float32)
        self.basis = _mel_basis(sr, config.n_fft, config.n_mels, float(config.fmin),
                                float(config.fmax)).astype(np.float32)  # fmt: skip
        self.received = 0
        self.next = 0  # next mel frame
        self._buf = np.zeros(0, np.float32)
        self._buf0 = 0  # absolute index of _buf[0]

    def centre(self, k: int) -> int:
        return int(np.rint(k * self.hop))

    @property
    def lookahead_samples(self) -> int:
        return self.reach

    def push(self, y: np.ndarray) -> np.ndarray:
        """Samples (S,) in; mel frames (K, n_mels) whose windows are complete out."""
        self._buf = np.concatenate([self._buf, np.asarray(y, np.float32)])
        self.received += len(y)
        k_end = self.next
        while self.centre(k_end) + self.reach <= self.received:
            k_end += 1
        return self._frames(k_end)

    def finish(self, n_mel: int) -> np.ndarray:
        """The remaining frames up to ``n_mel`` (samples after the end are silence)."""
        return self._frames(max(n_mel, self.next))

    def _frames(self, k_end: int) -> np.ndarray:
        ks = np.arange(self.next, k_end)
        if len(ks) == 0:
            return np.zeros((0, self.config.n_mels), np.float32)
        centres = np.rint(ks * self.hop).astype(np.int64)
        lo = int(centres[0]) - self.half
        hi = int(centres[-1]) + self.half
        seg = np.zeros(hi - lo, np.float32)  # absolute samples lo .. hi - 1
        a, b = max(lo, self._buf0), min(hi, self._buf0 + len(self._buf))
        if b > a:
            seg[a - lo : b - lo] = self._buf[a - self._buf0 : b - self._buf0]
        windows = np.lib.stride_tricks.sliding_window_view(np.append(seg, 0.0), self.n_fft)
        frames = windows[centres - centres[0]] * self.window  # (K, n_fft)
        power = np.abs(np.fft.rfft(frames, axis=-1)) ** 2
        c = self.config
        mel = np.log(np.maximum(self.basis @ power.T.astype(np.float32), c.log_floor)).T
        self.next = k_end
        drop = max(0, self.centre(self.next) - self.half - self._buf0)
        self._buf, self._buf0 = self._buf[drop:], self._buf0 + drop
        return mel.astype(np.float32)


@dataclass
class AnimatedFrame:
    """One output frame of the stream."""

    index: int
    """Frame number at the stream's fps."""
    source: int
    """Frame number at 60 FPS."""
    feature_map: np.ndarray  # (S, S) uint8
    image: np.ndarray | None  # (S, S, 3) uint8 RGB; None when the stream does not render
    geometry: dict[str, np.ndarray]  # one frame of frame_geometry's arrays


class _Queue:
    """Arrays of consecutive frames, appended and taken from the front."""

    def __init__(self) -> None:
        self.items: list[np.ndarray] = []
        self.count = 0

    def put(self, x: np.ndarray) -> None:
        if len(x):
            self.items.append(x)
            self.count += len(x)

    def take(self, n: int) -> np.ndarray:
        data = np.concatenate(self.items)
        self.items = [data[n:]] if len(data) > n else []
        self.count -= n
        return data[:n]


STAGES = (
    "mel",
    "apc",
    "projection",
    "mouth",
    "headpose",
    "postprocess",
    "drawing",
    "renderer",
)


@contextlib.contextmanager
def _one_cpu_thread(device: torch.device) -> Iterator[None]:
    """One torch thread on CPU for the motion stages: their batch-1 recurrences and small
    matmuls run faster alone than with a second thread to wake (2 cores: 0.93 -> 0.83 ms
    per frame at cpu-small); the renderer, outside, keeps every thread."""
    before = torch.get_num_threads()
    if device.type != "cpu" or before == 1:
        yield
        return
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


class AnimationStream:
    """Audio in chunks of any size -> frames as soon as their look-ahead is complete.

    ``push(samples)`` takes float32 16 kHz mono samples and returns the frames it completed;
    ``finish()`` flushes the rest (the last frame ends less than one frame after the audio).
    The output equals :func:`predict_motion` and :func:`render` of the whole audio, frame for
    frame. ``fps=30`` produces every other 60 FPS frame. ``render=False`` skips the renderer
    (feature maps and geometry only). ``timings`` holds seconds per stage.
    """

    def __init__(
        self,
        models: Models,
        person: Person,
        *,
        config: AnimateConfig,
        seed: int = 0,
        temperature: float = 0.3,
        fps: int = FPS,
        pose_from: Path | None = None,
        render: bool = True,
    ) -> None:
        if fps not in (30, 60):
            raise InputError(f"fps must be 60 or 30, got {fps}")
        if not (isinstance(temperature, (int, float)) and temperature >= 0):
            raise InputError(f"temperature must be a number >= 0, got {temperature!r}")
        self.models, self.person, self.config = models, person, config
        self.fps, self.step = fps, FPS // fps
        self.render = render and models.generator is not None
        self.size = models.image_size
        self.timings = dict.fromkeys(STAGES, 0.0)
        self._mel = MelStream()
        self._mel_pending = np.zeros((0, self._mel.config.n_mels), np.float32)
        self._apc_state = None
        self._mouth_state = None
        self._n_feats = 0  # video frames with features
        self._n_real: int | None = None  # known at finish
        self._fed_mouth = 0
        self._n_pose = 0
        self._pose_from = pose_from
        if pose_from is None:
            history = torch.from_numpy(pose_history(models, person.path))[None].to(models.device)
            gen = torch.Generator(device=models.device).manual_seed(int(seed))
            self._sampler: HeadPoseSampler | FastHeadPoseSampler | None = make_sampler(
                models.headpose, history=history, temperature=temperature, generator=gen
            )
            rot_sigma, trans_sigma = config.rot_sigma, config.trans_sigma
        else:
            self._sampler = None
            rot_sigma = trans_sigma = 0.0  # recorded motion is replayed as it is
        f = smoothing(config, models.delay, person.rig.crop.smoothing_s * FPS)
        self._sm_mouth = StreamSmoother(**f["mouth"])
        self._sm_rot = StreamSmoother(**{**f["rot"], "sigma": rot_sigma})
        self._sm_trans = StreamSmoother(**{**f["trans"], "sigma": trans_sigma})
        self._sm_cam = StreamSmoother(**f["camera"])
        self._rot, self._trans = _Queue(), _Queue()
        self._mouth, self._pose, self._boxes = _Queue(), _Queue(), _Queue()
        self._n_centres = 0
        self._n_out = 0  # 60 FPS frames emitted
        self._cand = torch.from_numpy(resized_candidates(person, self.size)).to(models.device)
        self.lookahead_s = self._lookahead()

    def _lookahead(self) -> float:
        """Audio a frame waits for beyond its own end (seconds), compute excluded."""
        mouth = self.models.delay + self._sm_mouth.ahead
        pose = max(self._sm_rot.ahead, self._sm_trans.ahead) + self._sm_cam.ahead
        frames = max(mouth, pose)
        # frame i's last mel frame (2i + 1) is centred half a mel hop before the frame's end
        return frames / FPS + (self._mel.reach - self._mel.hop / 2) / SAMPLE_RATE

    # -- public

    def push(self, samples: np.ndarray) -> list[AnimatedFrame]:
        samples = np.asarray(samples, np.float32)
        if samples.ndim != 1:
            raise InputError(f"push expects mono samples (S,), got {samples.shape}")
        t = time.perf_counter()
        mel = self._mel.push(samples)
        self.timings["mel"] += time.perf_counter() - t
        return self._advance(mel)

    def finish(self) -> list[AnimatedFrame]:
        """Flush: the audio ended. InputError when it was shorter than one frame."""
        n = n_frames(self._mel.received)
        _check_length(self._mel.received)
        self._n_real = n
        d = self.models.delay
        t = time.perf_counter()
        mel = self._mel.finish(MELS_PER_FRAME * (n + d))
        self.timings["mel"] += time.perf_counter() - t
        return self._advance(mel, final=True)

    # -- stages

    def _advance(self, mel: np.ndarray, final: bool = False) -> list[AnimatedFrame]:
        with _one_cpu_thread(self.models.device):
            self._motion(mel, final)
        return self._assemble()

    def _motion(self, mel: np.ndarray, final: bool) -> None:
        tm = self.timings
        self._mel_pending = np.concatenate([self._mel_pending, mel])
        usable = len(self._mel_pending) // MELS_PER_FRAME * MELS_PER_FRAME
        feats = np.zeros((0, 0), np.float32)
        if usable:
            t = time.perf_counter()
            f, self._apc_state = _apc(self.models, self._mel_pending[:usable], self._apc_state)
            self._mel_pending = self._mel_pending[usable:]
            tm["apc"] += time.perf_counter() - t
            t = time.perf_counter()
            feats = _project(self.models, f, self.config)
            tm["projection"] += time.perf_counter() - t
        first = self._n_feats
        self._n_feats += len(feats)
        if len(feats):
            self._mouth_step(feats, first)
            self._pose_step(feats, first)
        if final:
            self._flush_smoothers()

    @torch.no_grad()
    def _mouth_step(self, feats: np.ndarray, first: int) -> None:
        t = time.perf_counter()
        m = self.models
        x = torch.from_numpy(feats.astype(np.float32))[None].to(m.device)
        out, self._mouth_state = m.mouth(x, self._mouth_state)
        out = out[0].cpu().numpy() + m.target_mean  # frames first - d .. first + T - 1 - d
        skip = max(0, m.delay - first)
        dv = out[skip:].reshape(-1, 25, 3)
        if self._n_real is not None:  # padding frames past the end predict nothing new
            dv = dv[: max(0, self._n_real - self._fed_mouth)]
        self._fed_mouth += len(dv)
        tm = self.timings
        tm["mouth"] += time.perf_counter() - t
        t = time.perf_counter()
        sm = self._sm_mouth.push(dv) * np.asarray(self.config.mouth_amp)
        self._mouth.put(sm.reshape(-1, 25, 3))
        tm["postprocess"] += time.perf_counter() - t

    @torch.no_grad()
    def _pose_step(self, feats: np.ndarray, first: int) -> None:
        n_real = self._n_real if self._n_real is not None else first + len(feats)
        feats = feats[: max(0, n_real - first)]
        if len(feats) == 0:
            return
        t = time.perf_counter()
        m = self.models
        if self._sampler is None:
            assert self._pose_from is not None
            pose = recorded_poses(self._pose_from, np.arange(first, first + len(feats)))
        else:
            audio = torch.from_numpy(feats.astype(np.float32)).to(m.device)
            if self._n_pose == 0:
                self._sampler.prime(audio[:1])
            cond = m.headpose.condition(audio)  # (T, L, 2G): one matmul per chunk
            out = self._sampler.steps(cond[None])[0]  # (T, P)
            pose = amplify_pose(m, _denormalise(m, out.cpu().numpy()), self.config)
        self._n_pose += len(pose)
        self.timings["headpose"] += time.perf_counter() - t
        t = time.perf_counter()
        self._rot.put(self._sm_rot.push(pose[:, :3]))
        self._trans.put(self._sm_trans.push(pose[:, 3:]))
        self._camera_step()
        self.timings["postprocess"] += time.perf_counter() - t

    def _camera_step(self, final: bool = False) -> None:
        n = min(self._rot.count, self._trans.count)
        if n:
            pose = np.concatenate([self._rot.take(n), self._trans.take(n)], axis=1)
            frames = np.arange(self._n_centres, self._n_centres + n)
            self._n_centres += n
            self._pose.put(pose)
            self._boxes.put(self._sm_cam.push(raw_centres(self.person, frames, pose)))
        if final:
            self._boxes.put(self._sm_cam.finish())

    def _flush_smoothers(self) -> None:
        t = time.perf_counter()
        self._mouth.put(
            self._sm_mouth.finish().reshape(-1, 25, 3) * np.asarray(self.config.mouth_amp)
        )
        self._rot.put(self._sm_rot.finish())
        self._trans.put(self._sm_trans.finish())
        self._camera_step(final=True)
        self.timings["postprocess"] += time.perf_counter() - t

    def _assemble(self) -> list[AnimatedFrame]:
        n = min(self._mouth.count, self._pose.count, self._boxes.count)
        if n == 0:
            return []
        t = time.perf_counter()
        frames = np.arange(self._n_out, self._n_out + n)
        mouth, pose = self._mouth.take(n), self._pose.take(n)
        boxes = place_boxes(self._boxes.take(n), self.person.rig)
        self._n_out += n
        keep = frames % self.step == 0
        geo = frame_geometry(self.person, frames[keep], mouth[keep], pose[keep], boxes[keep],
                             config=self.config)  # fmt: skip
        maps = feature_maps(geo["face2d"], geo["shoulders2d"], size=self.size)
        self.timings["drawing"] += time.perf_counter() - t
        images: np.ndarray | None = None
        if self.render:
            t = time.perf_counter()
            images = render(self.models, maps, self._cand, config=self.config)
            self.timings["renderer"] += time.perf_counter() - t
        out = []
        for j, src in enumerate(frames[keep]):
            out.append(
                AnimatedFrame(
                    index=int(src) // self.step,
                    source=int(src),
                    feature_map=maps[j],
                    image=None if images is None else images[j],
                    geometry={k: v[j] for k, v in geo.items()},
                )
            )
        return out


# ----------------------------------------------------------------------------- output


class VideoWriter:
    """Frames (uint8 RGB) streamed into ffmpeg's stdin -> H.264 yuv420p mp4 with the audio of
    ``audio`` muxed as AAC. Written to a temporary name beside ``path`` and renamed by
    ``close()`` only when ffmpeg succeeded; ``abort()`` (or an exception inside a ``with``
    block) removes it. ToolError carries ffmpeg's stderr."""

    def __init__(
        self,
        path: Path,
        *,
        fps: int,
        size: int,
        audio: Path | None,
        gray: bool = False,
        crf: int = 18,
        preset: str = "veryfast",
    ) -> None:
        self.path = Path(path)
        self.tmp = self.path.with_name(f".{self.path.stem}.tmp{os.getpid()}{self.path.suffix}")
        self.frames = 0
        self.seconds = 0.0
        self._err = tempfile.TemporaryFile()
        cmd = [ffmpeg_exe(), "-hide_banner", "-loglevel", "error", "-y"]
        cmd += ["-f", "rawvideo", "-pix_fmt", "gray" if gray else "rgb24"]
        cmd += ["-s", f"{size}x{size}", "-framerate", str(fps), "-i", "pipe:0"]
        if audio is not None:
            cmd += [
                "-i",
                str(audio),
                "-map",
                "0:v:0",
                "-map",
                "1:a:0",
                "-c:a",
                "aac",
                "-b:a",
                "160k",
            ]
        cmd += ["-c:v", "libx264", "-preset", preset, "-crf", str(crf), "-pix_fmt", "yuv420p"]
        cmd += ["-movflags", "+faststart", "-f", "mp4", str(self.tmp)]
        self._proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stderr=self._err)

    def write(self, frames: np.ndarray) -> None:
        """frames (B, S, S, 3) or (B, S, S) uint8."""
        t = time.perf_counter()
        stdin = typing.cast(typing.IO[bytes], self._proc.stdin)
        try:
            stdin.write(np.ascontiguousarray(frames, np.uint8).tobytes())
        except (BrokenPipeError, OSError):
            self._fail()
        self.frames += len(frames)
        self.seconds += time.perf_counter() - t

    def close(self) -> Path:
        t = time.perf_counter()
        try:
            typing.cast(typing.IO[bytes], self._proc.stdin).close()
        except (BrokenPipeError, OSError):
            pass
        if self._proc.wait() != 0:
            self._fail()
        os.replace(self.tmp, self.path)
        self._err.close()
        self.seconds += time.perf_counter() - t
        return self.path

    def abort(self) -> None:
        if self._proc.poll() is None:
            self._proc.kill()
        self._proc.wait()
        self.tmp.unlink(missing_ok=True)
        self._err.close()

    def _fail(self) -> typing.NoReturn:
        if self._proc.poll() is None:
            self._proc.kill()
        rc = self._proc.wait()
        self._err.seek(0)
        err = self._err.read().decode(errors="replace").strip()
        self.abort()
        tail = " | ".join(err.splitlines()[-5:]) or "no message"
        raise ToolError(f"ffmpeg failed writing {self.path} ({rc}): {tail}")

    def __enter__(self) -> VideoWriter:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is not None:
            self.abort()


def iter_audio(path: Path, *, chunk: int, sr: int = SAMPLE_RATE) -> Iterator[np.ndarray]:
    """Decode ``path``'s first audio stream to mono float32 at ``sr`` in chunks of ``chunk``
    samples (the last may be shorter), through an ffmpeg pipe: memory flat in length."""
    cmd = [ffmpeg_exe(), "-hide_banner", "-nostdin", "-loglevel", "error", "-i", str(path)]
    cmd += ["-map", "0:a:0", "-vn", "-ac", "1", "-ar", str(sr), "-f", "f32le", "pipe:1"]
    err = tempfile.TemporaryFile()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=err)
    stdout = typing.cast(typing.IO[bytes], proc.stdout)
    done = False
    try:
        while True:
            buf = stdout.read(4 * chunk)
            if not buf:
                break
            yield np.frombuffer(buf[: len(buf) // 4 * 4], "<f4").astype(np.float32)
        done = True
    finally:
        if not done:
            proc.kill()
        rc = proc.wait()
        err.seek(0)
        msg = err.read().decode(errors="replace").strip()
        err.close()
        if done and rc != 0:
            raise InputError(
                f"{path}: cannot decode the audio ({' | '.join(msg.splitlines()[-3:])})"
            )


def check_audio(path: Path) -> float:
    """Refuse what is not readable audio; return its duration in seconds (0 if unknown)."""
    info = probe(Path(path))
    if not info.has_audio:
        raise InputError(f"{path}: has no audio stream (give a speech recording: wav, mp3, ...)")
    return info.duration_s


def check_output(path: Path) -> None:
    """InputError unless ``path``'s folder exists or can be made, and is writable."""
    folder = Path(path).parent
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=folder, prefix=".lsp-write-test-"):
            pass
    except OSError as exc:
        raise InputError(
            f"cannot write the output {path}: {folder} is not a writable folder ({exc.strerror})"
        ) from None
    if Path(path).is_dir():
        raise InputError(f"{path} is a folder: give the output file, e.g. -o out.mp4")


@dataclass
class AnimateResult:
    """What :func:`animate` produced, for the CLI's summary."""

    output: Path
    frames: int
    fps: int
    seconds: float
    """Audio duration in seconds."""
    dataset: Path
    timings: dict[str, float] = field(default_factory=dict)
    """Seconds per stage (load, mel, apc, projection, mouth, headpose, postprocess,
    drawing, renderer, encoding)."""
    lookahead_s: float = 0.0
    """The stream's look-ahead: the latency of a live run, compute excluded."""
    intermediates: list[Path] = field(default_factory=list)
    config: AnimateConfig = AnimateConfig()


def animate(
    *,
    run_dir: Path,
    audio: Path,
    output: Path,
    dataset: Path | None = None,
    fps: int = FPS,
    pose_from: Path | None = None,
    temperature: float = 0.3,
    seed: int = 0,
    save_intermediates: bool = False,
    device: str = "auto",
    config: AnimateConfig | None = None,
    overrides: list[str] | None = None,
    chunk_s: float = 1.0,
    progress: ProgressFn | None = None,
) -> AnimateResult:
    """Animate ``audio`` with the person trained in ``run_dir`` into ``output`` (mp4).

    The audio is decoded in chunks of ``chunk_s`` seconds and pushed through an
    :class:`AnimationStream` whose frames go straight into ffmpeg: memory is flat in the
    audio's length. ``pose_from`` replays that dataset's recorded head motion instead of
    sampling. ``save_intermediates`` writes OUTPUT.npz (per-frame landmarks, poses, camera)
    and OUTPUT.features.mp4 (the feature maps). OUTPUT.json records the inputs, the
    resolved config and the timings.
    """
    from lsp_models.train.device import pick_device

    t0 = time.perf_counter()
    if fps not in (30, 60):
        raise InputError(f"--fps must be 60 or 30, got {fps}")
    output, audio = Path(output), Path(audio)
    duration = check_audio(audio)
    check_output(output)
    if pose_from is not None:
        schema.open_dataset(pose_from).close()
    config = config or resolve_config(run_dir, overrides)
    dev = pick_device(device)
    models = load_models(run_dir, device=dev)
    dataset = Path(dataset) if dataset is not None else find_dataset(run_dir)
    person = load_person(dataset)
    stream = AnimationStream(
        models,
        person,
        config=config,
        seed=seed,
        temperature=temperature,
        fps=fps,
        pose_from=pose_from,
    )
    timings = {"load": time.perf_counter() - t0}
    total = math.ceil(duration * fps) if duration else None
    size = models.image_size
    writers = [VideoWriter(output, fps=fps, size=size, audio=audio, crf=config.crf,
                           preset=config.preset)]  # fmt: skip
    fm_path = output.with_name(output.stem + ".features.mp4")
    if save_intermediates:
        writers.append(VideoWriter(fm_path, fps=fps, size=size, audio=audio, gray=True,
                                   crf=config.crf, preset=config.preset))  # fmt: skip
    saved: dict[str, list[np.ndarray]] = {}
    count = 0
    n_samples = 0

    def emit(frames: list[AnimatedFrame]) -> None:
        nonlocal count
        if not frames:
            return
        writers[0].write(np.stack([typing.cast(np.ndarray, f.image) for f in frames]))
        if save_intermediates:
            writers[1].write(np.stack([f.feature_map for f in frames]))
            for f in frames:
                for k, v in f.geometry.items():
                    saved.setdefault(k, []).append(v)
        count += len(frames)
        if progress is not None:
            progress("animate", count, max(total or 0, count))

    try:
        for y in iter_audio(audio, chunk=max(1, int(chunk_s * SAMPLE_RATE))):
            n_samples += len(y)
            emit(stream.push(y))
        emit(stream.finish())
        paths = [w.close() for w in writers]
    except BaseException:
        for w in writers:
            w.abort()
        raise
    timings.update(stream.timings)
    timings["encoding"] = sum(w.seconds for w in writers)
    if save_intermediates:
        npz = output.with_name(output.stem + ".npz")
        arrays = {k: np.stack(v) for k, v in saved.items()}
        _atomic(npz, lambda p: np.savez_compressed(p, **arrays), ".npz")
        paths.append(npz)
    result = AnimateResult(
        output=output,
        frames=count,
        fps=fps,
        seconds=n_samples / SAMPLE_RATE,
        dataset=dataset,
        timings=timings,
        lookahead_s=stream.lookahead_s,
        intermediates=paths[1:],
        config=config,
    )
    _write_json(
        output.with_name(output.stem + ".json"),
        {
            "run_dir": str(run_dir),
            "audio": str(audio),
            "dataset": str(dataset),
            "pose_from": None if pose_from is None else str(pose_from),
            "fps": fps,
            "seed": seed,
            "temperature": temperature,
            "frames": count,
            "seconds": result.seconds,
            "device": str(dev),
            "config": dataclasses.asdict(config),
            "timings": timings,
        },
    )
    return result


def _atomic(path: Path, write: Callable[[Path], None], suffix: str = "") -> None:
    tmp = path.with_name(f".{path.stem}.tmp{os.getpid()}{suffix}")
    try:
        write(tmp)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def _write_json(path: Path, data: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    _atomic(path, lambda p: p.write_text(json.dumps(data, indent=2) + "\n"))
