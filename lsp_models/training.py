"""Training as a function over an explicit state; self-describing checkpoints.

Every stage trains the same way: ``batch_fn(step)`` returns the batch of a step (drawn
from a generator seeded by (seed, step), so a resumed run sees exactly the batches an
uninterrupted one would), ``loss_fn(batch)`` returns a named dict of losses whose
``"total"`` is minimised, and :func:`train` runs Adam (0.9, 0.999) with a learning rate
decaying linearly from ``lr`` to ``lr_end``, writes metrics as JSON lines and saves an
atomic checkpoint every ``checkpoint_every`` steps and at the end.
"""

from __future__ import annotations

import dataclasses
import json
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from lsp_prep import __version__
from lsp_prep.errors import CheckpointError, InputError
from lsp_prep.schema import SCHEMA_VERSION

CHECKPOINT_VERSION = 1


@dataclass(frozen=True)
class TrainConfig:
    """Optimisation settings shared by every stage."""

    max_steps: int = 1000
    """Optimisation steps in total (a resumed run continues up to this)."""
    batch_size: int = 16
    lr: float = 1e-4
    """Initial learning rate (Adam, betas 0.9 / 0.999)."""
    lr_end: float = 1e-5
    """Learning rate reached linearly at ``max_steps``."""
    grad_clip: float = 1.0
    """Clip the global gradient norm to this (0 disables)."""
    checkpoint_every: int = 500
    """Save a checkpoint every this many steps (and always at the end)."""
    log_every: int = 10
    """Write a metrics line every this many steps."""
    seed: int = 0
    """Seeds batch sampling and dropout per step."""

    def __post_init__(self) -> None:
        if self.max_steps < 1 or self.batch_size < 1:
            raise InputError("train.max_steps and train.batch_size must be >= 1")
        if not 0 < self.lr_end <= self.lr:
            raise InputError("train needs 0 < lr_end <= lr")
        if self.checkpoint_every < 1 or self.log_every < 1:
            raise InputError("train.checkpoint_every and train.log_every must be >= 1")


@dataclass
class TrainState:
    """Everything that changes while training."""

    model: nn.Module
    optimizer: torch.optim.Optimizer
    step: int = 0
    metrics: dict[str, float] = field(default_factory=dict)


def make_state(model: nn.Module, config: TrainConfig) -> TrainState:
    opt = torch.optim.Adam(model.parameters(), lr=config.lr, betas=(0.9, 0.999))
    return TrainState(model, opt)


def learning_rate(step: int, config: TrainConfig) -> float:
    """Linear decay from ``lr`` at step 0 to ``lr_end`` at ``max_steps``."""
    frac = min(step / max(config.max_steps, 1), 1.0)
    return config.lr + (config.lr_end - config.lr) * frac


def unwrap(model: nn.Module) -> nn.Module:
    """The module inside DistributedDataParallel (or the model itself)."""
    inner = getattr(model, "module", model)
    return inner if isinstance(inner, nn.Module) else model


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


LossFn = Callable[[Any], dict[str, torch.Tensor]]
ProgressFn = Callable[[str, int, "int | None"], None]


def train(
    state: TrainState,
    *,
    batch_fn: Callable[[int], Any],
    loss_fn: LossFn,
    config: TrainConfig,
    log_path: Path,
    checkpoint: Callable[[TrainState], None],
    stage: str = "train",
    progress: ProgressFn | None = None,
) -> TrainState:
    """Run steps ``state.step .. config.max_steps - 1``; return the state after the last."""
    log_path.parent.mkdir(parents=True, exist_ok=True)
    model = state.model
    model.train()
    with open(log_path, "a") as log:
        while state.step < config.max_steps:
            step = state.step
            torch.manual_seed(config.seed * 1_000_003 + step)
            batch = batch_fn(step)
            for group in state.optimizer.param_groups:
                group["lr"] = learning_rate(step, config)
            t0 = time.perf_counter()
            losses = loss_fn(batch)
            total = losses["total"]
            if not torch.isfinite(total):
                raise InputError(f"{stage}: loss became {total.item()} at step {step}")
            state.optimizer.zero_grad(set_to_none=True)
            total.backward()
            if config.grad_clip > 0:
                nn.utils.clip_grad_norm_(model.parameters(), config.grad_clip)
            state.optimizer.step()
            state.step = step + 1
            state.metrics = {k: float(v.detach()) for k, v in losses.items()}
            if state.step % config.log_every == 0 or state.step == config.max_steps:
                record = {
                    "step": state.step,
                    "lr": learning_rate(step, config),
                    "seconds": round(time.perf_counter() - t0, 4),
                    **state.metrics,
                }
                log.write(json.dumps(record) + "\n")
                log.flush()
            if state.step % config.checkpoint_every == 0 or state.step == config.max_steps:
                checkpoint(state)
            if progress is not None:
                progress(stage, state.step, config.max_steps)
    return state
