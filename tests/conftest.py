"""Shared fixtures, and the rule that splits the suite into two tiers.

Tiers: ``pytest -m "not slow"`` is the fast tier (under a minute on 2 cores); plain
``pytest`` (``make test``, ``.ci/run``) runs everything. A test is ``slow`` when

* its fixture closure contains one of :data:`SLOW_FIXTURES` (a full prep of the real
  clip, a trained run, a rendered clip): :func:`pytest_collection_modifyitems` marks it
  automatically, so a new test on ``single_face_dataset`` is slow without anyone saying so;
* or it calls prep, training beyond a few steps, a clip render or torchrun in its own
  body: those tests say ``@pytest.mark.slow`` (or ``pytestmark``) themselves.

Contract tests that need a dataset but not real media use ``synthetic_dataset``: a small
schema-valid file built by the dataset writer in well under a second.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

os.environ.setdefault("LSP_NO_PROGRESS", "1")

SLOW_FIXTURES = {
    "single_face_dataset": "the real clip through a full prep",
    "trained_run": "every stage trained on the prepped real clip",
    "rendered": "test_track3d: a 5 s 3D head render, then a full prep",
    "small_clip": "test_synth3d: a 3 s 3D head render",
    "full_clip": "test_synth3d: a 3 s 3D head render",
    "talking_clip": "test_shoulders: a 3 s 2D render",
}
"""Fixtures that make every test using them (directly or through another fixture) slow."""


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Mark ``slow`` every test whose fixture closure holds one of :data:`SLOW_FIXTURES`."""
    for item in items:
        closure = getattr(item, "fixturenames", ())
        if any(name in SLOW_FIXTURES for name in closure):
            item.add_marker(pytest.mark.slow)


# ----------------------------------------------------------------------------- media


@pytest.fixture(scope="session")
def media() -> dict[str, Path]:
    """Real test media (cached outside the repo; see lsp_synth.samples)."""
    from lsp_synth.samples import fetch_all

    return fetch_all()


@pytest.fixture(scope="session")
def speech_wav(media) -> Path:
    return media["speech"]


@pytest.fixture(scope="session")
def portrait(media):
    """The astronaut head-and-shoulders photo (lsp_synth.portraits) the renders animate."""
    from lsp_synth.portraits import astronaut_portrait

    return astronaut_portrait()


def ffmpeg(*args: str) -> None:
    from lsp_prep.media import run_ffmpeg

    run_ffmpeg(["-y", *args])


@pytest.fixture(scope="session")
def short_clip(media, tmp_path_factory) -> Path:
    """1.5 s of the real single-face clip, re-encoded: a short real input to prep (read
    only; shared by the tests that kill, repeat or compare preps)."""
    out = tmp_path_factory.mktemp("short_clip") / "clip.mp4"
    ffmpeg("-i", str(media["single_face"]), "-t", "1.5", "-c:v", "libx264", "-c:a", "aac", str(out))
    return out


@pytest.fixture
def cut_clip(tmp_path):
    """cut_clip(src, seconds, **opts) -> a re-encoded excerpt of ``src`` in tmp_path."""

    def cut(
        src: Path,
        seconds: float,
        *,
        name: str = "cut.mp4",
        start: float = 0.0,
        extra: tuple[str, ...] = (),
    ) -> Path:
        out = tmp_path / name
        ffmpeg(
            "-ss",
            str(start),
            "-i",
            str(src),
            "-t",
            str(seconds),
            *extra,
            "-c:v",
            "libx264",
            "-pix_fmt",
            "yuv420p",
            "-c:a",
            "aac",
            str(out),
        )
        return out

    return cut


def git_tracked_media() -> list[str]:
    out = subprocess.run(["git", "ls-files"], capture_output=True, text=True, check=False)
    return [p for p in out.stdout.split() if p.endswith((".mp4", ".wav", ".h5", ".png"))]


# ----------------------------------------------------------------------------- the CLI


@pytest.fixture(scope="session")
def lsp() -> Callable[..., Any]:
    """``lsp("prep", path, "--set", ...)``: run the CLI in-process (typer's CliRunner) and
    return its result (``exit_code``, ``output``); arguments are turned into strings."""
    from typer.testing import CliRunner

    from cli.main import app

    runner = CliRunner()

    def invoke(*args: object) -> Any:
        return runner.invoke(app, [str(a) for a in args])

    return invoke


@pytest.fixture
def one_thread():
    """One torch intra-op thread. The model tests' tensors are small: on a busy 2-core
    machine two threads spend their time waiting on each other (the naive head-pose sampler
    ran 100x slower, the GAN step 7x). Files opt in with
    ``pytestmark = pytest.mark.usefixtures("one_thread")``."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


# ----------------------------------------------------------------------------- datasets

SYNTHETIC_FRAMES = 36
SYNTHETIC_SIZE = 64


def synthetic_content(n: int = SYNTHETIC_FRAMES, size: int = SYNTHETIC_SIZE) -> dict[str, Any]:
    """Keyword arguments of ``write_dataset`` for a small plausible dataset: ``n`` frames of
    a ``size``-pixel crop with a face-like ellipse, a head turning a few degrees, a 220 Hz
    tone as speech, every field in the schema's shape and dtype (seeded, so reproducible)."""
    from lsp_prep.config import PrepConfig
    from lsp_prep.constants import FPS, N_LSP_POINTS, N_MELS, N_MESH_POINTS, SAMPLE_RATE

    rng = np.random.default_rng(0)
    t = np.arange(n) / FPS
    yy, xx = np.mgrid[:size, :size] / size
    face = (((xx - 0.5) / 0.3) ** 2 + ((yy - 0.5) / 0.4) ** 2 < 1)[..., None]
    frames = np.stack([np.where(face, [200, 160, 130], [40, 60, 90 + i]) for i in range(n)])
    angle = np.linspace(0, 2 * np.pi, N_LSP_POINTS, endpoint=False)
    ring = np.stack([0.5 + 0.25 * np.cos(angle), 0.5 + 0.35 * np.sin(angle)], -1) * size
    lsp = ring + rng.normal(0, 0.3, (n, N_LSP_POINTS, 2))
    shape3d = np.concatenate([(ring - size / 2) / size * 12, np.zeros((N_LSP_POINTS, 1))], 1)
    points3d = shape3d + rng.normal(0, 0.05, (n, N_LSP_POINTS, 3))
    side, f_crop = 200.0, 100.0
    k_crop = np.array([[f_crop, 0, size / 2], [0, f_crop, size / 2], [0, 0, 1]])
    n_audio = round(n * SAMPLE_RATE / FPS)
    mouth = np.r_[4:11, 46:64]
    p = 4
    fields = {
        "crop/boxes": np.tile([220.0, 80.0, 220.0 + side, 80.0 + side], (n, 1)),
        "audio/waveform": 0.3 * np.sin(2 * np.pi * 220 * np.arange(n_audio) / SAMPLE_RATE),
        "audio/mel": rng.normal(-4, 1, (2 * n, N_MELS)),
        "landmarks/mesh": rng.uniform(size * 0.2, size * 0.8, (n, N_MESH_POINTS, 3)),
        "landmarks/lsp73": lsp,
        "landmarks/valid": np.ones(n, bool),
        "landmarks/detected": np.ones(n, bool),
        "landmarks/interpolated": np.zeros(n, bool),
        "landmarks/confidence": np.full(n, 0.9),
        "camera/intrinsics": np.tile(k_crop, (n, 1, 1)),
        "camera/intrinsics_original": np.array([[500.0, 0, 320], [0, 500, 180], [0, 0, 1]]),
        "camera/focal_search": np.stack([np.linspace(300, 700, 5), [3, 2, 1, 2, 3]], -1),
        "track/rotation": np.stack([0.05 * np.sin(2 * np.pi * t), 0 * t, 0 * t], -1),
        "track/translation": np.tile([0.0, 0.0, 60.0], (n, 1)),
        "track/points3d": points3d,
        "track/mean_shape": points3d.mean(0),
        "track/mouth_displacement": points3d[:, mouth] - points3d[:, mouth].mean(0),
        "track/reprojection_error": np.full(n, 0.5),
        "track/n_features": np.full(n, 20, np.int64),
        "track/source": np.zeros(n, np.int8),
        "track/misfit": np.full(n, 0.8, np.float32),
        "shoulders/points2d": np.tile([[10.0, 60], [25, 58], [40, 58], [55, 60]], (n, 1, 1)),
        "shoulders/valid": np.ones((n, p), bool),
        "shoulders/billboard3d": rng.normal(0, 5, (p, 3)),
        "candidates/images": frames[:4].astype(np.uint8),
        "candidates/frame_index": np.array([0, 5, 10, 15], np.int64),
        "split/train": np.arange(0, int(n * 0.7), dtype=np.int64),
        "split/val": np.arange(int(n * 0.8), n, dtype=np.int64),
    }
    fields = {k: v.astype(np.float32) if v.dtype == np.float64 else v for k, v in fields.items()}
    attrs = {
        "fps": FPS,
        "sample_rate": SAMPLE_RATE,
        "image_size": size,
        "hop_length": SAMPLE_RATE / (2 * FPS),
        "n_frames": n,
        "source_path": "synthetic.mp4",
        "source_sha256": "0" * 64,
        "audio_sha256": "",
        "lsp_version": "test",
        "config": json.dumps(PrepConfig().to_dict()),
        "source_info": "{}",
    }
    return {
        "frames": frames.astype(np.uint8),
        "fields": fields,
        "attrs": attrs,
        "group_attrs": {"shoulders": {"source": "pose"}},
    }


@pytest.fixture(scope="session")
def synthetic_dataset(tmp_path_factory) -> Path:
    """A small schema-valid dataset written by ``lsp_prep.dataset.writer`` from
    :func:`synthetic_content` (no prep, no real media; shared, treat as read-only)."""
    from lsp_prep.dataset.writer import write_dataset

    out = tmp_path_factory.mktemp("synthetic") / "synthetic.h5"
    return write_dataset(out, **synthetic_content())


@pytest.fixture
def synthetic_copy(synthetic_dataset, tmp_path) -> Path:
    """A private copy of ``synthetic_dataset`` that the test may edit."""
    return Path(shutil.copy(synthetic_dataset, tmp_path / "copy.h5"))


@pytest.fixture(scope="session")
def single_face_dataset(media, tmp_path_factory) -> Path:
    """single_face.mp4 prepped with default settings (shared, treat as read-only)."""
    from lsp_prep.pipeline import prep_video

    out = tmp_path_factory.mktemp("prep_single_face")
    return prep_video(media["single_face"], out_dir=out).dataset


@pytest.fixture(scope="session")
def trained_run(single_face_dataset, tmp_path_factory) -> Path:
    """Every stage of the cpu-small preset trained for a few real steps on the real clip
    (apc, mouth, headpose 20 steps; the renderer 4, with its perceptual loss). Shared by
    the animate and eval tests: copy it before adding to it."""
    import dataclasses
    import warnings

    import torch

    from lsp_models.config import load_preset
    from lsp_models.train.apc import train_apc
    from lsp_models.train.headpose import train_headpose
    from lsp_models.train.mouth import train_mouth
    from lsp_models.train.renderer import train_renderer

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    run = tmp_path_factory.mktemp("trained_run")
    sets = ["renderer_train.max_steps=4", "renderer_data.workers=0", "headpose.window=64"]
    cfg = load_preset("cpu-small", sets)
    short = {"max_steps": 20, "checkpoint_every": 20}
    common = {"run_dir": run, "dataset": single_face_dataset, "device": "cpu"}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # APC on the person's own audio warns
        apc_cfg = dataclasses.replace(cfg.apc_train, **short)
        train_apc(model=cfg.apc, config=apc_cfg, **common)
    mouth_cfg = dataclasses.replace(cfg.mouth_train, **short)
    train_mouth(model=cfg.mouth, config=mouth_cfg, **common)
    headpose_cfg = dataclasses.replace(cfg.headpose_train, **short)
    train_headpose(model=cfg.headpose, config=headpose_cfg, **common)
    train_renderer(model=cfg.renderer, config=cfg.renderer_train, data=cfg.renderer_data, **common)
    torch.set_num_threads(before)
    return run
