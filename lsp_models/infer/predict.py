"""The person's motion on whole arrays, the reference the stream is tested against.

Audio features (log-mel -> APC -> manifold projection), the mouth model, the head-pose
sampler, post-processing, per-frame geometry (landmarks, camera, shoulders), feature maps
and the renderer: :func:`predict_motion` runs them on a whole waveform (``lsp eval``
reuses :func:`predict_mouth`, :func:`sample_poses` and :func:`features_from_mel`);
:class:`lsp_models.infer.stream.AnimationStream` computes the same frames chunk by chunk
from the same functions.

Frame count: audio of ``S`` samples at ``sr`` gives ``N = ceil(S * 60 / sr)`` frames at 60
FPS (the last one may cover a partial frame of audio; the audio is padded with silence for
the analysis).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import torch

from lsp_models.constants import SAMPLING_TEMPERATURE
from lsp_models.infer.config import AnimateConfig
from lsp_models.infer.loading import Models, Person, pose_history, recorded_poses
from lsp_models.infer.motion import (
    face_centres,
    place_boxes,
    shoulder_points2d,
    smooth,
    smooth_pose,
    smoothing,
)
from lsp_models.nets.generator import from_unit, renderer_input
from lsp_models.sampling import sample_fast, velocity_map
from lsp_models.train.apc import apc_input
from lsp_models.train.render_frames import to_size
from lsp_prep.camera import crop_intrinsics, euler_xyz_to_rotvec
from lsp_prep.constants import FPS, IMAGE_SIZE, MELS_PER_FRAME, SAMPLE_RATE
from lsp_prep.errors import InputError
from lsp_prep.featuremap import draw_feature_map, face_points2d
from lsp_prep.layout import load_layout
from lsp_prep.stages.audio import MelConfig, video_log_mel


def n_frames(n_samples: int, *, sr: int = SAMPLE_RATE, fps: int = FPS) -> int:
    """Video frames for ``n_samples`` of audio: ceil(duration * fps)."""
    return -(-int(n_samples) * fps // sr)


def check_length(n_samples: int) -> None:
    if n_samples * FPS < SAMPLE_RATE:
        raise InputError(
            f"audio is shorter than one video frame (1/{FPS} s): {n_samples} samples at "
            f"{SAMPLE_RATE} Hz"
        )


def features_from_mel(models: Models, mel: np.ndarray, *, config: AnimateConfig) -> np.ndarray:
    """Projected APC features per video frame: mel (2N, n_mels) -> (N, 2H) float32."""
    feats, _ = encode_apc(models, mel, None)
    return project_features(models, feats, config)


def speech_features(
    models: Models, y: np.ndarray, *, n: int, config: AnimateConfig, mel: MelConfig = MelConfig()
) -> np.ndarray:
    """Projected APC features (n, 2H) of video frames 0 .. n - 1 of waveform ``y`` (16 kHz;
    silence beyond its end), the log-mel exactly as prep computes it."""
    m = video_log_mel(y, sr=SAMPLE_RATE, n_video_frames=n, fps=FPS, config=mel).T
    return features_from_mel(models, m, config=config)


@torch.no_grad()
def encode_apc(models: Models, mel: np.ndarray, state):
    """mel (2T, n_mels) -> APC features (T, 2H) and the GRU state (None to start; pass the
    returned one back to continue the same audio)."""
    x = apc_input(models.apc.config, mel, models.mel_mean, models.mel_std)
    feats, state = models.apc.encode(torch.from_numpy(x)[None].to(models.device), state)
    f = feats[0]  # (2T, H)
    return f.reshape(len(f) // MELS_PER_FRAME, -1), state


@torch.no_grad()
def project_features(models: Models, feats: torch.Tensor, config: AnimateConfig) -> np.ndarray:
    """APC features (T, 2H) on the device -> manifold-projected (T, 2H) numpy, blended by
    ``config.lle_blend`` with ``config.lle_k`` neighbours (raw when the blend is 0)."""
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


def sample_poses(
    models: Models,
    feats: np.ndarray,
    *,
    history: np.ndarray,
    temperature: float = SAMPLING_TEMPERATURE,
    seed: int = 0,
) -> np.ndarray:
    """Head poses for frames of ``feats`` (N, 2H): (N, 6) pitch, yaw, roll (radians) and
    translation minus the person's mean, sampled autoregressively (``temperature`` scales
    sigma; 0 is the mean path). The same seed gives the same poses, here and streaming."""
    gen = torch.Generator(device=models.device).manual_seed(int(seed))
    audio = torch.from_numpy(feats.astype(np.float32))[None].to(models.device)
    hist = torch.from_numpy(history)[None].to(models.device)
    # the same sampler as AnimationStream's (make_sampler), so streaming equals offline
    out = sample_fast(
        models.headpose,
        audio,
        history=hist,
        temperature=temperature,
        generator=gen,
        velocity=pose_velocity(models),
    )
    return denormalise(models, out[0].cpu().numpy())


def pose_velocity(models: Models) -> torch.Tensor | None:
    """What the samplers need to feed back velocities consistent with the sampled poses
    (:func:`lsp_models.sampling.velocity_map` of the model's feature normalisation) when
    the head-pose model asks for it (``HeadPoseConfig.velocity_feedback``); else None."""
    if not models.headpose.config.velocity_feedback:
        return None
    return velocity_map(models.pose_mean, models.pose_std)


def denormalise(models: Models, pose: np.ndarray) -> np.ndarray:
    """Normalised sampler output (N, 12) -> poses (N, 6): Euler angles and translation."""
    return (pose.astype(np.float64) * models.pose_std + models.pose_mean)[:, :6]


def amplify_pose(models: Models, pose: np.ndarray, config: AnimateConfig) -> np.ndarray:
    """Scale rotation about the person's mean rotation, translation about its mean."""
    out = pose.copy()
    mean_rot = models.pose_mean[:3]
    out[:, :3] = mean_rot + config.rot_amp * (pose[:, :3] - mean_rot)
    out[:, 3:6] = config.trans_amp * pose[:, 3:6]
    return out


def postprocess_pose(models: Models, pose: np.ndarray, config: AnimateConfig) -> np.ndarray:
    """Sampled poses (N, 6) as animate uses them: amplified, then rotation and translation
    smoothed in time with their own Gaussian sigmas."""
    return smooth_pose(amplify_pose(models, pose, config), config, models.delay)


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
    rot = euler_xyz_to_rotvec(pose[:, :3])
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
    rot = euler_xyz_to_rotvec(pose[:, :3])
    trans = pose[:, 3:6] + person.trans_mean
    return face_centres(person.replay_points(frames), rot, trans, person.rig)


def feature_maps(face2d: np.ndarray, shoulders2d: np.ndarray, *, size: int, crop: int = IMAGE_SIZE):
    """Feature maps (B, size, size) uint8 from crop pixel points (B, 73, 2), (B, P, 2),
    shrunk to ``size`` with pixel centres kept, exactly as the renderer was trained."""
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
    temperature: float = SAMPLING_TEMPERATURE,
    pose_from: Path | None = None,
) -> Motion:
    """The whole motion of waveform ``y`` (16 kHz mono) on whole arrays; the reference
    :class:`AnimationStream` is equal to frame for frame."""
    n = n_frames(len(y))
    check_length(len(y))
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
