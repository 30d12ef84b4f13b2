"""Speed and memory of the renderer's training data loader against its floor.

    python benchmarks/bench_loader.py [--dataset H5] [--size 512 256] [--workers 2] [--batches N]
                                      [--batch-size 8] [--device none|cpu|cuda]

Without --dataset the real pexels talking-head clip (lsp_synth.samples) is prepped into a
temporary folder first (about 20 s). Each row runs in a fresh process with one thread
(``torch.set_num_threads(1)``, ``cv2.setNumThreads(1)``; the loader's workers are
single-threaded too), so its peak memory is its own.

The floor: reading one frame's JPEG from the HDF5 file and decoding it to RGB at the crop's
full resolution, one process: the loader must do at least that per sample. Columns:

- procs: processes doing the per-sample work (the workers, else the main process);
  floor ms is the floor divided by them, ratio is ms/sample over that;
- start s: time to the first batch (fork server and workers starting), not in ms/sample;
- CPU ms main+wk: CPU time per sample spent in the main process and in all workers;
  "idle N cores /s" is the rate that cost allows on N otherwise idle cores (bounded by the
  main process, by the workers and by the cores): the CPUs here are shared with other
  jobs, so the measured samples/s moves with their load and this column does not;
- RSS: peak resident memory (VmHWM) of the main process and of the largest worker.

Loader rows are timed from the first batch with augmentation on (zoom, rotation, shift,
photometric parameters), as in training.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
from rich.console import Console
from rich.table import Table

console = Console(width=None if sys.stdout.isatty() else 150)

TARGET = 200.0
"""Samples per second the loader must reach at 512^2 with 2 workers to feed a GPU."""

CHILD = r"""
import json, os, resource, sys, time
import cv2, h5py, numpy as np, torch
cv2.setNumThreads(1)
torch.set_num_threads(1)
from pathlib import Path
from lsp_models.train import render_data as rd
from lsp_models.train import render_frames as rf

a = json.loads(sys.argv[1])
path, size, batch, n = Path(a["dataset"]), a["size"], a["batch"], a["batches"]
frames = rf.training_frames(path)
config = rd.RenderDataConfig(workers=a["workers"], augment=True)


def workers():
    # the loader's workers: children of the fork server, itself a child of this process
    stat = {}
    for p in os.listdir("/proc"):
        if p.isdigit():
            try:
                stat[int(p)] = open(f"/proc/{p}/stat").read().rsplit(")", 1)[1].split()
            except OSError:
                pass
    return [pid for pid, st in stat.items() if int(stat.get(int(st[1]), [0, 0])[1]) == os.getpid()]


def cpu_s(pids):
    # user + system CPU seconds of this process, and of ``pids`` together
    ru = resource.getrusage(resource.RUSAGE_SELF)
    tick = os.sysconf("SC_CLK_TCK")
    total = 0.0
    for pid in pids:
        try:
            st = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
            total += (int(st[11]) + int(st[12])) / tick
        except OSError:
            pass
    return np.array([ru.ru_utime + ru.ru_stime, total])


def peaks_mb(pids):
    out = []
    for pid in pids:
        try:
            lines = open(f"/proc/{pid}/status").read().splitlines()
            out += [int(l.split()[1]) / 1024 for l in lines if l.startswith("VmHWM")]
        except OSError:
            pass
    return out


res = {"start": 0.0, "workers_mb": []}
t0 = time.perf_counter()
if a["kind"] == "decode":
    rng = np.random.default_rng(0)
    pick = rng.choice(frames, size=n * batch)
    with h5py.File(path, "r") as f:
        ds = f["frames"]
        cv2.imdecode(ds[int(pick[0])], cv2.IMREAD_COLOR_RGB)
        t, c = time.perf_counter(), cpu_s([])
        for i in pick:
            img = cv2.imdecode(ds[int(i)], cv2.IMREAD_COLOR_RGB)
        res["wall"], res["cpu"] = time.perf_counter() - t, (cpu_s([]) - c).tolist()
elif a["kind"] == "inproc":
    data = rf.RendererFrames(path, image_size=size)
    keys = [rd.global_batch(frames, seed=0, step=s, batch_size=batch, config=config)
            for s in range(n + 1)]
    data.__getitems__(keys[0])
    t, c = time.perf_counter(), cpu_s([])
    for k in keys[1:]:
        b = data.__getitems__(k)
    res["wall"], res["cpu"] = time.perf_counter() - t, (cpu_s([]) - c).tolist()
    data.close()
else:
    cand = None
    if a["device"] != "none":
        from lsp_models.nets.generator import renderer_input, to_unit
        dev = torch.device(a["device"])
        cand = torch.from_numpy(rf.load_candidates(path, size)).to(dev)
    it = rd.renderer_batches(path, frames=frames, image_size=size, batch_size=batch, seed=0,
                             start_step=0, max_steps=n + 1, config=config)

    def consume(b):
        if cand is None:
            return int(b["real"][0, 0, 0, 0])
        # what the trainer does with a batch on its device before the networks
        b = {k: v.to(dev, non_blocking=True) for k, v in b.items()}
        cond = renderer_input(b["feature_map"], cand)
        c = rd.photometric(cond[:, 1:].unflatten(1, (4, 3)), b["gain"], b["bias"])
        r = rd.photometric(to_unit(b["real"]), b["gain"], b["bias"])
        return float(c[0, 0, 0, 0, 0] + r[0, 0, 0, 0])  # waits for the device

    consume(next(it))
    res["start"] = time.perf_counter() - t0
    pids = workers()
    t, c = time.perf_counter(), cpu_s(pids)
    for _ in range(n):
        consume(next(it))
    res["wall"], res["cpu"] = time.perf_counter() - t, (cpu_s(pids) - c).tolist()
    res["workers_mb"] = peaks_mb(pids)
    it.close()
# VmHWM, not ru_maxrss: Linux carries ru_maxrss over exec from the parent process
res["main_mb"] = peaks_mb([os.getpid()])[0]
res["samples"] = n * batch
print(json.dumps(res))
"""


def measure(**spec) -> dict:
    proc = subprocess.run(
        [sys.executable, "-c", CHILD, json.dumps(spec)],
        capture_output=True,
        text=True,
        check=False,
    )
    if proc.returncode:
        raise RuntimeError(f"benchmark row {spec} failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def prep_pexels(out: Path) -> Path:
    from lsp_prep.pipeline import prep_video
    from lsp_synth.samples import fetch

    return prep_video(fetch("pexels"), out_dir=out).dataset


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--dataset", type=Path, help="a prepped .h5 (default: prep the pexels clip)")
    ap.add_argument("--size", type=int, nargs="+", default=[512, 256], help="image sizes")
    ap.add_argument("--workers", type=int, default=2, help="most loader workers to try")
    ap.add_argument("--batches", type=int, default=60, help="timed batches per row")
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument(
        "--device",
        default="none",
        help="none: only receive the batches; cpu, cuda: also do the trainer's per-batch work "
        "there (copy, renderer_input, photometric on frame and candidates)",
    )
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        dataset = args.dataset
        if dataset is None:
            console.print("prepping the pexels clip (lsp_synth.samples) ...")
            dataset = prep_pexels(Path(tmp))
        run(dataset, args)


def run(dataset: Path, args: argparse.Namespace) -> None:
    from lsp_models.train.render_frames import training_frames
    from lsp_prep.dataset.reader import DatasetReader

    with DatasetReader(dataset) as ds:
        n_frames, side = ds.shape("frames")[0], ds.crop_side
        sample = ds.jpegs(np.arange(0, n_frames, 10))
        jpeg_kb = sum(len(j) for j in sample) / len(sample)
    n_train = len(training_frames(dataset))
    common = dict(
        dataset=str(dataset), batch=args.batch_size, batches=args.batches, device=args.device
    )
    console.print(
        f"{dataset.name}: {n_frames} frames ({n_train} train), {side}^2 JPEG "
        f"{jpeg_kb / 1024:.0f} KB avg; batch {args.batch_size}, {args.batches} batches per row, "
        f"{os.cpu_count()} CPU cores, device {args.device}"
    )
    floor = measure(kind="decode", size=side, workers=0, **common)
    floor_ms = floor["wall"] / floor["samples"] * 1e3

    cores = os.cpu_count() or 1
    table = Table(
        title=f"renderer data loader on {dataset.name} (augmented, batch {args.batch_size})"
    )
    for col in (
        "row",
        "size",
        "procs",
        "start s",
        "ms/sample",
        "samples/s",
        "floor ms",
        "ratio",
        "CPU ms main+wk",
        f"idle {cores} cores /s",
        "RSS main MB",
        "RSS worker MB",
    ):
        table.add_column(col, justify="left" if col == "row" else "right", no_wrap=col == "row")

    def add(name: str, size: int, workers: int, r: dict) -> tuple[float, float]:
        procs = max(workers, 1)
        ms = r["wall"] / r["samples"] * 1e3
        fl = floor_ms / procs
        main_ms, work_ms = (c / r["samples"] * 1e3 for c in r["cpu"])
        # what the same CPU cost would give on idle cores: each worker, the main process
        # and all processes together on the machine's cores are each a bound
        bounds = [1e3 / max(main_ms, 1e-9), 1e3 * cores / (main_ms + work_ms)]
        if workers:
            bounds.append(1e3 * workers / max(work_ms, 1e-9))
        est = min(bounds)
        wk = max(r["workers_mb"]) if r["workers_mb"] else None
        table.add_row(
            name,
            f"{size}",
            f"{procs}",
            f"{r['start']:.2f}" if r["start"] else "",
            f"{ms:.2f}",
            f"{1e3 / ms:.0f}",
            f"{fl:.2f}",
            f"{ms / fl:.2f}",
            f"{main_ms:.2f} + {work_ms:.2f}",
            f"{est:.0f}",
            f"{r['main_mb']:.0f}",
            "" if wk is None else f"{wk:.0f}",
        )
        return 1e3 / ms, est

    add("floor: read + decode", side, 0, floor)
    rates: dict[tuple[int, int], tuple[float, float]] = {}
    for size in args.size:
        r = measure(kind="inproc", size=size, workers=0, **common)
        add("in process, no loader", size, 0, r)
        for w in range(args.workers + 1):
            r = measure(kind="loader", size=size, workers=w, **common)
            rates[size, w] = add(f"DataLoader, {w} workers", size, w, r)
        table.add_section()
    console.print(table)
    if (512, 2) in rates:
        got, est = rates[512, 2]
        console.print(
            f"target: >= {TARGET:.0f} samples/s at 512^2 with 2 workers -> {got:.0f} samples/s "
            f"measured ({'met' if got >= TARGET else 'NOT met'}), {est:.0f} samples/s from its "
            f"CPU cost on {cores} idle cores; load average at the end "
            f"{os.getloadavg()[0]:.2f} (other processes share these cores)"
        )


if __name__ == "__main__":
    main()
