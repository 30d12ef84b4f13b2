"""``lsp prep``: one video in, one validated HDF5 dataset out.

Stages, each resumable:

1. probe     container, streams, rotation; refuse unusable input early
2. track     decode at the canonical fps (pass 1), Face Mesh on the target face  [cached]
3. crop      smoothed square boxes from the landmarks (pure, cheap)
4. frames    decode again (pass 2), crop to image_size, JPEG into the partial file [resumable]
5. geometry  focal length by bracketing search, 3D head pose per frame, object-space
             landmarks, mouth displacements, all from the landmarks              [cached]
   features  texture features of the upper face measured against one reference frame
             with the landmark poses as the prediction [cached]; then the focal search
             and the poses again, on the features (see facetrack.py)
6. shoulders upper-body points on frame 0 (MediaPipe Pose), LK tracks, billboard  [cached]
7. pack      audio on the video clock, log-mel, landmarks in crop pixels, candidates,
             split, attributes; validate, rename the partial file to its final name,
             update the manifest
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import cv2
import h5py
import numpy as np
from threadpoolctl import threadpool_limits

from lsp_prep import __version__
from lsp_prep.camera import (
    crop_intrinsics,
    rotvec_to_euler_xyz,
    scale_intrinsics,
    to_crop,
    to_original,
)
from lsp_prep.config import PrepConfig
from lsp_prep.constants import N_FACE_POINTS, N_MESH_POINTS
from lsp_prep.dataset import schema
from lsp_prep.dataset.manifest import update_manifest
from lsp_prep.errors import InputError
from lsp_prep.layout import Layout, load_layout
from lsp_prep.media import MediaInfo, iter_frames, load_audio, probe, sha256_file
from lsp_prep.stages.audio import align_waveform, video_log_mel
from lsp_prep.stages.candidates import choose_candidates, mouth_area, split_frames
from lsp_prep.stages.crop import crop_boxes, crop_frame, face_extent
from lsp_prep.stages.features import build_reference, measure_frame, reference_frame
from lsp_prep.stages.geometry.calibrate import Calibration
from lsp_prep.stages.geometry.head import HeadTrack, refine_head, track_head
from lsp_prep.stages.shoulders.track import billboard, choose_points, scaled_config, track_points
from lsp_prep.stages.track import (
    FaceMeshTracker,
    fill_gaps,
    mesh_confidence,
    quiet_native_stderr,
    rescale_points,
    tracking_size,
)

ProgressFn = Callable[[str, int, "int | None"], None]
"""Called as ``progress(stage, done, total)``; ``total`` may be None when unknown."""

CACHE_DIR = ".lsp-cache"


@dataclass
class PrepResult:
    """What one ``prep`` produced, for the CLI's summary and the manifest."""

    dataset: Path
    n_frames: int
    duration_s: float
    valid_fraction: float
    detected_fraction: float
    interpolated_frames: int
    source_sha256: str
    dataset_sha256: str
    reused: bool = False
    warnings: list[str] = field(default_factory=list)
    timings: dict[str, float] = field(default_factory=dict)


@dataclass
class Tracks:
    """Output of the track stage, in original-video pixels at the canonical fps."""

    mesh: np.ndarray  # (N, 478, 3) float32; NaN where not detected
    detected: np.ndarray  # (N,) bool: the tracker returned a mesh
    frame_size: tuple[int, int]  # (width, height) as decoded


def _noop(stage: str, done: int, total: int | None) -> None:
    return None


def check_output_dir(out_dir: Path) -> None:
    """Create ``out_dir`` if needed; raise InputError if it cannot be written."""
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=out_dir, prefix=".lsp-write-test-"):
            pass
    except OSError as exc:
        raise InputError(
            f"output directory {out_dir} is not writable ({exc.strerror}): choose another -o"
        ) from None


def check_input(video: Path, *, audio: Path | None, config: PrepConfig) -> MediaInfo:
    """Probe the inputs and refuse what prep cannot use, with a message saying what to do."""
    size = config.ingest.image_size
    for x, y in config.shoulders.points or ():
        if not (0 <= x <= size - 1 and 0 <= y <= size - 1):
            raise InputError(
                f"shoulder point ({x:g}, {y:g}) is outside the {size}x{size} crop: give "
                f"shoulders.points in crop pixels, 0..{size - 1}"
            )
    info = probe(video)
    if not info.has_video:
        raise InputError(f"{video}: has no video stream (is it an audio file or an image?)")
    if audio is not None:
        ainfo = probe(audio)
        if not ainfo.has_audio:
            raise InputError(f"{audio}: has no audio stream to use as the speech track")
    elif not info.has_audio:
        raise InputError(
            f"{video}: has no audio stream; pass the speech recording with --audio FILE"
        )
    if info.duration_s and info.duration_s < config.ingest.min_duration_s:
        raise InputError(
            f"{video}: clip is {info.duration_s:.2f} s long; prep needs at least "
            f"{config.ingest.min_duration_s:g} s (3-5 minutes makes a good person model)"
        )
    return info


def track_faces(
    frames, *, config: PrepConfig, total: int | None = None, progress: ProgressFn = _noop
) -> Tracks:
    """Run the Face Mesh tracker over an iterable of RGB frames (pure but for MediaPipe)."""
    meshes: list[np.ndarray | None] = []
    size = (0, 0)
    with quiet_native_stderr(), FaceMeshTracker(config.track) as tracker:
        for i, frame in enumerate(frames):
            size = (frame.shape[1], frame.shape[0])
            pts = tracker(frame)
            meshes.append(None if pts is None else pts.astype(np.float32))
            if i % 30 == 0:
                progress("track", i + 1, total)
    n = len(meshes)
    progress("track", n, n)
    detected = np.array([m is not None for m in meshes], bool)
    mesh = np.full((n, N_MESH_POINTS, 3), np.nan, np.float32)
    if detected.any():
        mesh[detected] = np.stack([m for m in meshes if m is not None])
    return Tracks(mesh, detected, size)


def clean_tracks(
    tracks: Tracks, *, config: PrepConfig, source: str
) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """Score, reject, interpolate; refuse clips with too little face. Returns the mesh
    (N, 478, 3) in original pixels (NaN where invalid) and the per-frame masks."""
    n = len(tracks.detected)
    tc = config.track
    conf = mesh_confidence(tracks.mesh, tracks.detected)
    detected = tracks.detected & (conf >= tc.min_confidence)
    if detected.sum() == 0 or detected.mean() < 0.02:
        raise InputError(
            f"{source}: no face found ({int(detected.sum())} of {n} frames): "
            "film the person facing the camera, face unobstructed and well lit"
        )
    max_gap = int(round(tc.max_gap_s * config.ingest.fps))
    mesh, interpolated = fill_gaps(tracks.mesh, detected, max_gap=max_gap)
    valid = detected | interpolated
    if valid.mean() < tc.min_valid_fraction:
        raise InputError(
            f"{source}: face usable in only {valid.mean():.0%} of frames; prep needs "
            f"{tc.min_valid_fraction:.0%} (cut the clip to where the face is visible, or "
            "lower track.min_valid_fraction with --set)"
        )
    masks = {"detected": detected, "interpolated": interpolated, "valid": valid, "confidence": conf}
    return mesh.astype(np.float32), masks


def _stage_key(config: PrepConfig, source_sha: str, audio_sha: str, *sections: str) -> str:
    return f"{source_sha[:16]}-{audio_sha[:8]}-{config.digest(*sections)}"


def _atomic_savez(path: Path, **arrays: np.ndarray) -> None:
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}.npz")
    np.savez(tmp, **arrays)
    os.replace(tmp, path)


def prep_video(
    video: Path,
    *,
    out_dir: Path,
    config: PrepConfig = PrepConfig(),
    audio: Path | None = None,
    name: str | None = None,
    force: bool = False,
    progress: ProgressFn = _noop,
) -> PrepResult:
    """Turn ``video`` into ``out_dir/<name>.h5``; see the module docstring for stages."""
    video, out_dir = Path(video), Path(out_dir)
    timings: dict[str, float] = {}
    t0 = time.perf_counter()
    info = check_input(video, audio=audio, config=config)
    check_output_dir(out_dir)
    name = name or video.stem
    final = out_dir / f"{name}.h5"
    partial = schema.partial_path(final)
    cache = out_dir / CACHE_DIR / name
    src_sha = sha256_file(video)
    aud_sha = sha256_file(audio) if audio is not None else ""
    key = _stage_key(config, src_sha, aud_sha)
    timings["probe"] = time.perf_counter() - t0

    if force:
        shutil.rmtree(cache, ignore_errors=True)
        partial.unlink(missing_ok=True)
    elif final.exists():
        with h5py.File(final, "r") as f:
            same = f.attrs.get("prep_key") == key
        if same:
            schema.validate(final)
            return _reuse(final, src_sha, timings)
    cache.mkdir(parents=True, exist_ok=True)
    fps = config.ingest.fps
    total_est = int(np.ceil(info.duration_s * fps)) if info.duration_s else None

    # 2. track (pass 1), cached
    t = time.perf_counter()
    track_key = _stage_key(config, src_sha, "", "ingest", "track")
    track_file = cache / "track.npz"
    tracks = _load_tracks(track_file, track_key)
    if tracks is None:
        size = (info.width, info.height)
        small = tracking_size(size, config.track.max_side)
        frames = iter_frames(video, fps=fps, size=size, out_size=small)
        tracks = track_faces(frames, config=config, total=total_est, progress=progress)
        if small != size:
            mesh = rescale_points(tracks.mesh, small, size).astype(np.float32)
            tracks = Tracks(mesh, tracks.detected, size)
        _save_arrays(
            track_file,
            track_key,
            {
                "mesh": tracks.mesh,
                "detected": tracks.detected,
                "frame_size": np.array(tracks.frame_size),
            },
        )
    else:
        progress("track", len(tracks.detected), len(tracks.detected))
    timings["track"] = time.perf_counter() - t
    n = len(tracks.detected)
    if n < config.ingest.min_duration_s * fps:
        _drop_cache(cache)
        raise InputError(
            f"{video}: decoded only {n} frames ({n / fps:.2f} s); prep needs at least "
            f"{config.ingest.min_duration_s:g} s"
        )
    try:
        mesh, masks = clean_tracks(tracks, config=config, source=str(video))
    except InputError:
        _drop_cache(cache)  # a refused clip leaves nothing behind
        raise

    # 3. crop
    centres, sizes = face_extent(mesh)
    boxes = crop_boxes(
        centres, sizes, masks["valid"], fps=fps, frame_size=tracks.frame_size, config=config.crop
    )

    # 4. frames (pass 2) into the partial file
    t = time.perf_counter()
    frames_key = _stage_key(config, src_sha, "", "ingest", "track", "crop")
    _write_frames(partial, video, info, boxes, frames_key, config=config, progress=progress)
    timings["frames"] = time.perf_counter() - t

    # 5. geometry: calibration and 3D head tracking on the original frames (cached)
    t = time.perf_counter()
    layout = load_layout()
    crop_size = config.ingest.image_size
    geo_key = _stage_key(config, src_sha, "", "ingest", "track", "camera", "geometry")
    head = _load_head(cache / "geometry.npz", geo_key)
    if head is None:
        progress("geometry", 0, 1)
        with threadpool_limits(1):  # small matrices: BLAS threads only add overhead
            head = track_head(
                layout.from_mesh(mesh),
                masks["valid"],
                image_size=tracks.frame_size,
                layout=layout,
                camera=config.camera,
                geometry=config.geometry,
            )
        _save_head(cache / "geometry.npz", geo_key, head)
    progress("geometry", 1, 1)
    warnings_geo: list[str] = []
    k_crop = crop_intrinsics(head.calibration.K, boxes, crop_size)
    timings["geometry"] = time.perf_counter() - t

    # 5b. features: the head measured on the face's texture (cached), then refined
    t = time.perf_counter()
    n_features = np.zeros(n, np.int64)
    mesh_crop = to_crop(mesh, boxes, crop_size).astype(np.float32)
    if config.features.enabled:
        feat_key = _stage_key(config, src_sha, "", "ingest", "track", "crop", "camera",
                              "geometry", "features")  # fmt: skip
        feats = _load_arrays(cache / "features.npz", feat_key)
        if feats is None:
            feats = _feature_stage(partial, head, mesh_crop, masks["valid"], k_crop, boxes,
                                   layout, config=config, progress=progress)  # fmt: skip
            _save_arrays(cache / "features.npz", feat_key, feats)
        if feats["points3d"].size:
            with threadpool_limits(1):
                head, refinement = refine_head(
                    head,
                    feats["points2d"],
                    feats["points3d"],
                    layout.from_mesh(mesh),
                    masks["valid"],
                    image_size=tracks.frame_size,
                    layout=layout,
                    camera=config.camera,
                    geometry=config.geometry,
                    min_features=config.features.min_features,
                    calib_frames=config.features.calib_frames,
                )
            n_features = refinement.n_features
            warnings_geo += [f"{video}: {refinement.warning}"] if refinement.warning else []
        else:
            warnings_geo.append(f"{video}: {feats['warning']}")
        k_crop = crop_intrinsics(head.calibration.K, boxes, crop_size)
    if not head.calibration.identified:
        warnings_geo.append(
            f"{video}: focal length not identified: {head.calibration.reason}; "
            f"used {head.calibration.focal:.0f} px"
        )
    timings["features"] = time.perf_counter() - t

    # 6. shoulders: LK on the stored crops (cached)
    t = time.perf_counter()
    lsp73 = layout.from_mesh(mesh_crop)[..., :2]
    sh_key = _stage_key(config, src_sha, "", "ingest", "track", "crop", "camera", "geometry",
                      "features", "shoulders")  # fmt: skip
    shoulders = _load_arrays(cache / "shoulders.npz", sh_key)
    if shoulders is None:
        shoulders = _shoulder_stage(
            partial, lsp73, masks["valid"], k_crop, head, n, config=config, progress=progress
        )
        _save_arrays(cache / "shoulders.npz", sh_key, shoulders)
    timings["shoulders"] = time.perf_counter() - t

    # 7. pack
    t = time.perf_counter()
    sr = config.ingest.sample_rate
    if audio is not None:
        y, offset = load_audio(audio, sr=sr), 0.0
    else:
        y, offset = load_audio(video, sr=sr), info.audio_start_s - info.video_start_s
    y = align_waveform(y, sr=sr, offset_s=offset, n_video_frames=n, fps=fps)
    warnings = audio_warnings(y, source=str(audio or video)) + warnings_geo
    warnings += [f"{video}: {w}" for w in shoulders.pop("warnings", np.array([])).tolist()]
    mel = video_log_mel(y, sr=sr, n_video_frames=n, fps=fps, config=config.mel)
    euler = rotvec_to_euler_xyz(head.rotation)
    cand = choose_candidates(mouth_area(lsp73), euler, masks["valid"], config=config.candidates)
    train, val = split_frames(n, fps=fps, config=config.split)
    with h5py.File(partial, "a") as f:
        for ds in ("audio", "landmarks", "camera", "track", "shoulders", "candidates", "split"):
            if ds in f:
                del f[ds]
        images = np.stack([_decode_rgb(f["frames"][i]) for i in cand])
        f.create_dataset("camera/intrinsics", data=k_crop)
        f.create_dataset("camera/intrinsics_original", data=head.calibration.K)
        f.create_dataset("camera/focal_search", data=head.calibration.curve)
        f["camera"].attrs.update(
            {
                "focal_identified": head.calibration.identified,
                "focal_reason": head.calibration.reason,
                "calibration_frames": head.calibration.frames,
            }
        )
        gz = {"compression": "gzip", "compression_opts": 4}
        f.create_dataset("track/rotation", data=head.rotation.astype(np.float32))
        f.create_dataset("track/translation", data=head.translation.astype(np.float32))
        f.create_dataset("track/points3d", data=head.points3d.astype(np.float32), **gz)
        f.create_dataset("track/mean_shape", data=head.mean_shape.astype(np.float32))
        f.create_dataset("track/n_features", data=n_features.astype(np.int32))
        f.create_dataset(
            "track/mouth_displacement", data=head.mouth_displacement.astype(np.float32), **gz
        )
        f.create_dataset(
            "track/reprojection_error", data=head.reprojection_error.astype(np.float32)
        )
        f.create_dataset("shoulders/points2d", data=shoulders["points2d"].astype(np.float32))
        f.create_dataset("shoulders/valid", data=shoulders["valid"])
        f.create_dataset("shoulders/billboard3d", data=shoulders["billboard3d"].astype(np.float32))
        f["shoulders"].attrs["source"] = str(shoulders["source"])
        f.create_dataset("candidates/images", data=images, **gz)
        f.create_dataset("candidates/frame_index", data=cand.astype(np.int64))
        f.create_dataset("split/train", data=train.astype(np.int64))
        f.create_dataset("split/val", data=val.astype(np.int64))
        f.create_dataset("audio/waveform", data=y, compression="gzip", compression_opts=4)
        f.create_dataset(
            "audio/mel",
            data=mel.T,
            chunks=(min(2 * n, 1200), mel.shape[0]),
            compression="gzip",
            compression_opts=4,
        )
        gz = {"compression": "gzip", "compression_opts": 4}
        f.create_dataset("landmarks/mesh", data=mesh_crop, chunks=(min(n, 64), 478, 3), **gz)
        f.create_dataset("landmarks/lsp73", data=lsp73.astype(np.float32), **gz)
        for k in ("valid", "detected", "interpolated"):
            f.create_dataset(f"landmarks/{k}", data=masks[k])
        f.create_dataset("landmarks/confidence", data=masks["confidence"].astype(np.float32))
        attrs = {
            "schema_version": schema.SCHEMA_VERSION,
            "fps": fps,
            "sample_rate": sr,
            "image_size": crop_size,
            "hop_length": sr / (2 * fps),
            "n_frames": n,
            "source_path": str(video),
            "source_sha256": src_sha,
            "audio_sha256": aud_sha,
            "lsp_version": __version__,
            "config": json.dumps(config.to_dict()),
            "source_info": json.dumps({k: v for k, v in asdict(info).items() if k != "path"}),
            "prep_key": key,
        }
        f.attrs.update(attrs)
    schema.validate(partial)
    os.replace(partial, final)
    timings["pack"] = time.perf_counter() - t
    result = PrepResult(
        dataset=final,
        n_frames=n,
        duration_s=n / fps,
        valid_fraction=float(masks["valid"].mean()),
        detected_fraction=float(masks["detected"].mean()),
        interpolated_frames=int(masks["interpolated"].sum()),
        source_sha256=src_sha,
        dataset_sha256=sha256_file(final),
        warnings=warnings,
        timings=timings,
    )
    update_manifest(out_dir, result)
    _drop_cache(cache)
    return result


def _feature_stage(
    partial: Path,
    head: HeadTrack,
    mesh_crop: np.ndarray,
    valid: np.ndarray,
    k_crop: np.ndarray,
    boxes: np.ndarray,
    layout: Layout,
    *,
    config: PrepConfig,
    progress: ProgressFn,
) -> dict[str, np.ndarray]:
    """Measure the upper face's texture features on every ``features.every``-th frame.

    Returns their positions (N, P, 2) in original pixels (NaN where not measured), their
    3D points (P, 3) in the landmark track's object frame, and the reference frame; or
    empty arrays and a warning when the reference shows too little texture.
    """
    fc = config.features
    n, size = len(valid), config.ingest.image_size
    flag = {1.0: cv2.IMREAD_GRAYSCALE, 0.5: cv2.IMREAD_REDUCED_GRAYSCALE_2,
            0.25: cv2.IMREAD_REDUCED_GRAYSCALE_4}[fc.scale]  # fmt: skip
    full = (size, size)
    small = (round(size * fc.scale), round(size * fc.scale))
    k_work = scale_intrinsics(k_crop, full, small)
    ref = reference_frame(head.rotation, valid)
    # the reference's Face Mesh in the landmark track's object frame: one affine map on
    # the stable points takes its (x, y, depth) onto their object coordinates
    stable = np.asarray(layout.sets["stable"])
    mesh_ref = mesh_crop[ref, :N_FACE_POINTS].astype(np.float64)
    src = np.c_[mesh_ref[layout.mediapipe_index[stable]], np.ones(len(stable))]
    affine, *_ = np.linalg.lstsq(src, head.points3d[ref][stable], rcond=None)
    surface = np.c_[mesh_ref, np.ones(len(mesh_ref))] @ affine
    lsp_ref = rescale_points(layout.from_mesh(mesh_crop[ref])[:, :2], full, small)
    which = valid & (np.arange(n) % fc.every == 0)
    which[ref] = True
    todo = np.flatnonzero(which)
    with h5py.File(partial, "r") as f:
        frames = f["frames"]
        try:
            reference = build_reference(
                ref, cv2.imdecode(frames[ref], flag), surface, head.rotation[ref],
                head.translation[ref], k_work[ref], lsp_ref, layout=layout, config=fc,
            )  # fmt: skip
        except InputError as exc:
            return {"points2d": np.zeros((n, 0, 2)), "points3d": np.zeros((0, 3)),
                    "reference": np.array(ref), "warning": np.array(
                        f"{exc}; head poses come from the landmarks alone")}  # fmt: skip
        out = np.full((n, len(reference.points2d), 2), np.nan)
        ref_pose = (head.rotation[ref], head.translation[ref], k_work[ref])
        block = 64  # the frames' chunk: read each once
        for start in range(0, n, block):
            chunk = todo[(todo >= start) & (todo < start + block)]
            if len(chunk) == 0:
                continue
            jpegs = frames[start : start + block]
            for i in chunk:
                pose = (head.rotation[i], head.translation[i], k_work[i])
                out[i] = measure_frame(cv2.imdecode(jpegs[i - start], flag), reference,
                                       ref_pose, pose, fc)  # fmt: skip
            progress("features", int(chunk[-1]) + 1, n)
    progress("features", n, n)
    points = to_original(rescale_points(out, small, full), boxes, size)
    return {"points2d": points, "points3d": reference.points3d, "reference": np.array(ref),
            "warning": np.array("")}  # fmt: skip


def _decode_rgb(jpeg: np.ndarray) -> np.ndarray:
    return cv2.cvtColor(cv2.imdecode(jpeg, cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)


def _shoulder_stage(
    partial: Path,
    lsp73: np.ndarray,
    valid: np.ndarray,
    k_crop: np.ndarray,
    head: HeadTrack,
    n: int,
    *,
    config: PrepConfig,
    progress: ProgressFn,
) -> dict[str, np.ndarray]:
    """Choose upper-body points on frame 0 of the crops, track them, lift the billboard."""
    with h5py.File(partial, "r") as f:
        frames = f["frames"]
        first = _decode_rgb(frames[0])
        face = lsp73[0] if valid[0] else None
        chosen = choose_points(first, config=config.shoulders, face_points2d=face)

        scale = config.shoulders.track_scale
        flag = {
            1.0: cv2.IMREAD_GRAYSCALE,
            0.5: cv2.IMREAD_REDUCED_GRAYSCALE_2,
            0.25: cv2.IMREAD_REDUCED_GRAYSCALE_4,
        }[scale]
        full = (first.shape[1], first.shape[0])
        small = (round(full[0] * scale), round(full[1] * scale))

        def stream():
            for i in range(n):
                yield cv2.imdecode(frames[i], flag)

        tracks = track_points(
            stream(),
            rescale_points(chosen.points, full, small),
            config=scaled_config(config.shoulders, scale),
            total=n,
            progress=progress,
        )
    predicted = rescale_points(tracks.predicted, small, full)
    depth = float(np.mean(head.translation[valid, 2]))
    board = billboard(
        np.where(tracks.valid[..., None], predicted, np.nan),
        tracks.valid,
        intrinsics=k_crop,
        depth=depth,
    )
    return {
        "points2d": tracks.points2d,
        "valid": tracks.valid,
        "billboard3d": board,
        "source": np.array(chosen.source),
        "warnings": np.array(chosen.warnings, dtype=str),
    }


def _save_arrays(path: Path, key: str, arrays: dict[str, np.ndarray]) -> None:
    _atomic_savez(path, key=np.array(key), **arrays)


def _load_arrays(path: Path, key: str) -> dict[str, np.ndarray] | None:
    if not path.exists():
        return None
    try:
        with np.load(path) as z:
            if str(z["key"]) != key:
                return None
            return {k: z[k] for k in z.files if k != "key"}
    except (OSError, KeyError, ValueError):
        return None  # a damaged cache is recomputed


def _save_head(path: Path, key: str, head: HeadTrack) -> None:
    cal = head.calibration
    _save_arrays(
        path,
        key,
        {
            "focal": np.array(cal.focal),
            "K": cal.K,
            "curve": cal.curve,
            "identified": np.array(cal.identified),
            "reason": np.array(cal.reason),
            "shape": cal.shape,
            "frames": cal.frames,
            "rotation": head.rotation,
            "translation": head.translation,
            "points3d": head.points3d,
            "mean_shape": head.mean_shape,
            "mouth_displacement": head.mouth_displacement,
            "reprojection_error": head.reprojection_error,
        },
    )


def _load_head(path: Path, key: str) -> HeadTrack | None:
    z = _load_arrays(path, key)
    if z is None:
        return None
    cal = Calibration(
        float(z["focal"]),
        z["K"],
        z["curve"],
        bool(z["identified"]),
        str(z["reason"]),
        z["shape"],
        z["frames"],
    )
    return HeadTrack(
        cal,
        z["rotation"],
        z["translation"],
        z["points3d"],
        z["mean_shape"],
        z["mouth_displacement"],
        z["reprojection_error"],
    )


def _drop_cache(cache: Path) -> None:
    """Remove one clip's stage cache, and the cache folder once no clip uses it."""
    shutil.rmtree(cache, ignore_errors=True)
    try:
        cache.parent.rmdir()
    except OSError:
        pass  # missing, or other clips still have caches there


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


def _reuse(final: Path, src_sha: str, timings: dict[str, float]) -> PrepResult:
    with h5py.File(final, "r") as f:
        n = int(f.attrs["n_frames"])
        valid = f["landmarks/valid"][:]
        det = f["landmarks/detected"][:]
        interp = f["landmarks/interpolated"][:]
        fps = int(f.attrs["fps"])
    result = PrepResult(
        final,
        n,
        n / fps,
        float(valid.mean()),
        float(det.mean()),
        int(interp.sum()),
        src_sha,
        sha256_file(final),
        reused=True,
        timings=timings,
    )
    update_manifest(final.parent, result)
    return result


def _load_tracks(path: Path, key: str) -> Tracks | None:
    z = _load_arrays(path, key)
    if z is None:
        return None
    w, h = (int(v) for v in z["frame_size"])
    return Tracks(z["mesh"], z["detected"], (w, h))


def _write_frames(
    partial: Path,
    video: Path,
    info: MediaInfo,
    boxes: np.ndarray,
    key: str,
    *,
    config: PrepConfig,
    progress: ProgressFn,
) -> None:
    """Crop, encode and store every frame in the partial file, unless already done."""
    n = len(boxes)
    if partial.exists():
        try:
            with h5py.File(partial, "r") as f:
                if f.attrs.get("frames_key") == key and f.attrs.get("frames_complete", False):
                    progress("frames", n, n)
                    return
        except OSError:
            pass
        partial.unlink()
    size, quality = config.ingest.image_size, config.ingest.jpeg_quality
    params = [cv2.IMWRITE_JPEG_QUALITY, quality]
    with h5py.File(partial, "w") as f:
        f.attrs["frames_key"] = key
        ds = f.create_dataset("frames", shape=(n,), dtype=schema.jpeg_dtype(), chunks=(64,))
        f.create_dataset("crop/boxes", data=boxes.astype(np.float64))
        batch: list[np.ndarray] = []
        start = 0
        # ffmpeg area-resamples each frame so the crop box is 1.25x the output size: the
        # pipe carries less and the final warp only shrinks a little. BGR for the encoder.
        src = (info.width, info.height)
        k = min(1.0, 1.25 * size / float(boxes[0, 2] - boxes[0, 0]))
        dec = (max(1, round(src[0] * k)), max(1, round(src[1] * k)))
        scale = (dec[0] / src[0], dec[1] / src[1])
        stream = iter_frames(video, fps=config.ingest.fps, size=src, out_size=dec, pix_fmt="bgr24")
        for i, frame in enumerate(stream):
            if i >= n:
                break  # ffmpeg is deterministic; never more frames than pass 1 saw
            crop = crop_frame(frame, boxes[i], size, frame_scale=scale)
            ok, buf = cv2.imencode(".jpg", crop, params)
            if not ok:
                raise RuntimeError("JPEG encoding failed")
            batch.append(buf.ravel())
            if len(batch) == 64:
                ds[start : start + 64] = _ragged(batch)
                start += 64
                batch = []
                progress("frames", start, n)
        if batch:
            ds[start : start + len(batch)] = _ragged(batch)
            start += len(batch)
        if start != n:
            raise InputError(f"{video}: second decoding pass gave {start} frames, first gave {n}")
        f.attrs["frames_complete"] = True
    progress("frames", n, n)


def _ragged(arrays: list[np.ndarray]) -> np.ndarray:
    out = np.empty(len(arrays), dtype=object)
    out[:] = arrays
    return out
