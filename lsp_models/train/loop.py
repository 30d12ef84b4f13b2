"""Training as a function over an explicit state; self-describing checkpoints.

Every stage trains the same way: ``batch_fn(step)`` returns this process's part of the
batch of a step (drawn from a generator seeded by (seed, step), so a resumed run sees
exactly the batches an uninterrupted one would), ``loss_fn(batch)`` returns a named dict of
losses whose ``"total"`` is minimised, and :func:`train` runs Adam (0.9, 0.999) with a
learning rate decaying linearly from ``lr`` to ``lr_end``, writes metrics as JSON lines and
saves an atomic checkpoint every ``checkpoint_every`` steps and at the end.

Data parallel. Under ``torchrun`` (``WORLD_SIZE`` > 1) the stage joins the process group
(:func:`lsp_models.train.device.join_process_group`: NCCL on GPUs, gloo on CPU) and
:func:`train` wraps the step's objective in
DistributedDataParallel: one forward computes every loss of the step, so the GAN's two
networks are synchronised by one all-reduce as well. Each process takes rows
:func:`rank_slice` of the global batch, so N processes with ``batch_size`` B follow the same
optimisation path as one process with B (up to float summation order).
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import torch
import torch.distributed as dist
from torch import nn

from lsp_prep.errors import InputError
from lsp_prep.progress import ProgressFn


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
    precision: Literal["fp32", "bf16", "fp16"] = "fp32"
    """Autocast dtype of the forward pass: fp32 (none), bf16 (GPU or CPU), fp16 (GPU only,
    with dynamic loss scaling). Weights and optimizer state stay fp32."""

    def __post_init__(self) -> None:
        if self.precision not in ("fp32", "bf16", "fp16"):
            raise InputError(f"train.precision must be fp32, bf16 or fp16, got {self.precision!r}")
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


def world() -> tuple[int, int]:
    """(rank, world size) of this process; (0, 1) outside a process group."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def rank_slice(batch_size: int) -> slice:
    """This process's rows of a global batch of ``batch_size``."""
    rank, size = world()
    if batch_size % size:
        raise InputError(f"train.batch_size {batch_size} must be divisible by the {size} processes")
    per = batch_size // size
    return slice(rank * per, (rank + 1) * per)


class Objective(nn.Module):
    """The trained module and its loss function as one module, so that one ``forward``
    computes a step's losses: what DistributedDataParallel synchronises on."""

    def __init__(self, model: nn.Module, loss_fn: Callable[[Any], dict[str, torch.Tensor]]):
        super().__init__()
        self.model = model
        self.loss_fn = loss_fn

    def forward(self, batch: Any) -> dict[str, torch.Tensor]:
        return self.loss_fn(batch)


def unwrap(model: nn.Module) -> nn.Module:
    """The module inside DistributedDataParallel (or the model itself)."""
    inner = getattr(model, "module", model)
    return inner if isinstance(inner, nn.Module) else model


LossFn = Callable[[Any], dict[str, torch.Tensor]]


def forget_after(log_path: Path, step: int) -> None:
    """Drop the records of steps after ``step`` from the metrics log: a run killed after
    its last checkpoint logged steps that the resumed run computes and logs again."""
    if not log_path.is_file():
        return
    lines = log_path.read_text().splitlines(keepends=True)
    kept = []
    for line in lines:
        try:
            if json.loads(line)["step"] > step:
                continue
        except (ValueError, KeyError, TypeError):
            continue  # a line cut short by the kill
        kept.append(line)
    if kept != lines:
        tmp = log_path.with_name(f".{log_path.name}.tmp{os.getpid()}")
        tmp.write_text("".join(kept))
        os.replace(tmp, log_path)


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
    """Run steps ``state.step .. config.max_steps - 1``; return the state after the last.

    In a process group, only rank 0 writes the log, checkpoints and progress; the metrics
    it writes are averaged over the processes.
    """
    rank, size = world()
    model = state.model
    model.train()
    device = next(model.parameters()).device
    objective: nn.Module = Objective(model, loss_fn)
    if size > 1:
        objective = nn.parallel.DistributedDataParallel(
            objective, device_ids=[device.index] if device.type == "cuda" else None
        )
    if config.precision == "fp16" and device.type != "cuda":
        raise InputError("train.precision fp16 needs a CUDA GPU: use bf16 on CPU")
    autocast_dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(config.precision)
    scaler = torch.amp.GradScaler("cuda", enabled=config.precision == "fp16")
    log = None
    if rank == 0:
        log_path.parent.mkdir(parents=True, exist_ok=True)
        forget_after(log_path, state.step)
        log = open(log_path, "a")  # closed in the finally below
    try:
        while state.step < config.max_steps:
            step = state.step
            torch.manual_seed(config.seed * 1_000_003 + step)
            batch = batch_fn(step)
            for group in state.optimizer.param_groups:
                group["lr"] = learning_rate(step, config)
            t0 = time.perf_counter()
            with torch.autocast(
                device.type,
                dtype=autocast_dtype or torch.float32,
                enabled=autocast_dtype is not None,
            ):
                losses = objective(batch)
            total = losses["total"]
            if not torch.isfinite(total):
                raise InputError(f"{stage}: loss became {total.item()} at step {step}")
            state.optimizer.zero_grad(set_to_none=True)
            scaler.scale(total).backward()
            if config.grad_clip > 0:
                scaler.unscale_(state.optimizer)
                nn.utils.clip_grad_norm_(model.parameters(), config.grad_clip)
            scaler.step(state.optimizer)
            scaler.update()
            state.step = step + 1
            values = torch.stack([v.detach().float() for v in losses.values()])
            if size > 1:
                dist.all_reduce(values)
                values /= size
            state.metrics = dict(zip(losses, values.tolist(), strict=True))
            if rank:
                continue
            if state.step % config.log_every == 0 or state.step == config.max_steps:
                record = {
                    "step": state.step,
                    "lr": learning_rate(step, config),
                    "seconds": round(time.perf_counter() - t0, 4),
                    **state.metrics,
                }
                assert log is not None
                log.write(json.dumps(record) + "\n")
                log.flush()
            if state.step % config.checkpoint_every == 0 or state.step == config.max_steps:
                checkpoint(state)
            if progress is not None:
                progress(stage, state.step, config.max_steps)
    finally:
        if log is not None:
            log.close()
    if size > 1:
        dist.barrier()
    return state
