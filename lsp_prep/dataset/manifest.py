"""The output directory's manifest: one row per clip, written with pandas."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

MANIFEST_NAME = "manifest.csv"
COLUMNS = [
    "clip",
    "path",
    "frames",
    "duration_s",
    "valid_fraction",
    "detected_fraction",
    "source_sha256",
    "dataset_sha256",
]


@dataclass
class PrepResult:
    """What one ``prep`` produced, for the CLI's summary and the manifest (one row)."""

    dataset: Path
    n_frames: int
    duration_s: float
    valid_fraction: float
    detected_fraction: float
    interpolated_frames: int
    source_sha256: str
    dataset_sha256: str
    reused: bool = False
    warnings: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    """Damaged files found and recomputed (a stage cache, the dataset itself), one line each."""
    timings: dict[str, float] = field(default_factory=dict)


def read_manifest(out_dir: Path) -> pd.DataFrame:
    """The manifest of ``out_dir`` (an empty frame with the columns if there is none)."""
    path = Path(out_dir) / MANIFEST_NAME
    if not path.exists():
        return pd.DataFrame(columns=COLUMNS)
    return pd.read_csv(path)


def update_manifest(out_dir: Path, result: PrepResult) -> Path:
    """Insert or replace the row of ``result``'s clip; the file is replaced atomically."""
    out_dir = Path(out_dir)
    row = {
        "clip": result.dataset.stem,
        "path": result.dataset.name,
        "frames": result.n_frames,
        "duration_s": round(result.duration_s, 4),
        "valid_fraction": round(result.valid_fraction, 4),
        "detected_fraction": round(result.detected_fraction, 4),
        "source_sha256": result.source_sha256,
        "dataset_sha256": result.dataset_sha256,
    }
    df = read_manifest(out_dir)
    df = df[df["clip"] != row["clip"]]
    df = pd.concat([df, pd.DataFrame([row])], ignore_index=True) if len(df) else pd.DataFrame([row])
    df = df.sort_values("clip")[COLUMNS]
    path = out_dir / MANIFEST_NAME
    tmp = path.with_name(f".{MANIFEST_NAME}.tmp{os.getpid()}")
    df.to_csv(tmp, index=False)
    os.replace(tmp, path)
    return path
