"""The image section of ``lsp eval``: the renderer alone, on tracked val feature maps."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from lsp_models.eval.metrics import l1_error, psnr, ssim
from lsp_models.infer.config import AnimateConfig
from lsp_models.infer.loading import Models
from lsp_models.infer.predict import render
from lsp_models.train.render_frames import (
    RendererFrames,
    SampleKey,
    load_candidates,
    training_frames,
)
from lsp_prep.errors import InputError
from lsp_prep.progress import ProgressFn


@dataclass(frozen=True)
class ImageEval:
    """Renders from tracked feature maps vs real val frames at the renderer's size."""

    image_size: int
    frames: int
    """Frames rendered."""
    val_frames: int
    """Valid val frames available (``frames`` of them, evenly strided, were rendered)."""
    step: int
    l1: float
    psnr_db: float
    ssim: float
    per_frame: dict[str, list[float]]
    """``frame`` (dataset index), ``l1``, ``psnr_db``, ``ssim``."""


def eval_image(
    models: Models,
    dataset: Path,
    *,
    step: int,
    max_frames: int | None,
    config: AnimateConfig,
    progress: ProgressFn,
) -> ImageEval:
    size = models.image_size
    frames = training_frames(dataset, "val")
    if len(frames) == 0:
        raise InputError(f"{dataset}: no val frame has valid landmarks and a finite track")
    pick = frames
    if max_frames is not None and max_frames < len(frames):
        pick = frames[np.linspace(0, len(frames) - 1, max_frames).round().astype(int)]
    candidates = torch.from_numpy(load_candidates(dataset, size)).to(models.device)
    reader = RendererFrames(dataset, image_size=size)
    l1s, psnrs, ssims = [], [], []
    progress("render", 0, len(pick))
    try:
        for s in range(0, len(pick), config.render_batch):
            keys = [SampleKey(int(i)) for i in pick[s : s + config.render_batch]]
            batch = reader.__getitems__(keys)  # not augmented
            real = batch["real"].numpy()
            fake = render(models, batch["feature_map"].numpy(), candidates, config=config)
            l1s.append(l1_error(fake, real))
            psnrs.append(psnr(fake, real))
            ssims.append(ssim(fake, real))
            progress("render", s + len(keys), len(pick))
    finally:
        reader.close()
    l1v, pv, sv = (np.concatenate(x) for x in (l1s, psnrs, ssims))
    return ImageEval(
        image_size=size,
        frames=len(pick),
        val_frames=len(frames),
        step=step,
        l1=float(l1v.mean()),
        psnr_db=float(pv.mean()),
        ssim=float(sv.mean()),
        per_frame={
            "frame": [int(i) for i in pick],
            "l1": l1v.tolist(),
            "psnr_db": pv.tolist(),
            "ssim": sv.tolist(),
        },
    )
