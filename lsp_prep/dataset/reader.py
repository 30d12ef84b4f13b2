"""The one dataset reader: open a prepped clip, check its schema version, read typed arrays.

Every consumer (training's person data, the renderer's frame loader, animation, eval) reads
through :class:`DatasetReader`, so a file that is not HDF5, is truncated, was written by
another schema version or lacks a field fails the same way everywhere: one line naming the
file and the fix. Field names, shapes and units are those of :mod:`lsp_prep.dataset.schema`.
No torch here.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from pathlib import Path
from types import TracebackType
from typing import Any

import h5py
import numpy as np

from lsp_prep.dataset import schema
from lsp_prep.dataset.schema import check_version
from lsp_prep.errors import InputError, SchemaError

SPLITS = ("train", "val")


def _damaged(path: Path, exc: BaseException) -> InputError:
    first = (str(exc).splitlines() or [type(exc).__name__])[0]
    return InputError(
        f"{path}: not a readable HDF5 dataset, damaged or truncated ({first}): "
        "re-run `lsp prep` on the source video (add --force)"
    )


class DatasetReader:
    """An open dataset, read only (a context manager; :meth:`close` when done).

    Opening checks the schema version (SchemaError with the fix) and refuses a missing file
    (SchemaError, as :func:`open_dataset`), or one that is not HDF5
    or is damaged (InputError); a read that hits a truncated part raises the same InputError.
    """

    def __init__(self, path: Path | str) -> None:
        self.path = Path(path)
        if not self.path.is_file():
            raise SchemaError(f"{self.path}: no such dataset file")
        try:
            self._file = h5py.File(self.path, "r")
        except OSError as exc:
            raise _damaged(self.path, exc) from None
        try:
            check_version(self._file, self.path)
        except SchemaError:
            self._file.close()
            raise

    # -- lifetime

    def close(self) -> None:
        self._file.close()

    def __enter__(self) -> DatasetReader:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    # -- fields

    def has(self, name: str) -> bool:
        """Whether field ``name`` (e.g. ``"track/points3d"``) is in the file."""
        return name in self._file

    def require(self, fields: Mapping[str, str] | Iterable[str]) -> None:
        """SchemaError for the first of ``fields`` missing from the file. A mapping names
        the prep stage that writes each field (said in the message)."""
        for name in fields:
            if name in self._file:
                continue
            if isinstance(fields, Mapping):
                raise SchemaError(
                    f"{self.path}: field {name!r} is missing (written by prep's {fields[name]} "
                    "stage): re-run `lsp prep` on the source video"
                )
            raise SchemaError(
                f"{self.path}: field {name!r} is missing: re-run `lsp prep` (--force)"
            )

    def read(self, name: str, dtype: Any = None) -> np.ndarray:
        """The whole field ``name`` as an array (cast to ``dtype`` when given)."""
        try:
            a = self._file[name][:]
        except OSError as exc:
            raise _damaged(self.path, exc) from None
        return a if dtype is None else a.astype(dtype)

    def read_rows(self, name: str, rows: np.ndarray) -> np.ndarray:
        """Rows ``rows`` (ascending, non-empty) of field ``name``: one contiguous read from the
        first to the last row, then the rows picked from it."""
        rows = np.asarray(rows, np.int64)
        try:
            block = self._file[name][int(rows[0]) : int(rows[-1]) + 1]
        except OSError as exc:
            raise _damaged(self.path, exc) from None
        return block[rows - rows[0]]

    def shape(self, name: str) -> tuple[int, ...]:
        """The stored shape of field ``name``, without reading it."""
        return tuple(self._file[name].shape)

    def split(self, split: str) -> np.ndarray:
        """Frame indices (int64) of ``split`` ("train" or "val") as stored."""
        if split not in SPLITS:
            raise InputError(f"split must be one of {', '.join(SPLITS)}, got {split!r}")
        return np.asarray(self.read(f"split/{split}"), np.int64)

    def jpegs(self, frames: np.ndarray) -> list[np.ndarray]:
        """The JPEG bytes (uint8 arrays) of ``frames`` (any order, repeats allowed), read in
        one call with ascending unique indices (h5py needs them so)."""
        uniq, inverse = np.unique(frames, return_inverse=True)
        try:
            data = self._file["frames"][uniq]
        except OSError as exc:
            raise _damaged(self.path, exc) from None
        return [data[j] for j in inverse]

    # -- attributes

    @property
    def crop_side(self) -> int:
        """Side in pixels of the stored square face crops (root attribute ``image_size``)."""
        if "image_size" in self._file.attrs:
            return int(self._file.attrs["image_size"])
        return int(self._file["candidates/images"].shape[1])

    def config(self) -> dict[str, Any]:
        """The resolved configuration of every prep stage stored with the dataset, under
        today's section names."""
        return read_config(self._file)

    def attrs(self, group: str = "/") -> dict[str, Any]:
        """The attributes of ``group`` (the root by default) as a dict; empty when the group
        is absent, so optional attributes (e.g. the ``audio`` group's sync) read as missing."""
        if group != "/" and group not in self._file:
            return {}
        return dict(self._file[group].attrs)

    def source_info(self) -> dict[str, Any]:
        """The probed source video (width, height, fps, codecs, rotation)."""
        return dict(json.loads(self._file.attrs["source_info"]))


LEGACY_SECTIONS = {"landmarks": "track", "track": "geometry"}
"""Config sections renamed after datasets of this schema version were written: old name ->
new name (the stage "track" read ``landmarks``, the stage "geometry" read ``track``)."""


def read_config(f: h5py.File) -> dict:
    """The resolved configuration stored with a dataset, with sections under today's names
    (files that store ``landmarks`` use the names of :data:`LEGACY_SECTIONS`)."""
    config = json.loads(f.attrs["config"])
    if "landmarks" in config:
        config = {LEGACY_SECTIONS.get(k, k): v for k, v in config.items()}
    return config


def open_dataset(path: Path | str) -> h5py.File:
    """Open a dataset for reading after checking its schema version."""
    path = Path(path)
    if not path.is_file():
        raise SchemaError(f"{path}: no such dataset file")
    f = h5py.File(path, "r")
    try:
        schema.check_version(f, path)
    except SchemaError:
        f.close()
        raise
    return f
