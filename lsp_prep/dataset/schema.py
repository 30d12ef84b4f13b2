"""The dataset contract: one HDF5 file per clip, described here and nowhere else.

Every field names its shape in symbols (``N`` video frames, ``M = 2N`` mel frames,
``S`` audio samples; ``P``, ``F``, ``T``, ``V`` are free sizes that must agree wherever
they appear), its dtype, its units and its coordinate frame. :func:`validate`
checks a file against this table; readers refuse a ``schema_version`` they do not know.
``docs/dataset.md`` is the annotated version of this table (a test keeps them in step).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import h5py
import numpy as np

from lsp_prep.constants import MELS_PER_FRAME, N_LSP_POINTS, N_MELS, N_MESH_POINTS
from lsp_prep.errors import SchemaError

SCHEMA_VERSION = 5
"""Bumped whenever a field changes meaning, shape or units. 2: camera, track, shoulders,
candidates and split added. 3: head poses fitted to texture features (track/n_features).
4: a refined pose only where it explains the landmarks (track/source, track/misfit)."""

PARTIAL_SUFFIX = ".partial"


@dataclass(frozen=True)
class Field:
    """One dataset in the file."""

    name: str
    shape: tuple[str | int, ...]
    dtype: str
    """numpy kind: 'f' float, 'u' unsigned, 'i' int, 'b' bool, 'O' variable-length bytes."""
    units: str
    frame: str
    doc: str


@dataclass(frozen=True)
class Attr:
    """One root attribute."""

    name: str
    doc: str


ROOT_ATTRS: tuple[Attr, ...] = (
    Attr("schema_version", "int; this table's version"),
    Attr("fps", "int; video frame rate of every per-frame array (60)"),
    Attr("sample_rate", "int; audio sample rate in Hz (16000)"),
    Attr("image_size", "int; side of the square face crop in pixels (512)"),
    Attr("hop_length", "float; mel hop in audio samples (sample_rate / 120)"),
    Attr("n_frames", "int; N"),
    Attr("source_path", "str; the video as given to prep"),
    Attr("source_sha256", "str; SHA-256 of the video file's bytes"),
    Attr("audio_sha256", "str; SHA-256 of the audio file given with --audio, else ''"),
    Attr("lsp_version", "str; toolkit version that wrote the file"),
    Attr("config", "str; JSON of the resolved configuration of every stage"),
    Attr("source_info", "str; JSON of the probed source (size, fps, codecs, rotation)"),
)

FIELDS: tuple[Field, ...] = (
    Field(
        "frames",
        ("N",),
        "O",
        "JPEG bytes",
        "crop",
        "RGB face crop of every frame, image_size x image_size, JPEG-encoded",
    ),
    Field(
        "crop/boxes",
        ("N", 4),
        "f",
        "pixels",
        "original",
        "square crop box x0, y0, x1, y1 in original-video pixels; "
        "crop = (p - (x0, y0)) * image_size / (x1 - x0)",
    ),
    Field(
        "audio/waveform",
        ("S",),
        "f",
        "amplitude [-1, 1]",
        "video clock",
        "mono speech; sample 0 starts video frame 0; S = N * sample_rate / fps",
    ),
    Field(
        "audio/mel",
        ("M", N_MELS),
        "f",
        "natural log of mel power",
        "video clock",
        "log-mel; row k is centred at k / (fps * 2) s, so frame i owns rows 2i, 2i+1",
    ),
    Field(
        "landmarks/mesh",
        ("N", N_MESH_POINTS, 3),
        "f",
        "pixels",
        "crop",
        "MediaPipe Face Mesh (refined, 478): x, y in crop pixels, z relative depth in the "
        "same pixel scale (MediaPipe's convention); NaN where not valid",
    ),
    Field(
        "landmarks/lsp73",
        ("N", N_LSP_POINTS, 2),
        "f",
        "pixels",
        "crop",
        "LSP 73-point layout (manifests/lsp73.toml) in crop pixels; NaN where not valid",
    ),
    Field(
        "landmarks/valid",
        ("N",),
        "b",
        "bool",
        "-",
        "landmarks usable: detected and plausible, or interpolated across a short gap",
    ),
    Field(
        "landmarks/detected",
        ("N",),
        "b",
        "bool",
        "-",
        "the tracker returned a plausible mesh on this frame itself",
    ),
    Field(
        "landmarks/interpolated",
        ("N",),
        "b",
        "bool",
        "-",
        "filled by linear interpolation across a gap of at most max_gap_s",
    ),
    Field(
        "landmarks/confidence",
        ("N",),
        "f",
        "[0, 1]",
        "-",
        "shape plausibility of the detected mesh (Procrustes residual to the clip's "
        "median shape); 0 where nothing was detected",
    ),
    Field(
        "camera/intrinsics",
        ("N", 3, 3),
        "f",
        "pixels",
        "crop",
        "pinhole K of each frame's crop (the focal length is the same for all frames; the "
        "principal point follows the crop box)",
    ),
    Field(
        "camera/intrinsics_original",
        (3, 3),
        "f",
        "pixels",
        "original",
        "pinhole K of the original video; principal point at the image centre",
    ),
    Field(
        "camera/focal_search",
        ("F", 2),
        "f",
        "pixels, pixels",
        "original",
        "every focal length the calibration tried and its RMS reprojection error",
    ),
    Field(
        "track/rotation",
        ("N", 3),
        "f",
        "radians (Rodrigues)",
        "object -> camera",
        "head rotation R of X_cam = R X_obj + T; "
        "lsp_prep.camera.rotvec_to_euler_xyz converts to pitch/yaw/roll",
    ),
    Field(
        "track/translation",
        ("N", 3),
        "f",
        "cm (nominal)",
        "camera",
        "head translation T; the unit is set by the mean shape's 9 cm outer-eye distance",
    ),
    Field(
        "track/points3d",
        ("N", N_LSP_POINTS, 3),
        "f",
        "cm (nominal)",
        "object",
        "per-frame LSP-73 landmarks in object coordinates (rigid motion removed)",
    ),
    Field(
        "track/mean_shape",
        (N_LSP_POINTS, 3),
        "f",
        "cm (nominal)",
        "object",
        "the person's mean shape (mean of track/points3d over valid frames)",
    ),
    Field(
        "track/mouth_displacement",
        ("N", 25, 3),
        "f",
        "cm (nominal)",
        "object",
        "dv_m, the mouth model's targets: mouth-related points (jaw 4-10, lips 46-63) of "
        "track/points3d minus their mean, less what head pose predicts of them "
        "(geometry.mouth_pose_terms); NaN where not valid",
    ),
    Field(
        "track/reprojection_error",
        ("N",),
        "f",
        "pixels",
        "original",
        "RMS reprojection error of the frame's rigid fit: of its texture features where "
        "track/n_features > 0, else of the stable landmarks; NaN if not valid",
    ),
    Field(
        "track/n_features",
        ("N",),
        "i",
        "count",
        "-",
        "upper-face texture features the frame's pose was fitted to; 0 where the pose is "
        "the landmark pose, or the landmark pose corrected by the feature poses around it",
    ),
    Field(
        "track/source",
        ("N",),
        "i",
        "enum",
        "-",
        "where the frame's pose comes from: 0 the landmarks alone, 1 texture-refined "
        "(measured, or between measured frames of an accepted span), 2 a blend of the two "
        "at the edge of such a span",
    ),
    Field(
        "track/misfit",
        ("N",),
        "f",
        "pixels",
        "crop",
        "rigid misfit: RMS distance over the stable landmarks between "
        "K (R track/mean_shape + T) and landmarks/lsp73; NaN if not valid",
    ),
    Field(
        "shoulders/points2d",
        ("N", "P", 2),
        "f",
        "pixels",
        "crop",
        "upper-body feature points tracked by pyramidal Lucas-Kanade where valid; elsewhere "
        "the position the valid points' motion predicts (may lie outside the crop)",
    ),
    Field(
        "shoulders/valid",
        ("N", "P"),
        "b",
        "bool",
        "-",
        "the point was tracked on this frame and passed every check (forward-backward, "
        "appearance, inside the image)",
    ),
    Field(
        "shoulders/billboard3d",
        ("P", 3),
        "f",
        "cm (nominal)",
        "camera",
        "the points lifted to a plane at the mean face depth (the paper's billboard); NaN for "
        "a point never tracked",
    ),
    Field(
        "candidates/images",
        (4, "I", "I", 3),
        "u",
        "RGB 0-255",
        "crop",
        "the four candidate images given to the renderer",
    ),
    Field(
        "candidates/frame_index",
        (4,),
        "i",
        "frame",
        "-",
        "frames the candidates come from: 100th smallest / largest mouth area, then two "
        "by regular samples of pitch and yaw",
    ),
    Field("split/train", ("T",), "i", "frame", "-", "training frames (one contiguous range)"),
    Field(
        "split/val",
        ("V",),
        "i",
        "frame",
        "-",
        "validation frames: the clip's last 20 %, after a gap that belongs to neither",
    ),
)

FIELD_BY_NAME = {f.name: f for f in FIELDS}


def check_version(f: h5py.File, path: Path | str) -> None:
    """Raise SchemaError unless ``f`` was written with this :data:`SCHEMA_VERSION`."""
    version = f.attrs.get("schema_version")
    if version is None:
        raise SchemaError(f"{path}: not an LSP dataset (no schema_version attribute)")
    if int(version) != SCHEMA_VERSION:
        raise SchemaError(
            f"{path}: dataset schema version {int(version)}, this toolkit reads version "
            f"{SCHEMA_VERSION}: re-run `lsp prep` on the source video (add --force)"
        )


def _resolve(
    shape: tuple[str | int, ...], actual: tuple[int, ...], dims: dict[str, int]
) -> tuple[int, ...]:
    """The expected shape; free symbols take their size from the first field that has one."""
    out = []
    for k, sym in enumerate(shape):
        if isinstance(sym, int):
            out.append(sym)
        else:
            if sym not in dims and k < len(actual):
                dims[sym] = actual[k]
            out.append(dims.get(sym, -1))
    return tuple(out)


def validate(path: Path | str) -> dict[str, int]:
    """Check a dataset file against the schema; return its dimensions ``{"N", "M", "S"}``.

    Raises SchemaError listing every problem found (missing attributes or fields, wrong
    shapes or dtypes, inconsistent lengths, values out of range).
    """
    path = Path(path)
    if not path.is_file():
        raise SchemaError(f"{path}: no such dataset file")
    problems: list[str] = []
    try:
        f = h5py.File(path, "r")
    except OSError as exc:
        raise SchemaError(f"{path}: not an HDF5 file ({exc})") from None
    with f:
        check_version(f, path)
        for a in ROOT_ATTRS:
            if a.name not in f.attrs:
                problems.append(f"missing root attribute {a.name!r}")
        fps, sr = int(f.attrs.get("fps", 0)), int(f.attrs.get("sample_rate", 0))
        n = int(f["frames"].shape[0]) if "frames" in f else int(f.attrs.get("n_frames", 0))
        dims = {"N": n, "M": n * MELS_PER_FRAME, "S": round(n * sr / fps) if fps else 0}
        if n != int(f.attrs.get("n_frames", -1)):
            problems.append(f"attribute n_frames={f.attrs.get('n_frames')} but frames has {n}")
        for fld in FIELDS:
            if fld.name not in f:
                problems.append(f"missing field {fld.name!r}")
                continue
            ds = f[fld.name]
            want = _resolve(fld.shape, ds.shape, dims)
            if ds.shape != want:
                problems.append(f"{fld.name}: shape {ds.shape}, expected {want} {fld.shape}")
            kind = "O" if h5py.check_vlen_dtype(ds.dtype) is not None else ds.dtype.kind
            if kind != fld.dtype:
                problems.append(f"{fld.name}: dtype kind {kind!r}, expected {fld.dtype!r}")
        if not problems:
            problems += _check_values(f)
    if problems:
        raise SchemaError(f"{path}: " + "; ".join(problems))
    return dims


def _check_values(f: h5py.File) -> list[str]:
    out: list[str] = []
    valid = f["landmarks/valid"][:]
    if not valid.any():
        out.append("landmarks/valid is False everywhere")
    lsp = f["landmarks/lsp73"][:]
    if not np.isfinite(lsp[valid]).all():
        out.append("landmarks/lsp73 has non-finite values on valid frames")
    boxes = f["crop/boxes"][:]
    if not np.isfinite(boxes).all() or not np.allclose(
        boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1], rtol=1e-6
    ):
        out.append("crop/boxes are not finite squares")
    if not np.isfinite(f["audio/mel"][:]).all():
        out.append("audio/mel has non-finite values")
    det, interp = f["landmarks/detected"][:], f["landmarks/interpolated"][:]
    if (valid != (det | interp)).any():
        out.append("landmarks/valid != detected | interpolated")
    return out
