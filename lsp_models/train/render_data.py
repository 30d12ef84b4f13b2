"""The renderer's training batches: which frames, which augmentation, and the loader.

The samples themselves (reading, decoding, drawing, warping) are
:mod:`lsp_models.train.render_frames`, run in the loader's workers.

Randomness lives in the main process only. The global batch of step ``s`` -- which frames,
and each sample's augmentation -- is drawn from ``np.random.default_rng([seed, s])``
(:func:`global_batch`), so it does not depend on the number of workers, on where a run was
resumed, or on how many processes share the batch under DistributedDataParallel (rank
``r`` of ``w`` takes rows ``[r * b, (r + 1) * b)``, ``b = batch_size // w``). Workers only
read, decode, draw and warp.

Augmentation, one draw per sample:

- *geometric*, in the workers (:class:`lsp_models.train.render_frames.RendererFrames`): one
  similarity (zoom, in-plane rotation, shift) on the feature map's points and the real frame
  at the crop's full resolution; the four candidate images are never warped.
- *photometric*, on the device: :func:`photometric` applies each sample's ``gain`` and
  ``bias`` to its real frame and to its four candidates alike, so the candidates stay
  consistent with the target, and the candidates (3 MB per sample at 512^2) never cross
  from the workers to the main process.
"""

from __future__ import annotations

import multiprocessing
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import torch
from torch.utils.data import DataLoader

from lsp_models.train.render_frames import RendererFrames, SampleKey
from lsp_prep.errors import InputError


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
