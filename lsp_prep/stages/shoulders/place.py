"""Placing points on masks of the first frame: the best texture, the shoulder outline."""

from __future__ import annotations

import cv2
import numpy as np


def pick(
    quality: np.ndarray,
    mask: np.ndarray,
    *,
    k: int,
    min_dist: float,
    least_dist: float,
    floor: float,
) -> np.ndarray:
    """Up to ``k`` (K, 2) pixels of ``mask`` with the highest ``quality`` >= ``floor``, local
    maxima first, each ``min_dist`` from the others (halved while too few, down to
    ``least_dist``)."""
    if k <= 0:
        return np.zeros((0, 2))
    peaks = quality >= cv2.dilate(quality, np.ones((3, 3), np.uint8))
    ys, xs = np.nonzero(mask & peaks & (quality >= floor))
    order = np.argsort(-quality[ys, xs], kind="stable")
    cand = np.stack([xs[order], ys[order]], axis=1).astype(np.float64)
    d = min_dist
    while True:
        chosen: list[np.ndarray] = []
        for c in cand:
            if all(np.hypot(*(c - q)) >= d for q in chosen):
                chosen.append(c)
                if len(chosen) == k:
                    break
        if len(chosen) == k or d <= least_dist:
            return np.array(chosen).reshape(-1, 2)
        d = max(d / 2, least_dist)


def line_points(
    *,
    k: int,
    shoulder: np.ndarray,
    neck: np.ndarray,
    body: np.ndarray | None,
    allowed: np.ndarray,
    top: float,
    taken: np.ndarray,
    min_dist: float,
) -> np.ndarray:
    """``k`` fallback points on one shoulder line (K <= k, 2), from the neck out.

    Columns are sampled from ``neck`` to ``shoulder``. With a body mask (H, W) the point of
    a column is the top of the silhouette below row ``top`` (the shoulder outline, where
    even plain clothing has an edge to track), kept only where ``allowed`` (so a column
    whose silhouette starts at the excluded neck gives nothing); without, the straight
    segment from ``neck`` to ``shoulder``. Points keep ``min_dist / 2`` from ``taken``.
    """
    h, w = allowed.shape
    first = int(np.clip(np.floor(top) + 1, 0, h))
    out: list[np.ndarray] = []
    for f in np.linspace(0.15, 1.0, 4 * k + 4):
        p = neck + f * (shoulder - neck)
        x = int(np.clip(round(p[0]), 0, w - 1))
        if body is not None:
            rows = np.flatnonzero(body[first:, x])
            if len(rows) == 0:
                continue
            y = first + int(rows[0])
        else:
            y = int(np.clip(round(p[1]), 0, h - 1))
        if not allowed[y, x]:
            continue
        p = np.array([x, y], np.float64)
        if all(np.hypot(*(p - q)) >= min_dist / 2 for q in [*taken, *out]):
            out.append(p)
    if len(out) > k:  # spread the k evenly over the candidates found
        out = [out[i] for i in np.linspace(0, len(out) - 1, k).round().astype(int)]
    return np.array(out).reshape(-1, 2)


def clear_around(mask: np.ndarray, points: np.ndarray, *, radius: float) -> np.ndarray:
    """Copy of the (H, W) bool ``mask`` without discs of ``radius`` around (K, 2) points."""
    out = mask.astype(np.uint8)
    for x, y in points:
        cv2.circle(out, (int(round(x)), int(round(y))), int(round(radius)), (0,), -1)
    return out.astype(bool)


def inside_mask(size: tuple[int, int], margin: float) -> np.ndarray:
    """(H, W) bool: pixels at least ``margin`` inside an image of ``size`` (W, H)."""
    w, h = size
    yy, xx = np.mgrid[0:h, 0:w]
    return (xx >= margin) & (yy >= margin) & (xx <= w - 1 - margin) & (yy <= h - 1 - margin)
