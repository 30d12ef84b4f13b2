"""The renderer's training frames, as a loader worker reads them from a dataset.

One training sample is one frame of a prepped clip (``lsp_prep.dataset.schema``): its JPEG
decoded to RGB, and its conditional feature map drawn from the tracked 3D landmarks projected
with the frame's camera plus the tracked shoulder points (:mod:`lsp_prep.featuremap`, the
same drawing ``animate`` uses). Both at ``image_size`` S <= the dataset's crop side, shrunk with
area averaging, with pixel centres kept: ``x_S = (x + 0.5) * S / side - 0.5``.

A sample is named by a :class:`SampleKey` (frame and augmentation), drawn in the main process
(:mod:`lsp_models.train.render_data`); here the workers only read, decode, draw and warp.
The geometric augmentation is one similarity (zoom about the crop centre, in-plane
rotation, shift) applied to the feature map's points before drawing (lines stay exact and
sharp) and to the real frame with ``cv2.warpAffine`` (bilinear, reflected border) at the
crop's full resolution, before the area shrink to S: an augmented frame then looks like an
unaugmented one of a moved face, not a blurrier one (warping after the shrink costs
~8 dB PSNR at 256^2 on a sharp image, warping straight to S aliases at 128^2). The four
candidate images are appearance references and are never warped.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any, NamedTuple

import cv2
import numpy as np
import torch
from torch.utils.data import Dataset

from lsp_prep.dataset.reader import SPLITS, DatasetReader
from lsp_prep.errors import InputError
from lsp_prep.featuremap import draw_feature_map, face_points2d
from lsp_prep.layout import Layout, load_layout

MIN_IMAGE_SIZE = 32
"""Smallest ``image_size`` the loader produces (a face below 32 px has nothing to learn)."""


class SampleKey(NamedTuple):
    """One sample of a batch: the frame and its augmentation (identity when not augmented).

    Built in the main process by :func:`global_batch` and sent to a worker as is.
    """

    frame: int
    """Frame index in the dataset."""
    zoom: float = 1.0
    """Scale about the crop centre."""
    angle_deg: float = 0.0
    """Rotation in degrees, clockwise on screen (image y points down)."""
    shift_x: float = 0.0
    """Shift right, fraction of the image side."""
    shift_y: float = 0.0
    """Shift down, fraction of the image side."""
    gain: float = 1.0
    """Photometric gain (:func:`photometric`)."""
    bias: float = 0.0
    """Photometric offset (:func:`photometric`)."""

    @property
    def augmented(self) -> bool:
        return (self.zoom, self.angle_deg, self.shift_x, self.shift_y) != (1.0, 0.0, 0.0, 0.0)


def similarity(key: SampleKey, side: int) -> np.ndarray:
    """The key's geometric augmentation as a (3, 3) matrix on pixels of a side x side image.

    ``p' = zoom * R(angle) (p - c) + c + side * (shift_x, shift_y)`` with ``c`` the image
    centre ``((side - 1) / 2, (side - 1) / 2)``. A point ``p`` of the frame lands on ``p'``
    (``cv2.warpAffine`` takes the top two rows as they are).
    """
    a = math.radians(key.angle_deg)
    cos, sin = key.zoom * math.cos(a), key.zoom * math.sin(a)
    lin = np.array([[cos, -sin], [sin, cos]])
    c = np.full(2, (side - 1) / 2.0)
    m = np.eye(3)
    m[:2, :2] = lin
    m[:2, 2] = c - lin @ c + side * np.array([key.shift_x, key.shift_y])
    return m


def to_size(points: np.ndarray, side: int, size: int) -> np.ndarray:
    """Pixels of a side x side image (..., 2) to pixels of it shrunk to size x size."""
    k = size / side
    return (np.asarray(points, np.float64) + 0.5) * k - 0.5


def check_image_size(image_size: int, side: int, what: str) -> None:
    """Raise InputError unless ``MIN_IMAGE_SIZE <= image_size <= side`` (an integer)."""
    if isinstance(image_size, bool) or not isinstance(image_size, int | np.integer):
        raise InputError(f"image_size must be an integer, got {image_size!r}")
    if not MIN_IMAGE_SIZE <= image_size <= side:
        raise InputError(
            f"image_size {image_size} is not usable with {what}: it must be between "
            f"{MIN_IMAGE_SIZE} and the dataset's crop side {side} (frames are only shrunk, "
            "never enlarged)"
        )


def training_frames(path: Path, split: str = "train") -> np.ndarray:
    """Frame indices (int64, ascending) of ``split`` ("train" or "val") that the renderer can
    learn from: landmarks valid (``landmarks/valid``) and the 3D track and camera finite."""
    if split not in SPLITS:
        raise InputError(f"split must be one of {', '.join(SPLITS)}, got {split!r}")
    with DatasetReader(path) as ds:
        idx = ds.split(split)
        ok = np.asarray(ds.read("landmarks/valid"), bool).copy()
        for name in ("track/points3d", "track/rotation", "track/translation", "camera/intrinsics"):
            a = ds.read(name)
            ok &= np.isfinite(a.reshape(len(a), -1)).all(axis=1)
    return np.sort(idx[ok[idx]])


def load_candidates(path: Path, image_size: int) -> np.ndarray:
    """The dataset's four candidate images (4, S, S, 3) uint8 RGB, area-shrunk when S is below
    the crop side (pixel centres kept, as the frames)."""
    with DatasetReader(path) as ds:
        check_image_size(image_size, ds.crop_side, str(path))
        images = np.asarray(ds.read("candidates/images"), np.uint8)
    if image_size == images.shape[1]:
        return images
    size = (image_size, image_size)
    return np.stack([cv2.resize(im, size, interpolation=cv2.INTER_AREA) for im in images])


def _batch_tensor(shape: tuple[int, ...]) -> torch.Tensor:
    """An uninitialised uint8 tensor; in a DataLoader worker, in shared memory already.

    A worker's batch travels to the main process through shared memory. Allocated
    privately, pickling it copies every byte into fresh shared pages (11 ms per 8 MB batch
    on the 2-core reference machine); decoded and drawn straight into shared memory it
    costs only the kernel's allocation of those pages (6 ms; tmpfs pages, no huge pages).
    This is how ``torch.utils.data.default_collate`` allocates its output in workers.
    """
    if torch.utils.data.get_worker_info() is None:
        return torch.empty(shape, dtype=torch.uint8)
    elem = torch.empty(0, dtype=torch.uint8)
    try:
        storage = elem._typed_storage()._new_shared(math.prod(shape), device=elem.device)
    except (AttributeError, TypeError):  # private API gone: correct, one copy slower
        return torch.empty(shape, dtype=torch.uint8)
    return elem.new(storage).resize_(shape)


class RendererFrames(Dataset):
    """Map-style dataset over the frames of one clip, keyed by :class:`SampleKey`.

    The per-frame geometry (projected face points, shoulder points) is read once here; the
    HDF5 file is opened lazily in whichever process reads frames (handles never cross a
    fork). ``dataset[keys]`` for a list of keys returns a whole batch (see
    :meth:`__getitems__`).
    """

    def __init__(self, path: Path, *, image_size: int, layout: Layout | None = None) -> None:
        self.path = Path(path)
        with DatasetReader(self.path) as ds:
            self.side = ds.crop_side
            check_image_size(image_size, self.side, str(self.path))
            pts = ds.read("track/points3d")
            rot, trans = ds.read("track/rotation"), ds.read("track/translation")
            k = ds.read("camera/intrinsics")
            self.shoulders = ds.read("shoulders/points2d", np.float64)  # (N, P, 2)
        self.n_frames = len(pts)
        self.image_size = int(image_size)
        self.layout = layout or load_layout()
        finite = np.isfinite(pts).all(axis=(1, 2)) & np.isfinite(rot).all(axis=1)
        finite &= np.isfinite(trans).all(axis=1) & np.isfinite(k).all(axis=(1, 2))
        self.face2d = np.full((self.n_frames, pts.shape[1], 2), np.nan)  # (N, 73, 2) crop px
        if finite.any():
            self.face2d[finite] = face_points2d(pts[finite], rot[finite], trans[finite], k[finite])
        self._reader: DatasetReader | None = None
        self._pid = -1

    def __len__(self) -> int:
        return self.n_frames

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state["_reader"], state["_pid"] = None, -1
        return state

    def _jpegs(self, frames: np.ndarray) -> list[np.ndarray]:
        if self._reader is None or self._pid != os.getpid():
            # a handle inherited through fork is dropped, never used or closed here
            self._reader = DatasetReader(self.path)
            self._pid = os.getpid()
        return self._reader.jpegs(frames)

    def close(self) -> None:
        """Close this process's handle on the file (reopened on the next read)."""
        if self._reader is not None and self._pid == os.getpid():
            self._reader.close()
        self._reader, self._pid = None, -1

    def feature_map(self, key: SampleKey) -> np.ndarray:
        """The key's feature map (S, S) uint8: its frame's points, moved by the key's
        similarity, drawn at S."""
        face, sh = self.face2d[key.frame], self.shoulders[key.frame]
        if key.augmented:
            m = similarity(key, self.side)
            face = face @ m[:2, :2].T + m[:2, 2]
            sh = sh @ m[:2, :2].T + m[:2, 2]
        s = self.image_size
        face, sh = to_size(face, self.side, s), to_size(sh, self.side, s)
        return draw_feature_map(face, sh, size=s, layout=self.layout)

    def real_into(self, jpeg: np.ndarray, key: SampleKey, out: np.ndarray) -> None:
        """Decode ``jpeg`` to RGB, warp by the key's similarity, area-shrink into ``out``
        (S, S, 3) uint8."""
        img = cv2.imdecode(jpeg, cv2.IMREAD_COLOR_RGB)
        if img is None or img.shape != (self.side, self.side, 3):
            got = None if img is None else img.shape
            raise InputError(
                f"{self.path}: frame {key.frame} does not decode to a {self.side}x{self.side} "
                f"RGB image (got {got})"
            )
        s = self.image_size
        if key.augmented:
            m = similarity(key, self.side)[:2]
            dst = out if s == self.side else None
            img = cv2.warpAffine(
                img,
                m,
                (self.side, self.side),
                dst=dst,
                flags=cv2.INTER_LINEAR,
                borderMode=cv2.BORDER_REFLECT_101,
            )
            if s == self.side:
                return
        if s == self.side:
            np.copyto(out, img)
        else:
            cv2.resize(img, (s, s), dst=out, interpolation=cv2.INTER_AREA)

    def __getitems__(self, keys: Sequence[SampleKey]) -> dict[str, torch.Tensor]:
        """A batch: ``feature_map`` (b, S, S) uint8, ``real`` (b, S, S, 3) uint8 RGB,
        ``gain``, ``bias`` (b,) float32, ``frame`` (b,) int64."""
        b, s = len(keys), self.image_size
        frames = np.array([k.frame for k in keys], np.int64)
        fmap, real = _batch_tensor((b, s, s)), _batch_tensor((b, s, s, 3))
        fmap_np, real_np = fmap.numpy(), real.numpy()
        for i, (key, jpeg) in enumerate(zip(keys, self._jpegs(frames), strict=True)):
            self.real_into(jpeg, key, real_np[i])
            fmap_np[i] = self.feature_map(key)
        return {
            "feature_map": fmap,
            "real": real,
            "gain": torch.tensor([k.gain for k in keys], dtype=torch.float32),
            "bias": torch.tensor([k.bias for k in keys], dtype=torch.float32),
            "frame": torch.from_numpy(frames),
        }

    def __getitem__(self, key: SampleKey) -> dict[str, torch.Tensor]:
        """One sample: the batch of :meth:`__getitems__` for ``[key]`` without its batch axis."""
        return {k: v[0] for k, v in self.__getitems__([key]).items()}
