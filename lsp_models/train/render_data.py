"""The renderer's training data: (feature map, real frame) batches read from a dataset.

One training sample is one frame of a prepped clip (``lsp_prep.dataset.schema``): its JPEG
decoded to RGB, and its conditional feature map drawn from the tracked 3D landmarks projected
with the frame's camera plus the tracked shoulder points (:mod:`lsp_prep.featuremap`, the
same drawing ``animate`` uses). Both at ``image_size`` S <= the dataset's crop side, shrunk with
area averaging, with pixel centres kept: ``x_S = (x + 0.5) * S / side - 0.5``.

Randomness lives in the main process only. The global batch of step ``s`` -- which frames,
and each sample's augmentation -- is drawn from ``np.random.default_rng([seed, s])``
(:func:`global_batch`), so it does not depend on the number of workers, on where a run was
resumed, or on how many processes share the batch under DistributedDataParallel (rank
``r`` of ``w`` takes rows ``[r * b, (r + 1) * b)``, ``b = batch_size // w``). Workers only
read, decode, draw and warp.

Augmentation, one draw per sample:

- *geometric*, in the workers: one similarity (zoom about the crop centre, in-plane
  rotation, shift) applied to the feature map's points before drawing (lines stay exact and
  sharp) and to the real frame with ``cv2.warpAffine`` (bilinear, reflected border) at the
  crop's full resolution, before the area shrink to S: an augmented frame then looks like an
  unaugmented one of a moved face, not a blurrier one (warping after the shrink costs
  ~8 dB PSNR at 256^2 on a sharp image, warping straight to S aliases at 128^2). The four
  candidate images are appearance references and are never warped.
- *photometric*, on the device: :func:`photometric` applies each sample's ``gain`` and
  ``bias`` to its real frame and to its four candidates alike, so the candidates stay
  consistent with the target, and the candidates (3 MB per sample at 512^2) never cross
  from the workers to the main process.
"""

from __future__ import annotations

import math
import multiprocessing
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

import cv2
import h5py
import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from lsp_prep.dataset import schema
from lsp_prep.errors import InputError
from lsp_prep.featuremap import draw_feature_map, face_points2d
from lsp_prep.layout import Layout, load_layout

MIN_IMAGE_SIZE = 32
"""Smallest ``image_size`` the loader produces (a face below 32 px has nothing to learn)."""

SPLITS = ("train", "val")


@dataclass(frozen=True)
class RenderDataConfig:
    """How the renderer's training frames are loaded and augmented."""

    workers: int = 2
    """DataLoader worker processes decoding and drawing (0: in the main process)."""
    augment: bool = True
    """Draw random geometric and photometric augmentation (False: every sample as stored)."""
    scale: float = 0.05
    """Zoom about the crop centre, uniform in [1 - scale, 1 + scale]."""
    shift: float = 0.03
    """Shift per axis, uniform in [-shift, shift], as a fraction of the image side."""
    rotate_deg: float = 2.0
    """In-plane rotation, uniform in [-rotate_deg, rotate_deg] degrees."""
    gain: float = 0.1
    """Photometric gain, uniform in [1 - gain, 1 + gain], on intensities ``(x + 1)`` of
    images ``x`` in [-1, 1] (see :func:`photometric`)."""
    bias: float = 0.05
    """Photometric offset, uniform in [-bias, bias], in [-1, 1] units."""
    prefetch: int = 4
    """Batches each worker prepares ahead (DataLoader ``prefetch_factor``; unused with 0
    workers)."""

    def __post_init__(self) -> None:
        def number(name: str, lo: float, hi: float) -> None:
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int | float) or not lo <= v <= hi:
                raise InputError(
                    f"renderer_data.{name} must be a number in [{lo}, {hi}], got {v!r}"
                )

        for name, lo in (("workers", 0), ("prefetch", 1)):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < lo:
                raise InputError(f"renderer_data.{name} must be an integer >= {lo}, got {v!r}")
        if not isinstance(self.augment, bool):
            raise InputError(f"renderer_data.augment must be true or false, got {self.augment!r}")
        number("scale", 0.0, 0.5)
        number("shift", 0.0, 0.5)
        number("rotate_deg", 0.0, 45.0)
        number("gain", 0.0, 0.99)
        number("bias", 0.0, 1.0)


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


def global_batch(
    frames: np.ndarray, *, seed: int, step: int, batch_size: int, config: RenderDataConfig
) -> list[SampleKey]:
    """The ``batch_size`` samples of training step ``step``: a function of (seed, step) only.

    Frames are drawn uniformly from ``frames``, without repeats within the batch unless the
    batch is larger than ``frames``; the augmentation of each sample uniformly within the
    ranges of ``config`` (identity when ``config.augment`` is False).
    """
    rng = np.random.default_rng([seed, step])
    pick = rng.choice(len(frames), size=batch_size, replace=batch_size > len(frames))
    u = rng.uniform(-1.0, 1.0, size=(batch_size, 6))
    idx = np.asarray(frames)[pick]
    if not config.augment:
        return [SampleKey(int(i)) for i in idx]
    c = config
    return [
        SampleKey(
            frame=int(i),
            zoom=1.0 + c.scale * float(r[0]),
            angle_deg=c.rotate_deg * float(r[1]),
            shift_x=c.shift * float(r[2]),
            shift_y=c.shift * float(r[3]),
            gain=1.0 + c.gain * float(r[4]),
            bias=c.bias * float(r[5]),
        )
        for i, r in zip(idx, u, strict=True)
    ]


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


def _crop_side(f: h5py.File) -> int:
    return int(f.attrs.get("image_size", f["candidates/images"].shape[1]))


def training_frames(path: Path, split: str = "train") -> np.ndarray:
    """Frame indices (int64, ascending) of ``split`` ("train" or "val") that the renderer can
    learn from: landmarks valid (``landmarks/valid``) and the 3D track and camera finite."""
    if split not in SPLITS:
        raise InputError(f"split must be one of {', '.join(SPLITS)}, got {split!r}")
    with schema.open_dataset(path) as f:
        idx = np.asarray(f[f"split/{split}"][:], np.int64)
        ok = np.asarray(f["landmarks/valid"][:], bool).copy()
        for name in ("track/points3d", "track/rotation", "track/translation", "camera/intrinsics"):
            a = f[name][:]
            ok &= np.isfinite(a.reshape(len(a), -1)).all(axis=1)
    return np.sort(idx[ok[idx]])


def load_candidates(path: Path, image_size: int) -> np.ndarray:
    """The dataset's four candidate images (4, S, S, 3) uint8 RGB, area-shrunk when S is below
    the crop side (pixel centres kept, as the frames)."""
    with schema.open_dataset(path) as f:
        side = _crop_side(f)
        check_image_size(image_size, side, str(path))
        images = np.asarray(f["candidates/images"][:], np.uint8)
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
        with schema.open_dataset(self.path) as f:
            self.side = _crop_side(f)
            check_image_size(image_size, self.side, str(self.path))
            pts = f["track/points3d"][:]
            rot, trans = f["track/rotation"][:], f["track/translation"][:]
            k = f["camera/intrinsics"][:]
            self.shoulders = np.asarray(f["shoulders/points2d"][:], np.float64)  # (N, P, 2)
        self.n_frames = len(pts)
        self.image_size = int(image_size)
        self.layout = layout or load_layout()
        finite = np.isfinite(pts).all(axis=(1, 2)) & np.isfinite(rot).all(axis=1)
        finite &= np.isfinite(trans).all(axis=1) & np.isfinite(k).all(axis=(1, 2))
        self.face2d = np.full((self.n_frames, pts.shape[1], 2), np.nan)  # (N, 73, 2) crop px
        if finite.any():
            self.face2d[finite] = face_points2d(pts[finite], rot[finite], trans[finite], k[finite])
        self._file: h5py.File | None = None
        self._pid = -1

    def __len__(self) -> int:
        return self.n_frames

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state["_file"], state["_pid"] = None, -1
        return state

    def _jpegs(self, frames: np.ndarray) -> list[np.ndarray]:
        if self._file is None or self._pid != os.getpid():
            # a handle inherited through fork is dropped, never used or closed here
            self._file = h5py.File(self.path, "r")
            self._pid = os.getpid()
        uniq, inverse = np.unique(frames, return_inverse=True)
        data = self._file["frames"][uniq]  # one read, ascending indices (h5py needs them so)
        return [data[j] for j in inverse]

    def close(self) -> None:
        """Close this process's handle on the file (reopened on the next read)."""
        if self._file is not None and self._pid == os.getpid():
            self._file.close()
        self._file, self._pid = None, -1

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


class StepBatchSampler:
    """Batch sampler: for each step ``start_step .. max_steps - 1``, this rank's rows of
    :func:`global_batch` as a list of :class:`SampleKey`."""

    def __init__(
        self,
        frames: np.ndarray,
        *,
        seed: int,
        start_step: int,
        max_steps: int,
        batch_size: int,
        config: RenderDataConfig,
        rank: int = 0,
        world_size: int = 1,
    ) -> None:
        self.frames = np.asarray(frames, np.int64)
        self.seed, self.start_step, self.max_steps = seed, start_step, max_steps
        self.batch_size, self.config = batch_size, config
        self.rank, self.world_size = rank, world_size

    def __len__(self) -> int:
        return max(0, self.max_steps - self.start_step)

    def __iter__(self) -> Iterator[list[SampleKey]]:
        b = self.batch_size // self.world_size
        for step in range(self.start_step, self.max_steps):
            keys = global_batch(
                self.frames,
                seed=self.seed,
                step=step,
                batch_size=self.batch_size,
                config=self.config,
            )
            yield keys[self.rank * b : (self.rank + 1) * b]


def worker_context() -> multiprocessing.context.BaseContext:
    """How the loader starts its workers: a fork server where there is one, else spawn.

    Not plain ``fork``: a process that has used OpenCV's thread pool (any ``cv2.resize``
    of a large image, e.g. :func:`load_candidates`, or ``prep`` in the same process) leaves
    the pool's condition variable with waiters; a forked child that touches the pool
    (``cv2.setNumThreads`` in the worker, or any parallel cv2 call) then blocks forever in
    ``pthread_cond_destroy``. The fork server is a fresh interpreter that imports this module
    once and never runs cv2, so each worker is forked from a clean process in ~50 ms (the
    server's own start, once per process, takes ~2 s). As with ``spawn``, a script that
    starts training must guard its entry point with ``if __name__ == "__main__":``.
    """
    if "forkserver" in multiprocessing.get_all_start_methods():
        ctx = multiprocessing.get_context("forkserver")
        ctx.set_forkserver_preload([__name__])  # no effect once the server runs
        return ctx
    return multiprocessing.get_context("spawn")


def _worker_init(_worker_id: int) -> None:
    cv2.setNumThreads(1)


def _as_is(batch: Any) -> Any:
    # __getitems__ already returns the collated batch
    return batch


def _check_int(name: str, value: object, lo: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < lo:
        raise InputError(f"{name} must be an integer >= {lo}, got {value!r}")


def renderer_batches(
    path: Path,
    *,
    frames: np.ndarray,
    image_size: int,
    batch_size: int,
    seed: int,
    start_step: int,
    max_steps: int,
    config: RenderDataConfig,
    rank: int = 0,
    world_size: int = 1,
) -> Iterator[dict[str, torch.Tensor]]:
    """One batch per step for steps ``start_step .. max_steps - 1``.

    Each batch: ``feature_map`` (b, S, S) uint8 (lines 255 on 0), ``real`` (b, S, S, 3)
    uint8 RGB, ``gain`` and ``bias`` (b,) float32 for :func:`photometric`, ``frame`` (b,)
    int64, with ``b = batch_size // world_size`` and S = ``image_size``.

    The global batch of step s is :func:`global_batch` (a function of ``(seed, s)``); rank
    ``r`` gets its rows ``[r * b, (r + 1) * b)``. So the batches are the same with any number
    of workers, a run resumed at ``start_step`` gets exactly the batches an uninterrupted run
    had at those steps, and ``world_size`` processes together see a 1-process run's batches.

    Arguments are checked before this returns (InputError): an empty ``frames`` or one
    outside the clip, ``batch_size`` not divisible by ``world_size``, ``image_size`` outside
    ``MIN_IMAGE_SIZE ..`` the crop side, a bad ``rank``, a negative ``seed`` or step.
    """
    frames = np.asarray(frames)
    if frames.ndim != 1 or frames.size == 0:
        raise InputError(
            f"frames must be a non-empty 1-D array of frame indices, got shape {frames.shape} "
            "(did the split have no frame with valid landmarks? see training_frames)"
        )
    if not np.issubdtype(frames.dtype, np.integer):
        raise InputError(f"frames must be integer frame indices, got dtype {frames.dtype}")
    _check_int("batch_size", batch_size, 1)
    _check_int("world_size", world_size, 1)
    _check_int("seed", seed, 0)
    _check_int("start_step", start_step, 0)
    _check_int("max_steps", max_steps, 0)
    if batch_size % world_size:
        raise InputError(
            f"batch_size {batch_size} must be divisible by world_size {world_size} "
            "(the global batch is split evenly between the processes)"
        )
    if not 0 <= rank < world_size:
        raise InputError(f"rank must be in 0 .. {world_size - 1}, got {rank!r}")
    dataset = RendererFrames(path, image_size=image_size)
    if frames.min() < 0 or frames.max() >= dataset.n_frames:
        raise InputError(
            f"frames must lie in 0 .. {dataset.n_frames - 1} ({path} has {dataset.n_frames} "
            f"frames), got {frames.min()} .. {frames.max()}"
        )
    sampler = StepBatchSampler(
        frames,
        seed=seed,
        start_step=start_step,
        max_steps=max_steps,
        batch_size=batch_size,
        config=config,
        rank=rank,
        world_size=world_size,
    )
    workers = config.workers
    loader = DataLoader(
        dataset,
        batch_sampler=sampler,
        collate_fn=_as_is,
        num_workers=workers,
        prefetch_factor=config.prefetch if workers else None,
        persistent_workers=False,
        pin_memory=torch.cuda.is_available(),
        worker_init_fn=_worker_init if workers else None,
        multiprocessing_context=worker_context() if workers else None,
    )
    return _iterate(loader, dataset)


def _iterate(loader: DataLoader, dataset: RendererFrames) -> Iterator[dict[str, torch.Tensor]]:
    it = iter(loader)
    try:
        yield from it
    finally:
        del it  # shuts the workers down now, also when the consumer stops early
        dataset.close()


def photometric(images: torch.Tensor, gain: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
    """Per-sample gain and offset: ``clamp(gain * (x + 1) - 1 + bias, -1, 1)``.

    ``images`` float in [-1, 1], (B, ..., 3, H, W): the real frames (B, 3, H, W) or the
    candidates (B, 4, 3, H, W) (expand a shared (4, 3, H, W) to the batch first); ``gain``
    and ``bias`` (B,). Every image of sample b gets sample b's gain and bias, so applying
    this to the real frame and to the candidates keeps them consistent. ``x + 1`` is the
    intensity (0 black, 2 white): gain scales contrast and brightness about black, bias
    shifts it. Returns a new tensor of ``images``' shape, dtype and device.
    """
    if images.ndim < 4 or images.shape[-3] != 3:
        raise InputError(f"images must be (B, ..., 3, H, W), got {tuple(images.shape)}")
    b = images.shape[0]
    if tuple(gain.shape) != (b,) or tuple(bias.shape) != (b,):
        raise InputError(
            f"gain and bias must be ({b},) for images {tuple(images.shape)}, "
            f"got {tuple(gain.shape)} and {tuple(bias.shape)}"
        )
    view = (b,) + (1,) * (images.ndim - 1)
    g = gain.to(images.device, images.dtype).view(view)
    o = bias.to(images.device, images.dtype).view(view)
    return (images + 1.0).mul_(g).add_(o - 1.0).clamp_(-1.0, 1.0)
