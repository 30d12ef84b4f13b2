"""``lsp prep``: one video in, one validated HDF5 dataset out.

The stages, in order (:data:`STAGES` declares them; each config section belongs to one):

=========  ============================  ===================  ==============================
stage      module (lsp_prep.stages.)     config sections      does
=========  ============================  ===================  ==============================
probe      probe                         ingest               inputs usable? refuse early
track      track                         track                decode (pass 1), Face Mesh [c]
crop       crop                          crop                 smoothed square boxes
frames     frames                        -                    decode (pass 2), crop, JPEG [r]
geometry   geometry (folder), head.py    camera, geometry     focal length, 3D head track [c]
features   features.stage / .measure     features             texture features [c], the head
                                                              calibrated and tracked on them
shoulders  shoulders.stage (and folder)  shoulders            Pose points, LK, billboard [c]
pack       pack (audio, sync,            mel, candidates,     speech on the video clock,
           candidates)                   split                A/V sync check, log-mel,
                                                              candidates, split, every
                                                              field via dataset.writer
=========  ============================  ===================  ==============================

Two threads share the work (:func:`_run_stages`): Face Mesh's mirror graph runs beside
the direct one, geometry beside frames, the shoulders' point tracking beside features.

[c] cached in ``OUT/.lsp-cache/<clip>/<stage>.npz``; [r] resumable in the partial file. A
stage's cache key names the source and every config section of the stage and of the stages
upstream of it (:func:`stage_sections`), so a changed setting recomputes exactly the
stages it can affect. The camera model all stages share is :mod:`lsp_prep.camera`.
"""

from __future__ import annotations

import json
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import cache as memoize
from pathlib import Path

import h5py
import numpy as np
import pandas as pd

from lsp_prep import cache
from lsp_prep.beside import Beside
from lsp_prep.beside import timed as _timed
from lsp_prep.camera import crop_intrinsics, to_crop
from lsp_prep.config import PrepConfig
from lsp_prep.dataset import schema, writer
from lsp_prep.dataset.manifest import MANIFEST_NAME, PrepResult, read_manifest, update_manifest
from lsp_prep.errors import InputError, LSPError, SchemaError
from lsp_prep.layout import load_layout
from lsp_prep.media import MediaInfo, sha256_file
from lsp_prep.progress import ProgressFn, no_progress
from lsp_prep.stages import track as track_stage
from lsp_prep.stages.crop import crop_boxes, face_extent
from lsp_prep.stages.features.stage import Refined, measure_clip, refine_clip
from lsp_prep.stages.frames import write_frames
from lsp_prep.stages.geometry.focal import describe as describe_focal
from lsp_prep.stages.geometry.head import (
    HeadTrack,
    geometry_stage,
    head_from_arrays,
    head_to_arrays,
)
from lsp_prep.stages.pack import Clip, audio_warnings, pack, root_attrs, speech_track
from lsp_prep.stages.probe import check_input, check_length, check_output_dir
from lsp_prep.stages.shoulders.stage import lift_shoulders, track_shoulders
from lsp_prep.stages.sync import clip_sync, sync_warning


@dataclass(frozen=True)
class Stage:
    """One row of the stage table."""

    name: str
    module: str
    """Where the stage's code lives."""
    sections: tuple[str, ...]
    """The config sections this stage owns (reads first)."""
    inputs: tuple[str, ...] = ()
    """Stages whose results this one uses."""
    cached: bool = False
    """Its result is kept in ``<name>.npz`` of the clip's cache folder."""
    uses_audio: bool = False
    """It reads the speech track (``--audio`` or the video's own)."""


STAGES: tuple[Stage, ...] = (
    Stage("probe", "lsp_prep.stages.probe", ("ingest",)),
    Stage("track", "lsp_prep.stages.track", ("track",), ("probe",), cached=True),
    Stage("crop", "lsp_prep.stages.crop", ("crop",), ("track",)),
    Stage("frames", "lsp_prep.stages.frames", (), ("crop",)),
    Stage("geometry", "lsp_prep.stages.geometry", ("camera", "geometry"), ("track",), cached=True),
    Stage("features", "lsp_prep.stages.features", ("features",), ("frames", "geometry"), True),
    Stage("shoulders", "lsp_prep.stages.shoulders", ("shoulders",), ("features",), cached=True),
    Stage(
        "pack",
        "lsp_prep.stages.pack",
        ("mel", "candidates", "split"),
        ("shoulders",),
        uses_audio=True,
    ),
)
"""Every stage of prep in running order."""

STAGE = {s.name: s for s in STAGES}


@memoize
def upstream(name: str) -> frozenset[str]:
    """The stage ``name`` and every stage it depends on, directly or not."""
    return frozenset({name}).union(*(upstream(i) for i in STAGE[name].inputs))


def stage_sections(name: str) -> tuple[str, ...]:
    """The config sections a stage's result depends on (its own and its inputs'), sorted."""
    return tuple(sorted({s for u in upstream(name) for s in STAGE[u].sections}))


@dataclass(frozen=True)
class Job:
    """One clip being prepped: its inputs, config and where its outputs go."""

    video: Path
    audio: Path | None
    config: PrepConfig
    out_dir: Path
    name: str
    source_sha: str
    audio_sha: str
    notes: list[str] = field(default_factory=list, compare=False)
    """What was found damaged and recomputed, one line each (the CLI prints them)."""

    @property
    def final(self) -> Path:
        return self.out_dir / f"{self.name}.h5"

    @property
    def partial(self) -> Path:
        return writer.partial_path(self.final)

    @property
    def cache(self) -> Path:
        return self.out_dir / cache.CACHE_DIR / self.name

    def key(self, stage: str) -> str:
        """Cache key of ``stage``: the source, the speech if the stage hears it, and the
        digest of :func:`stage_sections`."""
        audio = any(STAGE[u].uses_audio for u in upstream(stage))
        digest = self.config.digest(*stage_sections(stage))
        return f"{self.source_sha[:16]}-{self.audio_sha[:8] if audio else ''}-{digest}"

    def cached(
        self, stage: str, compute: Callable[[], dict[str, np.ndarray]]
    ) -> tuple[dict[str, np.ndarray], bool]:
        """The stage's arrays from its cache, else computed and cached; and whether they
        came from the cache."""
        arrays = self.load(stage)
        if arrays is not None:
            return arrays, True
        arrays = compute()
        self.save(stage, arrays)
        return arrays, False

    def load(self, stage: str) -> dict[str, np.ndarray] | None:
        """The stage's cached arrays, or None (missing, stale, or damaged: with a note)."""
        path = self.cache / f"{stage}.npz"
        try:
            return cache.load(path, self.key(stage))
        except cache.Damaged as exc:
            self.notes.append(f"{path}: damaged stage cache ({exc}); recomputing {stage}")
            return None

    def save(self, stage: str, arrays: dict[str, np.ndarray]) -> None:
        """Cache the stage's arrays (atomically, :func:`lsp_prep.cache.save`)."""
        cache.save(self.cache / f"{stage}.npz", self.key(stage), arrays)


def prep_video(
    video: Path,
    *,
    out_dir: Path,
    config: PrepConfig = PrepConfig(),
    audio: Path | None = None,
    name: str | None = None,
    force: bool = False,
    progress: ProgressFn = no_progress,
    manifest: bool = True,
    concurrent: bool = True,
) -> PrepResult:
    """Turn ``video`` into ``out_dir/<name>.h5``; see the module docstring for stages.

    A finished dataset of the same inputs and config is reused; one of other settings,
    another video or another ``audio`` is refused unless ``force`` (InputError naming what
    differs); a damaged one (unreadable, invalid, or not matching its checksum in the
    manifest) is prepped again, and the result's ``notes`` say so. A refused clip leaves
    no output directory that was not there before.

    ``manifest=False`` leaves ``out_dir/manifest.csv`` to the caller (:mod:`lsp_prep.batch`
    writes the rows of clips prepped in several processes from one). ``concurrent=False``
    runs every stage on this thread, one after the other (:func:`_run_stages`): the same
    dataset, more slowly; the tests compare the two."""
    video, out_dir = Path(video), Path(out_dir)
    made_dir = not out_dir.exists()
    try:
        return _prep(video, out_dir, config, audio, name, force, progress, manifest, concurrent)
    except LSPError:
        if made_dir:
            _remove_if_empty(out_dir)
        raise


def _prep(
    video: Path,
    out_dir: Path,
    config: PrepConfig,
    audio: Path | None,
    name: str | None,
    force: bool,
    progress: ProgressFn,
    manifest: bool,
    concurrent: bool,
) -> PrepResult:
    """:func:`prep_video` after its arguments are paths."""
    timings: dict[str, float] = {}
    t0 = time.perf_counter()
    info = check_input(video, audio=audio, config=config)
    check_output_dir(out_dir)
    aud_sha = sha256_file(audio) if audio is not None else ""
    job = Job(video, audio, config, out_dir, name or video.stem, sha256_file(video), aud_sha)
    timings["probe"] = time.perf_counter() - t0
    if force:
        cache.drop(job.cache)
        job.partial.unlink(missing_ok=True)
    elif job.final.exists() and _existing_is_reusable(job):
        return _reuse(job, timings, manifest=manifest)
    job.cache.mkdir(parents=True, exist_ok=True)
    clip, warnings = _run_stages(job, info, timings, progress, concurrent=concurrent)
    t = time.perf_counter()
    n = len(clip.masks["valid"])
    y = speech_track(video, audio, info, n=n, config=config.ingest)
    sync = clip_sync(clip.head.points3d, clip.masks["valid"], y, config=config.ingest)
    warnings = audio_warnings(y, source=str(audio or video)) + warnings
    warnings += [f"{audio or video}: {w}" for w in [sync_warning(sync, config=config.ingest)] if w]
    attrs = root_attrs(
        video, info, n=n, config=config, shas=(job.source_sha, aud_sha), key=job.key("pack")
    )
    attrs["warnings"] = json.dumps(warnings)
    audio_attrs = sync.attrs(applied_ms=config.ingest.av_offset_ms)
    pack(job.partial, clip, y, config=config, attrs=attrs, audio_attrs=audio_attrs)
    writer.finish(job.partial, job.final)
    timings["pack"] = time.perf_counter() - t
    masks = clip.masks
    result = PrepResult(
        dataset=job.final,
        n_frames=n,
        duration_s=n / config.ingest.fps,
        valid_fraction=float(masks["valid"].mean()),
        detected_fraction=float(masks["detected"].mean()),
        interpolated_frames=int(masks["interpolated"].sum()),
        source_sha256=job.source_sha,
        dataset_sha256=sha256_file(job.final),
        warnings=warnings,
        notes=job.notes,
        timings=timings,
    )
    if manifest:
        update_manifest(out_dir, result)
    cache.drop(job.cache)
    return result


def _remove_if_empty(folder: Path) -> None:
    """Remove ``folder`` and its empty subfolders when no file is left in it."""
    if any(p.is_file() for p in folder.rglob("*")):
        return
    shutil.rmtree(folder, ignore_errors=True)


def _existing_is_reusable(job: Job) -> bool:
    """Whether the finished dataset ``job.final`` can be reused. False (with a note) when
    it is damaged, to be prepped again; InputError when it was prepped from other inputs or
    with other settings, which only ``--force`` replaces."""
    final = job.final
    try:
        with h5py.File(final, "r") as f:
            key = f.attrs.get("prep_key")
            stored = {k: f.attrs.get(k) for k in ("config", "source_sha256", "audio_sha256")}
        schema.validate(final)
        expected = _manifest_sha(job)
        if expected is not None and expected != sha256_file(final):
            raise SchemaError(f"its SHA-256 differs from the one in {MANIFEST_NAME}")
    except (OSError, SchemaError, KeyError, ValueError) as exc:
        reason = " ".join(str(exc).split()) or type(exc).__name__
        job.notes.append(f"{final}: damaged ({reason}); prepping it again")
        return False
    if key == job.key("pack"):
        return True
    raise InputError(
        f"{final} exists, prepped {_differences(job, stored)}: pass --force to replace "
        "it, or choose another -o"
    )


def _manifest_sha(job: Job) -> str | None:
    """The dataset checksum the output's manifest records for this clip, if any."""
    try:
        rows = read_manifest(job.out_dir)
        match = rows[rows["clip"] == job.name]
    except (OSError, ValueError, KeyError, pd.errors.ParserError):
        return None
    return str(match["dataset_sha256"].iloc[0]) if len(match) else None


def _differences(job: Job, stored: dict) -> str:
    """What separates the existing dataset from this run, as words for the refusal."""
    if stored["source_sha256"] != job.source_sha:
        return f"from another video than {job.video} (its source SHA-256 differs)"
    if (stored["audio_sha256"] or "") != job.audio_sha:
        return "with another speech track (--audio)"
    try:
        old = json.loads(stored["config"])
    except (TypeError, ValueError):
        old = {}
    new = job.config.to_dict()
    changed = [
        f"{section}.{k}: {old.get(section, {}).get(k)!r} -> {v!r}"
        for section, fields in new.items()
        for k, v in fields.items()
        if old.get(section, {}).get(k) != _plain(v)
    ]
    if not changed:
        return "by another version of the toolkit"
    more = f" and {len(changed) - 4} more" if len(changed) > 4 else ""
    return f"with other settings ({'; '.join(changed[:4])}{more})"


def _plain(value: object) -> object:
    """A config value as JSON gives it back (tuples as lists)."""
    return json.loads(json.dumps(value))


def _run_stages(
    job: Job,
    info: MediaInfo,
    timings: dict[str, float],
    progress: ProgressFn,
    *,
    concurrent: bool,
) -> tuple[Clip, list[str]]:
    """track .. shoulders; returns what pack needs and the warnings so far.

    Two lines of work keep both cores busy: this thread runs track, frames, features and
    the shoulders' lift; a worker thread (:class:`Beside`) runs the geometry stage while
    the frames are written, then the shoulders' point tracking (it reads only the stored
    crops and the landmarks) while the features stage measures the same crops. Each runs
    the function it ran before on the same inputs, so the dataset is the same; ``timings``
    give the time this thread spent in (or waiting for) each stage, and the worker's own
    time as ``"<stage> (beside)"``. ``concurrent=False`` runs all of it on this thread
    (Face Mesh's two graphs too)."""
    config, video = job.config, job.video
    fps, size = config.ingest.fps, config.ingest.image_size
    with _timed(timings, "track"):
        mesh, masks, frame_size = _track(job, info, progress, concurrent=concurrent)
    valid = masks["valid"]
    centres, sizes = face_extent(mesh)
    boxes = crop_boxes(centres, sizes, valid, fps=fps, frame_size=frame_size, config=config.crop)
    mesh_crop = to_crop(mesh, boxes, size).astype(np.float32)
    lsp73 = load_layout().from_mesh(mesh_crop)[..., :2]
    with Beside(timings, threaded=concurrent) as beside:
        geometry = beside.submit("geometry", _geometry, job, mesh, valid, frame_size, progress)
        with _timed(timings, "frames"):
            key = job.key("frames")
            write_frames(
                job.partial, video, info, boxes, key, config=config.ingest, progress=progress
            )
        shoulders = job.load("shoulders")
        tracked = None
        if shoulders is None:
            tracked = beside.submit(
                "shoulders",
                track_shoulders,
                job.partial,
                lsp73,
                valid,
                len(mesh),
                config=config.shoulders,
                progress=progress,
                stop=beside.stop,
            )
        with _timed(timings, "geometry"):
            head = geometry.result()
        with _timed(timings, "features"):
            refined = _features(job, head, mesh, mesh_crop, valid, boxes, frame_size, progress)
            head = refined.head
            k_crop = crop_intrinsics(head.calibration.K, boxes, size)
        with _timed(timings, "shoulders"):
            if tracked is not None:
                shoulders = lift_shoulders(tracked.result(), head=head, valid=valid, k_crop=k_crop)
                job.save("shoulders", shoulders)
    assert shoulders is not None  # cached, or tracked and lifted
    warnings = [f"{video}: {w}" for w in refined.warnings if w]
    focal = describe_focal(head.calibration, level=config.camera.interval_level)
    if not head.calibration.identified:
        warnings.append(f"{video}: {focal}")
    else:
        job.notes.append(f"{video}: {focal}")
    warnings += [f"{video}: {w}" for w in np.atleast_1d(shoulders.pop("warnings", [])) if w]
    clip = Clip(
        mesh_crop, lsp73, masks, head, k_crop, refined.n_features, refined.source, shoulders
    )
    return clip, warnings


def _features(
    job: Job,
    head: HeadTrack,
    mesh: np.ndarray,
    mesh_crop: np.ndarray,
    valid: np.ndarray,
    boxes: np.ndarray,
    frame_size: tuple[int, int],
    progress: ProgressFn,
) -> Refined:
    """The features stage: measured on the stored crops (cached), then the head refined."""
    config, layout = job.config, load_layout()
    size = config.ingest.image_size
    if not config.features.enabled:
        return Refined(head, np.zeros(len(mesh), np.int64), np.zeros(len(mesh), np.int8), [])
    k_crop = crop_intrinsics(head.calibration.K, boxes, size)
    feats, _ = job.cached(
        "features",
        lambda: measure_clip(
            job.partial,
            head,
            mesh_crop,
            valid,
            k_crop,
            boxes,
            layout,
            size=size,
            config=config.features,
            progress=progress,
        ),
    )
    return refine_clip(
        head,
        feats,
        layout.from_mesh(mesh),
        valid,
        frame_size=frame_size,
        layout=layout,
        camera=config.camera,
        geometry=config.geometry,
        config=config.features,
    )


def _track(
    job: Job, info: MediaInfo, progress: ProgressFn, *, concurrent: bool
) -> tuple[np.ndarray, dict[str, np.ndarray], tuple[int, int]]:
    """The track stage (cached), then the refusal of clips with too little face: the mesh
    (N, 478, 3) in original pixels, the per-frame masks and the frame size."""
    config = job.config
    arrays, hit = job.cached(
        "track",
        lambda: track_stage.track_video(
            job.video,
            info,
            fps=config.ingest.fps,
            config=config.track,
            progress=progress,
            concurrent=concurrent,
        ).to_arrays(),
    )
    tracks = track_stage.Tracks.from_arrays(arrays)
    n = len(tracks.detected)
    if hit:
        progress("track", n, n)
    try:
        check_length(job.video, n, config=config)
        if tracks.detected.mean() < 0.02:
            _refuse_small_face(job, info)
        mesh, masks = track_stage.clean_tracks(
            tracks, fps=config.ingest.fps, config=config.track, source=str(job.video)
        )
    except InputError:
        cache.drop(job.cache)  # a refused clip leaves nothing behind
        raise
    return mesh, masks, tracks.frame_size


def _refuse_small_face(job: Job, info: MediaInfo) -> None:
    """InputError when the clip holds a face too small for Face Mesh, saying how to crop
    the video around it; returns when there is none (clean_tracks refuses such a clip)."""
    box = track_stage.find_small_face(job.video, info, config=job.config.track)
    if box is None:
        return
    face = float(max(box[2] - box[0], box[3] - box[1]))
    side = int(min(info.width, info.height, 4 * face)) // 2 * 2
    cx, cy = (box[0] + box[2]) / 2, (box[1] + box[3]) / 2
    x = int(np.clip(cx - side / 2, 0, info.width - side))
    y = int(np.clip(cy - side / 2, 0, info.height - side))
    raise InputError(
        f"{job.video}: the face is too small to track (about {face:.0f} px wide in "
        f"{info.width}x{info.height} frames; it needs to fill roughly a tenth of the "
        f"frame's width): film closer, or crop the video around the face, e.g. "
        f"`ffmpeg -i {job.video} -vf crop={side}:{side}:{x}:{y} -c:a copy cropped.mp4`"
    )


def _geometry(
    job: Job,
    mesh: np.ndarray,
    valid: np.ndarray,
    frame_size: tuple[int, int],
    progress: ProgressFn,
) -> HeadTrack:
    """The geometry stage (cached): calibration and 3D head track on the original frames."""
    config = job.config

    def compute() -> dict[str, np.ndarray]:
        progress("geometry", 0, 1)
        head = geometry_stage(
            mesh,
            valid,
            frame_size=frame_size,
            layout=load_layout(),
            camera=config.camera,
            geometry=config.geometry,
        )
        return head_to_arrays(head)

    arrays, _ = job.cached("geometry", compute)
    progress("geometry", 1, 1)
    return head_from_arrays(arrays)


def _reuse(job: Job, timings: dict[str, float], *, manifest: bool) -> PrepResult:
    """The result of a finished dataset prepped with the same inputs and config."""
    final = job.final
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
        job.source_sha,
        sha256_file(final),
        reused=True,
        timings=timings,
    )
    if manifest:
        update_manifest(final.parent, result)
    return result
