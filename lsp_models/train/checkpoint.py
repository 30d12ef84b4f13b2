"""Self-describing checkpoints: written atomically, read with one version and stage check.

A checkpoint holds the weights of the unwrapped model, its config and the training config
(plain data: :func:`lsp_prep.configtree.from_data` rebuilds them), step, metrics,
optimizer state and the versions that produced it.
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path
from typing import Any

import torch

from lsp_models.train.loop import TrainConfig, TrainState, unwrap
from lsp_prep import __version__
from lsp_prep.dataset.schema import SCHEMA_VERSION
from lsp_prep.errors import CheckpointError

CHECKPOINT_VERSION = 1


def save_checkpoint(
    path: Path,
    *,
    stage: str,
    state: TrainState,
    model_config: Any,
    train_config: TrainConfig,
    extra: dict | None = None,
) -> Path:
    """Write a checkpoint atomically: weights of the unwrapped model, both configs, step,
    metrics, optimizer state and the versions that produced it."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    payload = {
        "checkpoint_version": CHECKPOINT_VERSION,
        "stage": stage,
        "lsp_version": __version__,
        "schema_version": SCHEMA_VERSION,
        "model_class": type(unwrap(state.model)).__name__,
        "model_config": dataclasses.asdict(model_config),
        "train_config": dataclasses.asdict(train_config),
        "step": state.step,
        "metrics": state.metrics,
        "model": unwrap(state.model).state_dict(),
        "optimizer": state.optimizer.state_dict(),
        "extra": extra or {},
    }
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    torch.save(payload, tmp)
    os.replace(tmp, path)
    return path


def load_checkpoint(path: Path, *, stage: str) -> dict:
    """Read a checkpoint of ``stage``; CheckpointError when missing, of another stage, or of
    an unknown version."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: no checkpoint: run `lsp train {stage}` first")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as exc:  # torch raises many types for a damaged file
        raise CheckpointError(f"{path}: not a readable checkpoint ({exc})") from None
    if not isinstance(ckpt, dict) or "checkpoint_version" not in ckpt:
        raise CheckpointError(f"{path}: not an LSP checkpoint")
    if ckpt["checkpoint_version"] != CHECKPOINT_VERSION:
        raise CheckpointError(
            f"{path}: checkpoint version {ckpt['checkpoint_version']}, this toolkit reads "
            f"{CHECKPOINT_VERSION}: retrain with `lsp train {stage}`"
        )
    if ckpt["stage"] != stage:
        raise CheckpointError(
            f"{path}: a checkpoint of stage {ckpt['stage']!r}, expected {stage!r}"
        )
    return ckpt


def resume_state(state: TrainState, path: Path, *, stage: str, resume: bool) -> int:
    """Load model, optimizer and step of checkpoint ``path`` into ``state`` when ``resume``
    and it exists; return the step training continues from (0 for a fresh start)."""
    if not resume or not Path(path).exists():
        return 0
    ckpt = load_checkpoint(path, stage=stage)
    state.model.load_state_dict(ckpt["model"])
    state.optimizer.load_state_dict(ckpt["optimizer"])
    state.step = int(ckpt["step"])
    return state.step
