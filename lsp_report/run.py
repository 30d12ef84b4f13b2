"""The run report: what training did, from the files of a run directory alone (no torch).

* ``RUN/<stage>/metrics.jsonl``: the named losses of every logged step (loss curves);
* ``RUN/<stage>/val.jsonl``: validation metrics at each checkpoint (mouth, renderer);
* ``RUN/renderer/samples/step_*.jpg``: the renderer's sample sheets;
* ``RUN/eval.json``: ``lsp eval``'s results, when it ran;
* ``RUN/run.json``: the dataset, whose report follows the run's on the same page.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np

from lsp_prep.errors import InputError
from lsp_prep.progress import ProgressFn, no_progress
from lsp_report.page import Section, jpeg_bytes_uri, jpeg_uri, png_uri
from lsp_report.plots import COLORS, figure, legend

STAGE_ORDER = ("apc", "mouth", "headpose", "renderer")
"""Stages in training order; other folders with a metrics.jsonl (``lsp train mouth --name
mouth_d0``) follow, sorted."""

NOT_LOSSES = frozenset({"step", "lr", "seconds"})
"""Keys of a metrics.jsonl line that are not loss terms."""

MAX_SHEETS = 4
"""Sample sheets shown: the latest and up to three earlier ones, evenly spaced."""

MAX_SHEET_BYTES = 1_200_000
"""Sheets larger than this are downscaled before inlining."""


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    """The records of a JSON-lines file (empty when it does not exist); a damaged last line
    (an interrupted write) is skipped."""
    if not path.is_file():
        return []
    out = []
    for line in path.read_text().splitlines():
        try:
            out.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return out


def stage_dirs(run_dir: Path) -> list[Path]:
    """Folders of ``run_dir`` holding a metrics.jsonl, in training order."""
    found = {p.parent.name: p.parent for p in run_dir.glob("*/metrics.jsonl")}
    order = [s for s in STAGE_ORDER if s in found] + sorted(set(found) - set(STAGE_ORDER))
    return [found[s] for s in order]


def loss_names(records: list[dict[str, Any]]) -> list[str]:
    """Named loss terms of a stage's records, in first-seen order."""
    names: dict[str, None] = {}
    for r in records:
        for k in r:
            if k not in NOT_LOSSES:
                names[k] = None
    return list(names)


def _last_per_step(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One record per step (the last written: a resumed run may repeat steps), by step."""
    by_step = {int(r["step"]): r for r in records if "step" in r}
    return [by_step[s] for s in sorted(by_step)]


def run_numbers(run_dir: Path) -> dict[str, Any]:
    """Every number of the run report as plain JSON-able data."""
    run_dir = Path(run_dir)
    stages = stage_dirs(run_dir)
    if not stages:
        raise InputError(
            f"{run_dir}: not a training run (no <stage>/metrics.jsonl): "
            "give `lsp report` a run directory of `lsp train` or a dataset .h5"
        )
    out: dict[str, Any] = {"run_dir": str(run_dir), "stages": {}}
    for d in stages:
        recs = _last_per_step(read_jsonl(d / "metrics.jsonl"))
        val = _last_per_step(read_jsonl(d / "val.jsonl"))
        names = loss_names(recs)
        last = recs[-1] if recs else {}
        out["stages"][d.name] = {
            "steps": int(last.get("step", 0)),
            # a record's "seconds" is the compute time of its own step (loop.py)
            "step_seconds_median": float(
                np.median([r["seconds"] for r in recs if "seconds" in r]) if recs else math.nan
            ),
            "losses": names,
            "first": {k: recs[0].get(k) for k in names} if recs else {},
            "last": {k: last.get(k) for k in names},
            "val": val,
            "samples": [p.name for p in sorted((d / "samples").glob("step_*.jpg"))],
        }
    eval_path = run_dir / "eval.json"
    out["eval"] = json.loads(eval_path.read_text()) if eval_path.is_file() else None
    info = run_dir / "run.json"
    out["dataset"] = json.loads(info.read_text()).get("dataset") if info.is_file() else None
    return out


# ----------------------------------------------------------------------------- sections


def run_sections(
    run_dir: Path, numbers: dict[str, Any], *, progress: ProgressFn = no_progress
) -> list[Section]:
    """The run's sections, then its dataset's (when the dataset file is there)."""
    run_dir = Path(run_dir)
    sections = [overview_section(numbers), losses_section(run_dir, numbers)]
    if any(s["val"] for s in numbers["stages"].values()):
        sections.append(val_section(numbers))
    sheets = samples_section(run_dir, numbers)
    if sheets is not None:
        sections.append(sheets)
    if numbers["eval"] is not None:
        sections.append(eval_section(numbers["eval"]))
    dataset = numbers["dataset"]
    if dataset and Path(dataset).is_file():
        from lsp_report.dataset import dataset_numbers, read_dataset
        from lsp_report.dataset_page import dataset_sections

        data = read_dataset(Path(dataset))
        ds = dataset_sections(data, dataset_numbers(data), progress=progress)
        ds[0].title = f"Dataset: {Path(dataset).name}"
        sections += ds
    elif dataset:
        sections[0].text(f"The run's dataset {dataset} is not there: its section is left out.")
    return sections


def overview_section(nb: dict[str, Any]) -> Section:
    s = Section("Run", "run")
    rows = []
    for name, st in nb["stages"].items():
        total = st["last"].get("total")
        first = st["first"].get("total")
        rows.append(
            (
                name,
                st["steps"],
                f"{st['step_seconds_median']:.3g} s"
                if math.isfinite(st["step_seconds_median"])
                else "-",
                first if first is not None else "-",
                total if total is not None else "-",
                ", ".join(st["losses"]),
            )
        )
    s.table(rows, header=("stage", "steps", "time", "first total", "last total", "named terms"))
    if nb["dataset"]:
        s.raw(f'<p>Trained on <a href="#overview">{Path(nb["dataset"]).name}</a> (below).</p>')
    return s


def losses_section(run_dir: Path, nb: dict[str, Any]) -> Section:
    s = Section("Loss curves", "losses")
    stages = list(nb["stages"])
    fig, axes = figure(10, 2.6 * len(stages), nrows=len(stages))
    for ax, name in zip(axes, stages, strict=True):
        recs = _last_per_step(read_jsonl(run_dir / name / "metrics.jsonl"))
        steps = np.array([r["step"] for r in recs], float)
        for k, term in enumerate(nb["stages"][name]["losses"]):
            y = np.array([r.get(term, np.nan) for r in recs], float)
            total = term.endswith("total")  # sums of terms: dashed, so an equal term shows
            color = "#1d2430" if term == "total" else COLORS[k % len(COLORS)]
            ax.plot(steps, y, lw=0.6, alpha=0.3, color=color)
            ax.plot(steps, _smooth(y), lw=1.3, color=color, ls="--" if total else "-", label=term)
        values = [r.get(t) for r in recs for t in nb["stages"][name]["losses"]]
        finite = [v for v in values if isinstance(v, (int, float)) and math.isfinite(v)]
        if finite and min(finite) > 0 and max(finite) / min(finite) > 20:
            ax.set_yscale("log")
        ax.set_title(name)
        ax.set_xlabel("step")
        legend(ax, ncol=5)
    s.image(
        png_uri(fig),
        alt="loss curves",
        caption="Every named loss term of every stage (faint: as logged; bold: moving "
        "average). 'total' is what the optimiser minimised.",
    )
    return s


def _smooth(y: np.ndarray, width: int = 0) -> np.ndarray:
    """Moving average over ``width`` points (about a twentieth of the curve by default)."""
    width = width or max(1, len(y) // 20)
    if width <= 1 or len(y) < 3:
        return y
    kernel = np.ones(width) / width
    pad = np.pad(y, (width // 2, width - 1 - width // 2), mode="edge")
    return np.convolve(pad, kernel, "valid")


def val_section(nb: dict[str, Any]) -> Section:
    s = Section("Validation metrics", "val")
    with_val = {k: v for k, v in nb["stages"].items() if v["val"]}
    fig, axes = figure(10, 2.4 * len(with_val), nrows=len(with_val))
    rows = []
    for ax, (name, st) in zip(axes, with_val.items(), strict=True):
        keys = [k for k in st["val"][-1] if k != "step"]
        steps = [r["step"] for r in st["val"]]
        for k in keys:
            ax.plot(steps, [r.get(k, np.nan) for r in st["val"]], "o-", ms=3, lw=1.2, label=k)
            rows.append((name, k, st["val"][-1].get(k), steps[-1]))
        ax.set_title(name)
        ax.set_xlabel("step")
        legend(ax)
    s.table(rows, header=("stage", "metric", "last value", "at step"))
    s.image(
        png_uri(fig),
        alt="validation metrics",
        caption="Measured on the validation split at every checkpoint: mouth error in mm "
        "beside the predict-the-mean baseline; the renderer's L1 (0-255) and PSNR (dB).",
    )
    return s


def samples_section(run_dir: Path, nb: dict[str, Any]) -> Section | None:
    names = [n for st in nb["stages"].values() for n in st["samples"]]
    if not names:
        return None
    folder = run_dir / "renderer" / "samples"
    paths = sorted(folder.glob("step_*.jpg"))
    if len(paths) > MAX_SHEETS:
        pick = np.linspace(0, len(paths) - 1, MAX_SHEETS).round().astype(int)
        paths = [paths[i] for i in sorted(set(pick.tolist()))]
    s = Section("Renderer samples", "samples")
    for p in reversed(paths):
        step = int(p.stem.split("_")[-1])
        s.image(_sheet_uri(p), alt=p.name, caption=f"step {step}: {p.name}")
    s.text(
        "Each sheet: feature map, generated and real frame, side by side; the newest first.",
        css="muted",
    )
    return s


def _sheet_uri(path: Path) -> str:
    """A sample sheet inlined as it is, or downscaled when it is large."""
    data = path.read_bytes()
    if len(data) <= MAX_SHEET_BYTES:
        return jpeg_bytes_uri(data)
    import cv2

    bgr = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
    scale = math.sqrt(MAX_SHEET_BYTES / len(data))
    size = (max(1, int(bgr.shape[1] * scale)), max(1, int(bgr.shape[0] * scale)))
    small = cv2.resize(bgr, size, interpolation=cv2.INTER_AREA)
    return jpeg_uri(small[..., ::-1])


def flatten(value: Any, prefix: str = "") -> list[tuple[str, Any]]:
    """Nested dicts as (dotted key, leaf) rows; lists of numbers joined."""
    if isinstance(value, dict):
        rows: list[tuple[str, Any]] = []
        for k, v in value.items():
            rows += flatten(v, f"{prefix}.{k}" if prefix else str(k))
        return rows
    if isinstance(value, list) and all(isinstance(v, (int, float)) or v is None for v in value):
        return [(prefix, ", ".join("-" if v is None else f"{v:.4g}" for v in value))]
    return [(prefix, value)]


def eval_section(results: dict[str, Any]) -> Section:
    s = Section("lsp eval", "eval")
    s.text("The results of the latest `lsp eval` of this run (RUN/eval.json).", css="muted")
    s.table(flatten(results), header=("measure", "value"))
    return s
