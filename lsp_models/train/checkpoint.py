"""Self-describing checkpoints: written atomically, read with one version and stage check.

A checkpoint holds the weights of the unwrapped model, its config and the training config
(plain data: :func:`lsp_prep.configtree.from_data` rebuilds them), step, metrics,
optimizer state and the versions that produced it.

Every file of a run (checkpoints, RUN/features.pt) holds only tensors and plain data
(dict, list, tuple, str, int, float, bool, None; a numpy array is stored as
``{"__ndarray__": tensor}`` and given back as the array) and is read with
``torch.load(..., weights_only=True)``: a run directory is what users share, and a file
that needs more than that to load could run code, so it is refused (:func:`safe_load`).
:func:`convert_file` rewrites a file of an older toolkit for a user who trusts its origin.
"""

from __future__ import annotations

import dataclasses
import os
import pickle
from pathlib import Path, PurePath
from typing import Any

import numpy as np
import torch

from lsp_models.train.loop import TrainConfig, TrainState, unwrap
from lsp_prep import __version__, configtree
from lsp_prep.dataset.schema import SCHEMA_VERSION
from lsp_prep.dataset.writer import remove_stale_temporaries
from lsp_prep.errors import CheckpointError, InputError

CHECKPOINT_VERSION = 1

_NDARRAY = "__ndarray__"
"""The key of the one-entry dict that stands for a numpy array in a saved file."""


def to_plain(obj: Any, where: str = "checkpoint") -> Any:
    """``obj`` as what ``weights_only`` loading accepts: containers, str, int, float, bool,
    None and tensors; numpy arrays become ``{"__ndarray__": tensor}`` (dtype and shape kept),
    numpy scalars Python numbers, paths str. TypeError names anything else (``where`` is
    its key path), so a file that cannot be read back safely is never written."""
    if obj is None or isinstance(obj, (str, bool, int, float, torch.Tensor)):
        return obj
    if isinstance(obj, np.ndarray):
        return {_NDARRAY: torch.from_numpy(np.array(obj))}
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, PurePath):
        return str(obj)
    if isinstance(obj, dict):
        return {k: to_plain(v, f"{where}[{k!r}]") for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(to_plain(v, f"{where}[{i}]") for i, v in enumerate(obj))
    raise TypeError(f"{where}: a {type(obj).__name__} cannot be stored in a safe checkpoint")


def from_plain(obj: Any) -> Any:
    """Inverse of :func:`to_plain`: ``{"__ndarray__": tensor}`` back to the numpy array."""
    if isinstance(obj, dict):
        if len(obj) == 1 and isinstance(obj.get(_NDARRAY), torch.Tensor):
            return obj[_NDARRAY].numpy()
        return {k: from_plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(from_plain(v) for v in obj)
    return obj


def save_plain(path: Path, payload: dict) -> Path:
    """Write ``payload`` (:func:`to_plain`) with ``torch.save`` atomically: a temporary name
    beside ``path``, renamed when complete."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    data = to_plain(payload, path.name)
    remove_stale_temporaries(path)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    try:
        torch.save(data, tmp)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


def _unsafe_message(path: Path, fix: str) -> str:
    run = path.parent.parent if path.name != "features.pt" else path.parent
    return (
        f"{path}: holds pickled Python objects beyond tensors and plain data (a file of an "
        f"older toolkit, or one made to run code), refused unread: {fix}, or, only if you "
        f"trust who made this run, convert it with `lsp convert-run {run} --trust`"
    )


def safe_load(path: Path, *, fix: str) -> Any:
    """Read a run file with ``torch.load(weights_only=True)``: tensors and plain data only,
    nothing in the file can run code. CheckpointError when it is missing, damaged, or needs
    more than plain data to load (``fix`` says what rebuilds it, e.g. "retrain with ...")."""
    path = Path(path)
    try:
        data = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        if "weights_only" in str(exc) or "Weights only load failed" in str(exc):
            raise CheckpointError(_unsafe_message(path, fix)) from None
        raise CheckpointError(f"{path}: not a readable checkpoint ({_first_line(exc)})") from None
    except Exception as exc:  # torch raises many types for a damaged file
        raise CheckpointError(f"{path}: not a readable checkpoint ({_first_line(exc)})") from None
    return from_plain(data)


def _first_line(exc: BaseException) -> str:
    lines = str(exc).strip().splitlines()
    return lines[0] if lines else type(exc).__name__


def convert_file(path: Path) -> bool:
    """Rewrite a run file of an older toolkit as plain data (:func:`save_plain`), loading it
    with full unpickling: ONLY for a file whose origin the user trusts (``lsp convert-run
    --trust``). Returns False when the file already loads safely (left untouched)."""
    path = Path(path)
    try:
        try:
            torch.load(path, map_location="cpu", weights_only=True)
            return False
        except pickle.UnpicklingError:
            pass
        data = torch.load(path, map_location="cpu", weights_only=False)  # the user trusts it
    except Exception as exc:  # torch raises many types for a damaged file
        raise CheckpointError(f"{path}: not a readable checkpoint ({_first_line(exc)})") from None
    save_plain(path, data)
    return True


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
    return save_plain(path, payload)


def load_checkpoint(path: Path, *, stage: str) -> dict:
    """Read a checkpoint of ``stage``; CheckpointError when missing, of another stage, or of
    an unknown version."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: no checkpoint: run `lsp train {stage}` first")
    ckpt = safe_load(path, fix=f"retrain with `lsp train {stage}`")
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


LOSS_SECTIONS = ("loss", "vgg")
"""Sections of a model config that weigh losses rather than shape weights (the renderer's):
a resumed run may change them."""


def config_changes(
    stored: Any, wanted: Any, prefix: str = "", ignore: tuple[str, ...] = ()
) -> list[str]:
    """``key: stored -> wanted`` for each leaf of two plain config trees that differs (keys
    of :data:`LOSS_SECTIONS` and ``ignore`` at the top level left out)."""
    if isinstance(stored, dict) and isinstance(wanted, dict):
        out = []
        for key in sorted(set(stored) | set(wanted), key=str):
            if not prefix and key in (*LOSS_SECTIONS, *ignore):
                continue
            name = f"{prefix}.{key}" if prefix else str(key)
            out += config_changes(stored.get(key), wanted.get(key), name)
        return out
    if isinstance(stored, (list, tuple)) and isinstance(wanted, (list, tuple)):
        stored, wanted = list(stored), list(wanted)
    return [] if stored == wanted else [f"{prefix}: {stored!r} -> {wanted!r}"]


DERIVED = ("audio_dim",)
"""Model settings a stage derives from the run (the mouth's and head pose's input width is
the trained APC's): a check against the preset's config, before training, leaves them out."""


def check_resume(
    path: Path, *, stage: str, model_config: Any, ignore: tuple[str, ...] = ()
) -> None:
    """Before any work: CheckpointError when the checkpoint ``path`` (if there is one) was
    trained with another model config than ``model_config`` (a run of preset cpu-small
    resumed with --preset paper), naming what differs and the ways out; top-level keys in
    ``ignore`` are not compared (:data:`DERIVED` when ``model_config`` is the preset's)."""
    path = Path(path)
    if not path.is_file():
        return
    ckpt = load_checkpoint(path, stage=stage)
    wanted = to_plain(dataclasses.asdict(model_config))
    stored = ckpt.get("model_config")
    try:  # a setting added since the checkpoint was written: its default, as loading reads it
        stored = to_plain(dataclasses.asdict(configtree.from_data(type(model_config), stored)))
    except InputError:
        pass  # a setting this version does not know: compared as stored
    changes = config_changes(stored, wanted, ignore=ignore)
    if changes:
        more = f" and {len(changes) - 3} more" if len(changes) > 3 else ""
        raise CheckpointError(
            f"{path}: trained with other {stage} settings than asked "
            f"({'; '.join(changes[:3])}{more}): resume with the run's preset and --set "
            "values, or start over with --no-resume or another --run-dir"
        )


def resume_state(
    state: TrainState, path: Path, *, stage: str, resume: bool, model_config: Any = None
) -> int:
    """Load model, optimizer and step of checkpoint ``path`` into ``state`` when ``resume``
    and it exists; return the step training continues from (0 for a fresh start).
    CheckpointError when it was trained with another ``model_config`` (:func:`check_resume`)
    or its weights do not fit ``state.model``."""
    if not resume or not Path(path).exists():
        return 0
    if model_config is not None:
        check_resume(path, stage=stage, model_config=model_config)
    ckpt = load_checkpoint(path, stage=stage)
    try:
        state.model.load_state_dict(ckpt["model"])
    except RuntimeError as exc:
        raise CheckpointError(
            f"{path}: its weights do not fit the {stage} model asked for "
            f"({_first_line(exc)}): resume with the run's preset, or start over with "
            "--no-resume or another --run-dir"
        ) from None
    state.optimizer.load_state_dict(ckpt["optimizer"])
    state.step = int(ckpt["step"])
    return state.step


def run_files(run_dir: Path) -> list[Path]:
    """The torch files of a run directory: every RUN/<stage>*/*.pt and RUN/features.pt."""
    run_dir = Path(run_dir)
    return sorted(p for p in run_dir.glob("*/*.pt")) + sorted(run_dir.glob("features.pt"))


def convert_run(run_dir: Path) -> list[Path]:
    """Rewrite every torch file of ``run_dir`` that does not load safely as plain data
    (:func:`convert_file`); returns the files rewritten. Loading them runs whatever they
    carry: only for a run whose origin the user trusts."""
    run_dir = Path(run_dir)
    files = run_files(run_dir)
    if not run_dir.is_dir() or not files:
        raise CheckpointError(f"{run_dir}: not a run directory (no RUN/<stage>/*.pt)")
    return [p for p in files if convert_file(p)]
