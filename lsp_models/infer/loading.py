"""What ``animate`` and ``eval`` load: the person's trained models from a run directory
(:func:`load_models`) and what animation reads from the person's dataset
(:func:`load_person`), through the one dataset reader (:mod:`lsp_prep.dataset.reader`).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from lsp_models.infer.manifold import Manifold
from lsp_models.infer.motion import CameraRig, longest_valid_run, pingpong
from lsp_models.nets.apc import APC
from lsp_models.nets.generator import Generator
from lsp_models.nets.headpose import HeadPoseModel
from lsp_models.nets.mouth import AudioToMouth
from lsp_models.train.checkpoint import load_checkpoint, safe_load
from lsp_prep.camera import to_original
from lsp_prep.constants import IMAGE_SIZE
from lsp_prep.dataset.reader import DatasetReader
from lsp_prep.dataset.schema import SCHEMA_VERSION
from lsp_prep.errors import CheckpointError, InputError
from lsp_prep.featuremap import face_points2d
from lsp_prep.stages.crop import CropConfig

MOTION_STAGES = ("apc", "mouth", "headpose")
"""The stages whose checkpoints motion needs (the renderer is optional)."""


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


def load_stage(path: Path, stage: str) -> dict:
    """A checkpoint of ``stage`` (:func:`lsp_models.train.loop.load_checkpoint`: present, of
    that stage, of a known version) that was trained on this toolkit's dataset schema."""
    path = Path(path)
    ckpt = load_checkpoint(path, stage=stage)
    if ckpt.get("schema_version") != SCHEMA_VERSION:
        raise CheckpointError(
            f"{path.parent}: trained on dataset schema {ckpt.get('schema_version')}, this "
            f"toolkit reads {SCHEMA_VERSION}: re-run `lsp prep` and `lsp train {stage}`"
        )
    return ckpt


def mouth_from_checkpoint(
    ckpt: dict, path: Path, *, audio_dim: int, device: torch.device
) -> tuple[AudioToMouth, np.ndarray]:
    """The mouth model (eval mode, on ``device``) of a loaded checkpoint and its target mean
    (75,); CheckpointError when it expects other than ``audio_dim``-dim audio features."""
    from lsp_models.nets.mouth import MouthConfig
    from lsp_prep.configtree import from_data

    net = AudioToMouth(from_data(MouthConfig, ckpt["model_config"]))
    if net.config.audio_dim != audio_dim:
        raise CheckpointError(
            f"{path}: expects {net.config.audio_dim}-dim audio features but the run's APC "
            f"gives {audio_dim}: retrain with `lsp train mouth`"
        )
    net.load_state_dict(ckpt["model"])
    target_mean = np.asarray(ckpt["extra"]["target_mean"], np.float32)
    return net.eval().to(device), target_mean


def load_mouth(
    path: Path, *, audio_dim: int, device: torch.device
) -> tuple[AudioToMouth, np.ndarray, int]:
    """A mouth checkpoint: the model (eval mode), its target mean (75,) and its step.
    CheckpointError when it was trained on another dataset schema or another APC width."""
    ckpt = load_stage(path, "mouth")
    net, target_mean = mouth_from_checkpoint(ckpt, path, audio_dim=audio_dim, device=device)
    return net, target_mean, int(ckpt["step"])


def load_models(run_dir: Path, *, device: torch.device, renderer: bool = True) -> Models:
    """Load every stage's checkpoint from RUN; CheckpointError names the missing stage's
    ``lsp train`` command or a version mismatch."""
    from lsp_models.nets.headpose import HeadPoseConfig
    from lsp_models.train.apc import load_apc
    from lsp_models.train.renderer import load_generator
    from lsp_prep.configtree import from_data

    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise InputError(f"{run_dir}: run directory does not exist (train with `lsp train`)")
    ckpts = {s: load_stage(run_dir / s / f"{s}.pt", s) for s in MOTION_STAGES}
    apc, mel_mean, mel_std = load_apc(run_dir, device)
    feats_path = run_dir / "features.pt"
    if not feats_path.is_file():
        raise CheckpointError(f"{feats_path}: no feature database: run `lsp train mouth` first")
    stored = safe_load(feats_path, fix="rebuild it with `lsp train mouth`")
    database = stored.get("features") if isinstance(stored, dict) else None
    if not isinstance(database, torch.Tensor) or database.ndim != 2:
        raise CheckpointError(f"{feats_path}: not a feature database: run `lsp train mouth`")
    width = 2 * apc.config.hidden
    mouth, target_mean = mouth_from_checkpoint(
        ckpts["mouth"], run_dir / "mouth" / "mouth.pt", audio_dim=width, device=device
    )
    hp = HeadPoseModel(from_data(HeadPoseConfig, ckpts["headpose"]["model_config"]))
    hp.load_state_dict(ckpts["headpose"]["model"])
    for name, got in (("headpose", hp.config.audio_dim), ("features.pt", database.shape[1])):
        if got != width:
            raise CheckpointError(
                f"{run_dir}: {name} expects {got}-dim audio features but the APC gives {width}: "
                f"retrain with `lsp train {'mouth' if name == 'features.pt' else name}`"
            )
    generator = load_generator(run_dir, device) if renderer else None
    extra = ckpts["headpose"]["extra"]
    return Models(
        apc=apc,
        mel_mean=mel_mean,
        mel_std=mel_std,
        database=database.float().to(device),
        mouth=mouth,
        target_mean=target_mean,
        headpose=hp.eval().to(device),
        pose_mean=np.asarray(extra["pose_mean"], np.float64),
        pose_std=np.asarray(extra["pose_std"], np.float64),
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


PERSON_FIELDS = (
    "track/points3d",
    "track/mean_shape",
    "shoulders/billboard3d",
    "candidates/images",
    "camera/intrinsics_original",
    "crop/boxes",
    "landmarks/mesh",
)
"""Fields animation needs beyond the track (checked up front, to name what is missing)."""


def camera_rig(ds: DatasetReader, rotation: np.ndarray, translation: np.ndarray) -> CameraRig:
    """How prep framed this dataset's crops (:class:`CameraRig`), to frame the animated head
    the same way. Prep centres the crop on the Face Mesh's bounding box; animation knows the
    LSP-73 points: the rig's offset is the median difference of the two box centres over
    the valid frames (read 1024 frames at a time)."""
    valid = ds.read("landmarks/valid")
    boxes = ds.read("crop/boxes")
    size = ds.crop_side
    k_orig = ds.read("camera/intrinsics_original", np.float64)
    crop = CropConfig(**ds.config().get("crop", {}))
    info = ds.source_info()
    diffs = []
    for s in range(0, len(valid), 1024):
        idx = np.flatnonzero(valid[s : s + 1024]) + s
        if len(idx) == 0:
            continue
        mesh = to_original(ds.read_rows("landmarks/mesh", idx)[:, :, :2], boxes[idx], size)
        pts = ds.read_rows("track/points3d", idx)
        lsp = face_points2d(pts, rotation[idx], translation[idx], k_orig)
        diffs.append((mesh.min(1) + mesh.max(1)) / 2 - (lsp.min(1) + lsp.max(1)) / 2)
    side = float(boxes[0, 2] - boxes[0, 0])
    offset = np.median(np.concatenate(diffs), axis=0) + np.array([0.0, crop.offset_y * side])
    return CameraRig(
        intrinsics=k_orig,
        side=side,
        frame_size=(int(info["width"]), int(info["height"])),
        offset=offset,
        crop=crop,
        image_size=size,
    )


def load_person(path: Path) -> Person:
    """Read a dataset for animation; SchemaError for a missing file or field or version,
    InputError for a file that is not HDF5 or is damaged."""
    path = Path(path)
    with DatasetReader(path) as ds:
        ds.require(PERSON_FIELDS)
        train = ds.read("split/train")
        start, length = longest_valid_run(ds.read("landmarks/valid"), train)
        rotation = ds.read("track/rotation", np.float64)
        translation = ds.read("track/translation", np.float64)
        rig = camera_rig(ds, rotation, translation)
        lifted = np.flatnonzero(ds.read("shoulders/valid").any(axis=1))
        billboard = ds.read("shoulders/billboard3d", np.float64)
        replay = ds.read_rows("track/points3d", np.arange(start, start + length))
        return Person(
            path=path,
            mean_shape=ds.read("track/mean_shape", np.float64),
            replay=replay.astype(np.float64),
            replay_start=start,
            rotation=rotation,
            translation=translation,
            train=train,
            trans_mean=translation[train].mean(0),
            rig=rig,
            billboard3d=billboard[np.isfinite(billboard).all(axis=1)],
            shoulder_reference=translation[lifted[0] if len(lifted) else 0],
            candidates=ds.read("candidates/images"),
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


def require_run(run_dir: Path) -> None:
    """InputError unless ``run_dir`` is a trained run (a folder with the motion stages'
    checkpoints); checked before anything is written into it."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise InputError(f"{run_dir}: run directory does not exist (train with `lsp train`)")
    for stage in MOTION_STAGES:
        if not (run_dir / stage / f"{stage}.pt").is_file():
            raise CheckpointError(
                f"{run_dir / stage / f'{stage}.pt'}: no checkpoint: run `lsp train {stage}` first"
            )


def check_dataset(path: Path, *, option: str = "--dataset") -> None:
    """Before any work: InputError unless ``path`` is a readable dataset of ``lsp prep``; a
    video or audio file given instead is named as such, with the prep command to run."""
    from lsp_prep.errors import LSPError
    from lsp_prep.media import probe

    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: no such dataset file ({option} takes the .h5 of `lsp prep`)")
    with open(path, "rb") as fh:
        hdf5 = fh.read(8) == b"\x89HDF\r\n\x1a\n"
    if not hdf5:
        try:
            media = probe(path)
        except LSPError:
            media = None
        if media is not None and media.has_video:
            raise InputError(
                f"{path}: is a video, not a dataset: prep it first (`lsp prep {path} -o DIR`) "
                f"and pass DIR/{path.stem}.h5 as {option}"
            )
        if media is not None and media.has_audio:
            raise InputError(
                f"{path}: is an audio file, not a dataset: {option} takes the .h5 that "
                "`lsp prep VIDEO` writes for the person's video"
            )
    DatasetReader(path).close()


def check_person(run_dir: Path, dataset: Path) -> None:
    """InputError when ``dataset`` was prepped from another video than the run's person (the
    source hashes of RUN/run.json and the dataset differ); a warning when the run records
    no hash (trained before runs recorded one), since then it cannot be checked."""
    import warnings

    from lsp_models.train.stage import recorded_source, source_sha256

    run_hash, data_hash = recorded_source(run_dir), source_sha256(dataset)
    if not run_hash or not data_hash:
        warnings.warn(
            f"{dataset}: cannot check that it is the person of {run_dir} (no source hash "
            "recorded): make sure it is the dataset the run was trained on",
            stacklevel=2,
        )
    elif run_hash != data_hash:
        raise InputError(
            f"{dataset}: prepped from another video (source {data_hash[:12]}) than the person "
            f"of {run_dir} (source {run_hash[:12]}): pass that person's dataset, or omit "
            "--dataset to use the one training recorded"
        )


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


def recorded_poses(dataset: Path, frames: np.ndarray) -> np.ndarray:
    """Poses (B, 6) of ``dataset``'s recorded track for frames (B,), played forwards then
    backwards when the audio is longer: Euler angles and translation minus its train mean."""
    from lsp_prep.camera import rotvec_to_euler_xyz

    with DatasetReader(dataset) as ds:
        rot, trans = ds.read("track/rotation", np.float64), ds.read("track/translation")
        train = ds.read("split/train")
    euler = np.unwrap(rotvec_to_euler_xyz(rot), axis=0)
    pose = np.concatenate([euler, trans - trans[train].mean(0)], axis=1)
    return pose[pingpong(frames, 0, len(pose))]
