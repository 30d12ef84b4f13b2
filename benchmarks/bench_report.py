"""Time and size of ``lsp report`` on a 20 s and a 5-minute dataset, against the targets.

    python benchmarks/bench_report.py [--dataset H5] [--repeat 3]

Without --dataset the real pexels talking-head clip (20 s, lsp_synth.samples) is prepped
into a temporary folder first (about 30 s). The 5-minute dataset is that clip repeated 15
times (every per-frame field tiled, the audio and log-mel too; the frames are the stored
JPEG bytes), written through lsp_prep.dataset.writer so it is schema-valid. Each report
runs in a fresh process (imports included, as a user's `lsp report` would), ``--repeat``
times; the table gives the median and the range.

Targets (issue 14): 20 s dataset in <= 10 s and <= 5 MB; 5 minutes in <= 30 s and <= 10 MB.
"""

from __future__ import annotations

import argparse
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from rich.console import Console
from rich.table import Table

TARGETS = {"20 s": (10.0, 5.0), "5 min": (30.0, 10.0)}
"""Seconds and MB allowed per dataset length."""


def tiled_dataset(src: Path, dst: Path, times: int) -> Path:
    """``src`` repeated ``times`` times in time, as a new valid dataset."""
    from lsp_prep.dataset.reader import DatasetReader
    from lsp_prep.dataset.schema import FIELDS
    from lsp_prep.dataset.writer import write_dataset

    with DatasetReader(src) as r:
        attrs = r.attrs()
        n = int(attrs["n_frames"])
        jpegs = r.jpegs(np.arange(n))
        fields = {}
        for fld in FIELDS:
            if fld.name == "frames":
                continue
            a = r.read(fld.name)
            if fld.shape and fld.shape[0] in ("N", "S", "M"):
                a = np.concatenate([a] * times)
            fields[fld.name] = a
        groups = {g: r.attrs(g) for g in ("camera", "shoulders", "audio")}
    total = n * times
    val_n = len(fields["split/val"])
    fields["split/train"] = np.arange(0, total - val_n - 60, dtype=np.int64)
    fields["split/val"] = np.arange(total - val_n, total, dtype=np.int64)
    attrs["n_frames"] = total
    s = round(total * int(attrs["sample_rate"]) / int(attrs["fps"]))
    wave = fields["audio/waveform"]
    fields["audio/waveform"] = np.pad(wave[:s], (0, max(0, s - len(wave))))
    return write_dataset(dst, frames=jpegs * times, fields=fields, attrs=attrs, group_attrs=groups)


def time_report(dataset: Path, out: Path) -> tuple[float, float, float]:
    """Wall and CPU seconds of ``lsp report`` in a fresh process, and the page's MB. The CPU
    time does not move with other jobs' load on shared cores; the wall time does."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t = time.perf_counter()
    subprocess.run(
        [
            sys.executable,
            "-m",
            "cli.main",
            "report",
            str(dataset),
            "--output",
            str(out),
            "--no-progress",
        ],
        check=True,
        capture_output=True,
    )
    wall = time.perf_counter() - t
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return wall, cpu, out.stat().st_size / 1e6


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dataset", type=Path, help="a ~20 s dataset (default: prep pexels)")
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()
    console = Console()
    with tempfile.TemporaryDirectory() as tmp_dir:
        tmp = Path(tmp_dir)
        short = args.dataset
        if short is None:
            from lsp_prep.pipeline import prep_video
            from lsp_synth.samples import fetch

            console.print("prepping pexels (20 s) ...")
            short = prep_video(fetch("pexels"), out_dir=tmp / "data").dataset
        console.print("writing the 5-minute dataset ...")
        long = tiled_dataset(short, tmp / "long.h5", 15)
        table = Table(title="lsp report (fresh process each run)", title_justify="left")
        cols = (
            "dataset",
            "frames",
            "wall s (median, range)",
            "CPU s",
            "target s",
            "MB",
            "target MB",
        )
        for col in cols:
            table.add_column(col, justify="left" if col == "dataset" else "right")
        for label, path in (("20 s", short), ("5 min", long)):
            runs = [time_report(path, tmp / f"{label}.html") for _ in range(args.repeat)]
            secs = np.array([r[0] for r in runs])
            cpu = np.array([r[1] for r in runs])
            mb = runs[-1][2]
            import h5py

            with h5py.File(path) as f:
                n = int(f.attrs["n_frames"])
            t_max, mb_max = TARGETS[label]
            table.add_row(
                label,
                str(n),
                f"{np.median(secs):.1f} ({secs.min():.1f}-{secs.max():.1f})",
                f"{np.median(cpu):.1f}",
                f"{t_max:g}",
                f"{mb:.2f}",
                f"{mb_max:g}",
            )
        console.print(table)


if __name__ == "__main__":
    main()
