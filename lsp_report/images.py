"""Image sheets of the dataset report, composed with numpy and OpenCV (photos are inlined as
JPEG, which is a tenth of a PNG's size for them): the contact sheet with landmarks and
feature map, the strip of consecutive crops, labelled rows of images."""

from __future__ import annotations

from typing import TYPE_CHECKING

import cv2
import numpy as np

from lsp_prep.featuremap import draw_feature_map, face_points2d

if TYPE_CHECKING:
    from lsp_report.dataset import DatasetData

TILE = 256
"""Side of a contact-sheet tile (pixels)."""

COLUMNS = 4
"""Tiles per row of the contact sheet."""

MAP_RGB = np.array([80, 220, 255], np.float32)
"""Colour of the feature-map lines drawn over the frames (cyan)."""

LANDMARK_RGB = (255, 70, 70)
"""Colour of the landmark dots."""


def spread_frames(valid: np.ndarray, k: int) -> np.ndarray:
    """Up to ``k`` frame indices spread evenly over the ``valid`` (N,) frames (all frames
    when none is valid), ascending and unique."""
    pool = np.flatnonzero(valid)
    if not len(pool):
        pool = np.arange(len(valid))
    idx = np.linspace(0, len(pool) - 1, min(k, len(pool))).round().astype(int)
    return np.unique(pool[idx])


def strip_start(valid: np.ndarray, k: int) -> int:
    """Start of the run of ``k`` consecutive frames nearest the middle of the clip whose
    frames are all valid (the middle itself when there is none)."""
    n = len(valid)
    if n <= k:
        return 0
    ok = np.convolve(valid.astype(np.int64), np.ones(k, np.int64), "valid") == k
    starts = np.flatnonzero(ok)
    mid = (n - k) // 2
    return int(starts[np.argmin(np.abs(starts - mid))]) if len(starts) else mid


def loudest_window(activity: np.ndarray, window: int) -> int:
    """Start of the ``window``-frame stretch with the most speech energy (sum of activity
    above its median)."""
    n = len(activity)
    if n <= window:
        return 0
    above = np.maximum(activity - np.median(activity), 0)
    sums = np.convolve(above, np.ones(window), "valid")
    return int(np.argmax(sums))


def decode(jpeg: np.ndarray) -> np.ndarray:
    """Stored JPEG bytes -> RGB (H, W, 3) uint8."""
    bgr = cv2.imdecode(np.asarray(jpeg, np.uint8), cv2.IMREAD_COLOR)
    return bgr[..., ::-1]


def label(image: np.ndarray, text: str) -> np.ndarray:
    """``image`` with ``text`` in a dark band at its top-left (in place, returned)."""
    scale = max(0.4, image.shape[1] / 600)
    (w, h), base = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, scale, 1)
    cv2.rectangle(image, (0, 0), (w + 10, h + base + 8), (20, 26, 36), -1)
    cv2.putText(
        image, text, (5, h + 4), cv2.FONT_HERSHEY_SIMPLEX, scale, (255, 255, 255), 1, cv2.LINE_AA
    )
    return image


def overlay_tile(data: DatasetData, i: int, jpeg: np.ndarray, *, side: int = TILE) -> np.ndarray:
    """Frame ``i`` at ``side`` pixels with its feature map (cyan) and landmarks (dots)."""
    rgb = cv2.resize(decode(jpeg), (side, side), interpolation=cv2.INTER_AREA)
    s = side / data.size
    if data.valid[i]:
        face = face_points2d(data.points3d[i], data.rotation[i], data.translation[i], data.K[i])
        sh = np.where(data.shoulders_valid[i][:, None], data.shoulders2d[i], np.nan)
        fmap = draw_feature_map(face * s, sh * s if len(sh) else None, size=side, thickness=1)
        a = (fmap.astype(np.float32) / 255 * 0.85)[..., None]
        rgb = (rgb * (1 - a) + MAP_RGB * a).astype(np.uint8)
        for x, y in data.lsp73[i] * s:
            if np.isfinite(x) and np.isfinite(y):
                cv2.circle(rgb, (round(x), round(y)), 1, LANDMARK_RGB, -1, cv2.LINE_AA)
    else:
        rgb = (rgb * 0.5).astype(np.uint8)
    tag = f"#{i}  {i / data.fps:.1f}s" + ("" if data.valid[i] else "  no landmarks")
    return label(rgb, tag)


def grid(tiles: list[np.ndarray], *, columns: int = COLUMNS, gap: int = 4) -> np.ndarray:
    """Tiles of one size in rows of ``columns`` on a white background."""
    h, w = tiles[0].shape[:2]
    rows = (len(tiles) + columns - 1) // columns
    cols = min(columns, len(tiles))
    out = np.full((rows * h + (rows - 1) * gap, cols * w + (cols - 1) * gap, 3), 255, np.uint8)
    for k, tile in enumerate(tiles):
        r, c = divmod(k, columns)
        out[r * (h + gap) : r * (h + gap) + h, c * (w + gap) : c * (w + gap) + w] = tile
    return out


def contact_sheet(data: DatasetData, frames: np.ndarray, jpegs: list[np.ndarray]) -> np.ndarray:
    """The contact sheet (H, W, 3) of ``frames`` with their overlays."""
    return grid([overlay_tile(data, int(i), j) for i, j in zip(frames, jpegs, strict=True)])


def strip(
    jpegs: list[np.ndarray], frames: np.ndarray, *, fps: float, side: int = 180
) -> np.ndarray:
    """Consecutive crops side by side, each labelled with its frame."""
    tiles = [
        label(cv2.resize(decode(j), (side, side), interpolation=cv2.INTER_AREA), f"#{int(i)}")
        for i, j in zip(frames, jpegs, strict=True)
    ]
    return grid(tiles, columns=len(tiles), gap=2)


def labelled_row(images: list[np.ndarray], labels: list[str], *, side: int) -> np.ndarray:
    """RGB images resized to ``side`` and labelled, in one row."""
    tiles = [
        label(cv2.resize(np.ascontiguousarray(im), (side, side), interpolation=cv2.INTER_AREA), t)
        for im, t in zip(images, labels, strict=True)
    ]
    return grid(tiles, columns=len(tiles))
