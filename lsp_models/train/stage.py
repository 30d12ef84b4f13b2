"""What every training stage shares: its result, the run directory's record of the
dataset, and :func:`run_stage` (state, resuming, checkpoints and the loop).

RUN/apc/apc.pt, RUN/mouth/mouth.pt, ... hold each stage's latest checkpoint beside its
``metrics.jsonl`` (one line of named losses per logged step) and ``val.jsonl`` (the
validation metrics measured at each checkpoint, for stages that measure any: mouth,
renderer); RUN/features.pt is the manifold-projection database (the person's
training-split APC features); RUN/run.json names the dataset the models were trained on.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from lsp_models.train.checkpoint import resume_state, save_checkpoint
from lsp_models.train.loop import TrainConfig, TrainState, make_state, train, world
from lsp_prep.progress import ProgressFn


@dataclass(frozen=True)
class StageResult:
    """What a stage produced, for the CLI's summary."""

    stage: str
    checkpoint: Path
    steps: int
    metrics: dict[str, float]
    resumed_from: int


VAL_LOG = "val.jsonl"
"""RUN/<stage>/val.jsonl: one line of validation metrics per checkpoint."""

RUN_INFO = "run.json"
"""RUN/run.json: the dataset the person's models were trained on (read by animate, eval)."""


def record_dataset(run_dir: Path, dataset: Path) -> None:
    """Remember ``dataset`` as the run's dataset (atomic write; rank 0 only)."""
    if world()[0]:
        return
    path = Path(run_dir) / RUN_INFO
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    info = {"dataset": str(Path(dataset).resolve()), "source_sha256": source_sha256(dataset)}
    tmp.write_text(json.dumps(info, indent=2) + "\n")
    os.replace(tmp, path)


def source_sha256(dataset: Path) -> str:
    """The SHA-256 of the video ``dataset`` was prepped from ('' when it records none): the
    person's identity that animate and eval check a --dataset against."""
    from lsp_prep.dataset.reader import DatasetReader

    with DatasetReader(dataset) as ds:
        return str(ds.attrs().get("source_sha256", ""))


def recorded_source(run_dir: Path) -> str:
    """The source hash :func:`record_dataset` wrote for this run ('' for older runs)."""
    path = Path(run_dir) / RUN_INFO
    if not path.is_file():
        return ""
    return str(json.loads(path.read_text()).get("source_sha256", ""))


def recorded_dataset(run_dir: Path) -> Path | None:
    """The dataset :func:`record_dataset` wrote for this run, or None."""
    path = Path(run_dir) / RUN_INFO
    if not path.is_file():
        return None
    return Path(json.loads(path.read_text())["dataset"])


def run_stage(
    stage: str,
    net: torch.nn.Module,
    *,
    run_dir: Path,
    model_config: Any,
    config: TrainConfig,
    batch_fn: Callable[[int], Any],
    loss_fn: Callable[[Any], dict[str, torch.Tensor]],
    extra: dict[str, Any],
    resume: bool,
    progress: ProgressFn | None,
    before_save: Callable[[TrainState], None] | None = None,
    folder: str | None = None,
) -> StageResult:
    """Train ``net`` as stage ``stage``: the state, resuming, checkpoints and the loop. The
    checkpoint is RUN/<folder>/<stage>.pt, ``folder`` defaulting to the stage's name."""
    state = make_state(net, config)
    ckpt_path = Path(run_dir) / (folder or stage) / f"{stage}.pt"
    start = resume_state(state, ckpt_path, stage=stage, resume=resume, model_config=model_config)

    def checkpoint(s: TrainState) -> None:
        if before_save is not None:
            before = dict(s.metrics)
            before_save(s)
            val = {k: v for k, v in s.metrics.items() if before.get(k) != v}
            if val:  # the validation metrics before_save measured, over steps for lsp report
                with open(ckpt_path.parent / VAL_LOG, "a") as log:
                    log.write(json.dumps({"step": s.step, **val}) + "\n")
        save_checkpoint(
            ckpt_path,
            stage=stage,
            state=s,
            model_config=model_config,
            train_config=config,
            extra=extra,
        )

    state = train(
        state,
        batch_fn=batch_fn,
        loss_fn=loss_fn,
        config=config,
        log_path=ckpt_path.parent / "metrics.jsonl",
        checkpoint=checkpoint,
        stage=stage,
        progress=progress,
    )
    return StageResult(stage, ckpt_path, state.step, state.metrics, start)
