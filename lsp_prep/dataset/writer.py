"""The one writer of the dataset contract (:mod:`lsp_prep.dataset.schema`).

Every field of a dataset file is written here, with its storage (chunks, compression)
decided here. A file is built under a temporary name and renamed only once it is complete
and :func:`~lsp_prep.dataset.schema.validate` accepts it, so a crash never leaves a file
that looks finished.

Two ways in:

* :func:`write_dataset`: a complete dataset from numpy arrays in one call (tests build
  small synthetic datasets with it, without running prep).
* prep's stages, which stream the frames into the partial file first
  (:func:`create_frames`, :func:`write_frame_batch`), then add every other field
  (:func:`write_fields`) and :func:`finish`.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import cv2
import h5py
import numpy as np

from lsp_prep.dataset import schema

GZIP: dict[str, Any] = {"compression": "gzip", "compression_opts": 4}
"""Compression of the larger per-frame arrays."""

COMPRESSED = frozenset(
    {
        "track/points3d",
        "track/mouth_displacement",
        "candidates/images",
        "audio/waveform",
        "landmarks/lsp73",
    }
)
"""Fields stored gzip-compressed with HDF5's default chunks."""

FRAMES_CHUNK = 64
"""Frames per HDF5 chunk of ``frames`` (and per write batch)."""

GroupAttrs = Mapping[str, Mapping[str, Any]]
"""Attributes of groups: group name -> {attribute: value}."""


def storage(name: str, shape: tuple[int, ...]) -> dict[str, Any]:
    """HDF5 creation options of field ``name`` holding an array of ``shape``."""
    if name == "audio/mel":
        return {"chunks": (min(shape[0], 1200), shape[1]), **GZIP}
    if name == "landmarks/mesh":
        return {"chunks": (min(shape[0], 64), *shape[1:]), **GZIP}
    return dict(GZIP) if name in COMPRESSED else {}


def create_frames(f: h5py.File, n: int) -> h5py.Dataset:
    """The ``frames`` field of ``n`` JPEG-encoded frames, to fill batch by batch."""
    chunks = (max(1, min(n, FRAMES_CHUNK)),)  # HDF5 refuses chunks larger than the data
    return f.create_dataset("frames", shape=(n,), dtype=jpeg_dtype(), chunks=chunks)


def write_frame_batch(frames: h5py.Dataset, start: int, jpegs: Sequence[np.ndarray]) -> int:
    """Store JPEG byte arrays (1-D uint8 each) from frame ``start`` on; returns the next
    frame index."""
    if len({len(j) for j in jpegs}) == 1:  # h5py would read equal lengths as a 2-D array
        for i, jpeg in enumerate(jpegs):
            frames[start + i] = jpeg
        return start + len(jpegs)
    batch = np.empty(len(jpegs), dtype=object)
    batch[:] = list(jpegs)
    frames[start : start + len(jpegs)] = batch
    return start + len(jpegs)


def encode_jpeg(image_rgb: np.ndarray, *, quality: int) -> np.ndarray:
    """One RGB frame (H, W, 3) uint8 -> JPEG bytes (1-D uint8) as stored in ``frames``."""
    ok, buf = cv2.imencode(
        ".jpg", cv2.cvtColor(image_rgb, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, quality]
    )
    if not ok:
        raise RuntimeError("JPEG encoding failed")
    return buf.ravel()


def write_fields(
    f: h5py.File,
    fields: Mapping[str, np.ndarray],
    *,
    attrs: Mapping[str, Any] | None = None,
    group_attrs: GroupAttrs | None = None,
) -> None:
    """Write ``fields`` (schema name -> array, in the dtype to store) into an open file,
    replacing any of them already there, then the groups' and the root's attributes."""
    for name, data in fields.items():
        if name in f:
            del f[name]
        data = np.asarray(data)
        f.create_dataset(name, data=data, **storage(name, data.shape))
    for group, values in (group_attrs or {}).items():
        f[group].attrs.update(dict(values))
    f.attrs.update(dict(attrs or {}))


def finish(partial: Path, final: Path) -> None:
    """Validate the complete file at ``partial`` and rename it to ``final``."""
    schema.validate(partial)
    os.replace(partial, final)


def write_dataset(
    path: Path | str,
    *,
    frames: np.ndarray | Sequence[np.ndarray],
    fields: Mapping[str, np.ndarray],
    attrs: Mapping[str, Any],
    group_attrs: GroupAttrs | None = None,
    jpeg_quality: int = 92,
) -> Path:
    """Write a complete, validated dataset to ``path`` from numpy arrays.

    ``frames`` is either (N, H, W, 3) uint8 RGB images (encoded at ``jpeg_quality``) or N
    JPEG byte arrays; ``fields`` every other field of the schema by name; ``attrs`` the
    root attributes (``schema_version`` is added when missing). The file is written under
    a temporary name and renamed when :func:`~lsp_prep.dataset.schema.validate` accepts
    it; a SchemaError lists what is missing or wrong and leaves nothing at ``path``.
    """
    path = Path(path)
    if isinstance(frames, np.ndarray) and frames.ndim == 4:
        jpegs = [encode_jpeg(im, quality=jpeg_quality) for im in frames]
    else:
        jpegs = [np.asarray(j, np.uint8).ravel() for j in frames]
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    try:
        with h5py.File(tmp, "w") as f:
            ds = create_frames(f, len(jpegs))
            for start in range(0, len(jpegs), FRAMES_CHUNK):
                write_frame_batch(ds, start, jpegs[start : start + FRAMES_CHUNK])
            write_fields(
                f,
                fields,
                attrs={"schema_version": schema.SCHEMA_VERSION, **attrs},
                group_attrs=group_attrs,
            )
        finish(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


def partial_path(path: Path) -> Path:
    """Where a dataset is built before it is complete."""
    return path.with_name(path.name + schema.PARTIAL_SUFFIX)


def jpeg_dtype() -> np.dtype:
    return h5py.vlen_dtype(np.dtype("uint8"))


def remove_stale_temporaries(
    path: Path, *, name: str | None = None, suffix: str = ""
) -> list[Path]:
    """Remove what writers of ``path`` killed by SIGKILL (or a power cut) left beside it:
    temporary siblings ``.NAME.tmpPID{suffix}`` (``name`` defaults to ``path``'s name)
    whose process no longer runs. Any other signal lets a writer remove its own. Returns
    the paths removed."""
    path = Path(path)
    head = f".{name if name is not None else path.name}.tmp"
    removed = []
    for tmp in path.parent.glob(f"{head}*{suffix}"):
        pid = tmp.name[len(head) : len(tmp.name) - len(suffix)]
        if pid.isdigit() and int(pid) != os.getpid() and not _alive(int(pid)):
            tmp.unlink(missing_ok=True)
            removed.append(tmp)
    return removed


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # another user's process
    return True


@contextmanager
def atomic_output(path: Path) -> Iterator[Path]:
    """Yield a temporary sibling path; rename it to ``path`` only if the block succeeds.
    Temporaries of killed earlier writers of ``path`` are removed first."""
    remove_stale_temporaries(path)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()
