"""``lsp report``: the dataset and run pages (self-contained, every section, the numbers of
--json equal to the file's) on small synthetic datasets and a run directory written here."""

from __future__ import annotations

import base64
import json
import re
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
from conftest import synthetic_content

from lsp_prep.dataset.writer import write_dataset
from lsp_report.advice import DEFAULT, advise
from lsp_report.report import report_dataset, report_run

DATASET_SECTIONS = (
    "Overview",
    "Warnings",
    "Frames, landmarks and feature map",
    "Head pose",
    "Focal length",
    "Shoulders",
    "Audio-visual sync",
    "Candidate images",
    "Split and landmark coverage",
)

WARNINGS = [
    "clip.mp4: the speech comes 117 ms (7.0 frames at 60 FPS) after the lips (sync "
    "confidence 7.5): re-run prep with --set ingest.av_offset_ms=117",
    "clip.mp4: focal length not identified: the head turns only 4 degrees; used 615 px",
]


def data_uris(page: str) -> list[tuple[str, bytes]]:
    """(kind, decoded bytes) of every inlined image of the page."""
    return [
        (kind, base64.b64decode(b64))
        for kind, b64 in re.findall(r'src="data:image/(png|jpeg);base64,([^"]+)"', page)
    ]


def decoded(data: bytes) -> np.ndarray:
    img = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
    assert img is not None, "an inlined image does not decode"
    return img


def write_stored(path: Path, warnings: list[str]) -> Path:
    """600 synthetic frames (10 s) with the sync attributes and ``warnings`` prep stores."""
    content = synthetic_content(n=600)
    lags = np.arange(-30, 31) * 1000 / 60
    content["group_attrs"]["audio"] = {
        "av_offset_ms": 116.7,
        "av_offset_frames": 7.0,
        "av_confidence": 7.5,
        "av_correlation": 0.61,
        "av_reliable": True,
        "av_applied_offset_ms": 0.0,
        "av_lags_ms": lags.astype(np.float32),
        "av_curve": np.exp(-(((lags - 116.7) / 60) ** 2)).astype(np.float32),
    }
    content["attrs"]["warnings"] = json.dumps(warnings)
    return write_dataset(path, **content)


@pytest.fixture(scope="module")
def stored_dataset(tmp_path_factory) -> Path:
    return write_stored(tmp_path_factory.mktemp("report") / "stored.h5", WARNINGS)


@pytest.mark.slow
def test_dataset_page_is_self_contained_with_every_section(synthetic_dataset, tmp_path):
    out = tmp_path / "r.html"
    result = report_dataset(synthetic_dataset, output=out)
    page = out.read_text()
    assert result.output == out and result.sections == list(DATASET_SECTIONS)
    for title in DATASET_SECTIONS:
        assert f"<h2>{title}</h2>" in page
    # readable offline: nothing is fetched from anywhere
    assert not re.search(r'(src|href)="(https?:)?//', page)
    assert "<script" not in page
    images = data_uris(page)
    assert len(images) == 9  # 3 in Frames, one per other section with a figure
    for kind, data in images:
        img = decoded(data)
        assert img.shape[0] > 100 and img.shape[1] > 200
        assert img.std() > 5, f"a blank {kind} image"
    assert out.stat().st_size < 5e6
    # files written before the sync check and the stored warnings: measured here / said so
    assert result.numbers["sync"]["stored"] is False
    assert "predates the stored sync check" in page
    assert "written before prep stored its warnings" in page
    assert not list(tmp_path.glob(".*tmp*"))  # written atomically


def test_numbers_are_the_files(synthetic_dataset):
    nb = report_dataset(synthetic_dataset, output=None).numbers
    content = synthetic_content()
    f = content["fields"]
    assert nb["frames"] == 36 and nb["duration_s"] == pytest.approx(36 / 60)
    assert nb["split"] == {"train": [0, 24], "val": [28, 35], "n_train": 25, "n_val": 8}
    assert nb["candidates"]["frame_index"] == [0, 5, 10, 15]
    assert nb["camera"]["focal_px"] == 500.0
    assert nb["camera"]["horizontal_fov_deg"] == pytest.approx(2 * np.degrees(np.arctan(0.64)))
    assert nb["misfit_px"]["median"] == pytest.approx(0.8)
    assert nb["shoulders"]["points"] == 4 and nb["shoulders"]["valid_fraction"] == 1.0
    assert nb["landmarks"]["valid_fraction"] == 1.0
    pitch = np.degrees(f["track/rotation"][:, 0])
    assert nb["pose"]["euler_p95_deg"]["pitch"] == pytest.approx(np.percentile(pitch, 95), 1e-4)
    assert nb["sync"]["reliable"] is False and np.isnan(nb["sync"]["offset_ms"])  # 0.6 s: too short
    assert nb["warnings"] is None


@pytest.mark.slow
def test_stored_sync_and_warnings_with_advice(stored_dataset, tmp_path):
    out = tmp_path / "r.html"
    result = report_dataset(stored_dataset, output=out)
    page = out.read_text()
    nb = result.numbers
    assert nb["sync"]["stored"] and nb["sync"]["offset_ms"] == pytest.approx(116.7)
    assert nb["sync"]["reliable"] and nb["sync"]["confidence"] == pytest.approx(7.5)
    assert [w["warning"] for w in nb["warnings"]] == WARNINGS
    assert "ingest.av_offset_ms value the warning gives" in nb["warnings"][0]["advice"]
    assert "turning the head" in nb["warnings"][1]["advice"]
    assert "What to do: re-run prep with the --set ingest.av_offset_ms" in page
    assert "+117 ms" in page


@pytest.mark.parametrize(
    ("warning", "expect"),
    [
        ("x: the speech does not follow the lips (sync confidence 1.2, under 4)", "--audio"),
        ("x: the speech track is nearly silent (peak -60 dBFS)", "--audio"),
        ("x: no room on the upper body for 2 of 8 shoulder points", "crop.scale"),
        ("x: something nobody foresaw", DEFAULT),
    ],
)
def test_advice(warning, expect):
    assert expect in advise(warning)


# ----------------------------------------------------------------------------- runs


def write_run(run_dir: Path, dataset: Path | None) -> Path:
    """A run directory as `lsp train` leaves one: losses, val metrics, sheets, eval."""
    rng = np.random.default_rng(0)
    terms = {
        "apc": ["l1", "total"],
        "mouth": ["l2", "total"],
        "headpose": ["nll", "total"],
        "renderer": ["gan/g", "l1", "vgg", "fm", "gan/d_real", "gan/d_fake", "total"],
    }
    for stage, names in terms.items():
        d = run_dir / stage
        d.mkdir(parents=True)
        lines = [
            json.dumps(
                {"step": s, "lr": 1e-3, "seconds": s * 0.1}
                | {k: float(np.exp(-s / 30) + 0.05 * rng.random()) for k in names}
            )
            for s in range(1, 101)
        ]
        (d / "metrics.jsonl").write_text("\n".join(lines) + "\n{broken")
    val = [{"step": s, "val_mm": 3.0 - s / 100, "baseline_mm": 3.2} for s in (50, 100)]
    (run_dir / "mouth" / "val.jsonl").write_text("".join(json.dumps(v) + "\n" for v in val))
    sheets = run_dir / "renderer" / "samples"
    sheets.mkdir()
    for step in (50, 100):
        img = rng.integers(0, 255, (128, 384, 3), dtype=np.uint8)
        cv2.imwrite(str(sheets / f"step_{step:07d}.jpg"), img)
    (run_dir / "eval.json").write_text(json.dumps({"mouth": {"mouth": {"val_mm": 2.1}}}))
    if dataset is not None:
        (run_dir / "run.json").write_text(json.dumps({"dataset": str(dataset)}))
    return run_dir


@pytest.mark.slow
def test_run_page(synthetic_dataset, tmp_path):
    run = write_run(tmp_path / "run", synthetic_dataset)
    out = tmp_path / "run.html"
    result = report_run(run, output=out)
    page = out.read_text()
    nb = result.numbers
    assert list(nb["stages"]) == ["apc", "mouth", "headpose", "renderer"]
    assert nb["stages"]["renderer"]["steps"] == 100  # the broken last line is skipped
    assert nb["stages"]["renderer"]["losses"][:3] == ["gan/g", "l1", "vgg"]
    assert nb["stages"]["mouth"]["val"][-1]["val_mm"] == pytest.approx(2.0)
    assert result.sections[:5] == [
        "Run",
        "Loss curves",
        "Validation metrics",
        "Renderer samples",
        "lsp eval",
    ]
    assert "Dataset: synthetic.h5" in result.sections  # the dataset's section follows
    assert "mouth.mouth.val_mm" in page and 'href="#overview"' in page
    sheets = [d for k, d in data_uris(page) if decoded(d).shape[:2] == (128, 384)]
    assert len(sheets) == 2


@pytest.mark.slow
def test_run_without_its_dataset(tmp_path):
    run = write_run(tmp_path / "run", tmp_path / "gone.h5")
    result = report_run(run, output=tmp_path / "r.html")
    expect = ["Run", "Loss curves", "Validation metrics", "Renderer samples", "lsp eval"]
    assert result.sections == expect
    assert "is not there" in (tmp_path / "r.html").read_text()


# ----------------------------------------------------------------------------- the CLI


def test_cli_json(lsp, synthetic_copy):
    r = lsp("report", synthetic_copy, "--json")
    assert r.exit_code == 0, r.output
    nb = json.loads(r.stdout)
    assert nb["frames"] == 36 and nb["sync"]["offset_ms"] is None  # NaN -> null
    assert not synthetic_copy.with_suffix(".html").exists()  # --json alone writes no page


@pytest.mark.slow
def test_cli_default_output(lsp, synthetic_copy):
    r = lsp("report", synthetic_copy, "--no-progress")
    assert r.exit_code == 0, r.output
    assert synthetic_copy.with_suffix(".html").is_file()
    assert "open it in a browser" in r.output


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda p: p / "missing.h5", "no such dataset file or run directory"),
        (lambda p: p, "not a training run"),
        (lambda p: p / "x.h5" if (p / "x.h5").write_text("nope") else p, "not a readable HDF5"),
    ],
)
def test_cli_refuses_with_one_line(lsp, tmp_path, make, message):
    r = lsp("report", make(tmp_path), "--no-progress")
    assert r.exit_code == 1
    assert message in " ".join(r.output.split())


@pytest.mark.slow
def test_dataset_report_imports_no_torch(synthetic_dataset, tmp_path):
    code = (
        "import sys; from lsp_report.report import report_dataset; "
        f"report_dataset({str(synthetic_dataset)!r}, output={str(tmp_path / 'r.html')!r}); "
        "assert 'torch' not in sys.modules, 'torch imported'"
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr[-2000:]
