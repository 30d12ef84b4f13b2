"""The report in a real browser: headless Chromium (Debian's ``chromium`` package) opens the
page from disk, offline, and its screenshot must show the images, not empty boxes.

Skipped where no Chromium is installed (``.ci/run`` installs it when it can).
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import cv2
import numpy as np
import pytest
from test_report import data_uris

from lsp_report.report import report_dataset

WINDOW = (1280, 4200)
"""Screenshot width and height (CSS pixels at scale 1)."""

pytestmark = pytest.mark.slow


def chromium() -> str | None:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        if path := shutil.which(name):
            return path
    return None


def screenshot(page: Path, out: Path) -> np.ndarray:
    """A headless Chromium screenshot (H, W, 3) BGR of ``page`` at :data:`WINDOW`."""
    exe = chromium()
    assert exe is not None
    args = [
        exe,
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--hide-scrollbars",
        "--force-device-scale-factor=1",
        f"--window-size={WINDOW[0]},{WINDOW[1]}",
        f"--screenshot={out}",
        page.resolve().as_uri(),
    ]
    r = subprocess.run(args, capture_output=True, text=True, timeout=120)
    assert out.is_file(), r.stderr[-2000:]
    img = cv2.imread(str(out))
    assert img is not None
    return img


def colourful(img: np.ndarray) -> float:
    """Fraction of pixels with a saturated colour (photos, plot lines; not text or frames)."""
    hsv = cv2.cvtColor(img, cv2.COLOR_BGR2HSV)
    return float(((hsv[..., 1] > 60) & (hsv[..., 2] > 40)).mean())


@pytest.mark.skipif(chromium() is None, reason="no Chromium installed (apt-get install chromium)")
def test_report_renders_its_images_in_chromium(stored_dataset, tmp_path):
    page = tmp_path / "report.html"
    report_dataset(stored_dataset, output=page)
    html = page.read_text()
    assert len(data_uris(html)) == 9
    # the same page with every image left out: what a page whose images fail looks like
    bare = tmp_path / "bare.html"
    bare.write_text(re.sub(r'src="data:image/[^"]+"', 'src=""', html))
    shot = screenshot(page, tmp_path / "shot.png")
    empty = screenshot(bare, tmp_path / "bare.png")
    assert shot.shape == (WINDOW[1], WINDOW[0], 3)
    assert shot.std() > 20, "a blank screenshot"
    # the images are there: colour where the bare page has little, and a different page
    # (measured: 0.21 with the images, 0.03 without: the warnings' and links' colour)
    assert colourful(shot) > 0.1 > 0.05 > colourful(empty), (colourful(shot), colourful(empty))
    assert np.abs(shot.astype(int) - empty.astype(int)).mean() > 10
    # the header (dark band, white title) is at the top, as the style sheet says
    assert shot[:40].mean() < 80


@pytest.fixture(scope="module")
def stored_dataset(tmp_path_factory) -> Path:
    from test_report import WARNINGS, write_stored

    return write_stored(tmp_path_factory.mktemp("browser") / "stored.h5", WARNINGS)
